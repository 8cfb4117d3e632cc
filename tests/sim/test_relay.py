"""Shared chains passed from person to person (mcmcp.sim.relay), against independent references:
the latent agent's choice rule, scipy's vMF, and the population's average category."""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp, vonmises_fisher

from mcmcp.agents import LatentAgent
from mcmcp.sampling import sphere
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sim.relay import PeopleAgent, individual_prototypes, simulate_relay, summarise_relay

MU = np.array([0.0, 0.0, 1.0])


def test_people_answer_like_latent_agents_with_their_own_category():
    rng = np.random.default_rng(0)
    means = individual_prototypes(MU, 10.0, 5, rng)
    people = PeopleAgent(means, 25.0, lapse=0.1)
    left, right = sphere.sample_uniform(5, 3, rng), sphere.sample_uniform(5, 3, rng)
    for p in range(5):
        one = LatentAgent({"happy": VMFMixture.single(means[p], 25.0)}, lapse=0.1)
        np.testing.assert_allclose(
            people.prob_right(np.array([p]), left[[p]], right[[p]]),
            one.prob_right("happy", left[[p]], right[[p]]), rtol=1e-12)


def test_prototypes_scatter_around_the_group_mean_as_a_vmf():
    x = individual_prototypes(MU, 30.0, 4000, np.random.default_rng(1))
    ref = vonmises_fisher(MU, 30.0).rvs(4000, random_state=np.random.default_rng(2))
    assert ks_2samp(x @ MU, ref @ MU).pvalue > 0.01


def people(rounds: int, kappa_between: float, rng) -> np.ndarray:
    """(rounds, 8, 3): a new person, scattered around MU, for every hold of 8 chains."""
    return individual_prototypes(MU, kappa_between, rounds * 8, rng).reshape(rounds, 8, 3)


def thinned_projection(relay, every=25) -> np.ndarray:
    """mu . x of the post-burn-in states of every chain, every `every`-th step (nearly
    independent draws), (m,)."""
    half = len(relay.states) // 2
    return (relay.states[half::every] @ MU).ravel()


def test_a_relay_of_identical_people_samples_their_category():
    """kappa_between = inf: every holder has the group's category vMF(mu, 30); the relay is an
    ordinary MCMCP chain and samples it (two-sample test against scipy's draws)."""
    rng = np.random.default_rng(3)
    relay = simulate_relay(sphere.fibonacci_sphere(8, 3), people(300, np.inf, rng), 10, 30.0, rng)
    ref = vonmises_fisher(MU, 30.0).rvs(2000, random_state=np.random.default_rng(4)) @ MU
    assert ks_2samp(thinned_projection(relay), ref).pvalue > 0.01
    # the same test rejects a relay of people who differ (kappa_between 10): it can fail
    wide = simulate_relay(sphere.fibonacci_sphere(8, 3), people(300, 10.0, rng), 10, 30.0, rng)
    assert ks_2samp(thinned_projection(wide), ref).pvalue < 1e-6


def test_a_relay_of_people_who_differ_samples_about_their_average_category():
    """kappa_between 10, kappa_person 30, ten trials per hold: the chains' prototype is the
    group mean of the holders' prototypes (within 2 degrees) and their spread is the
    population's average category's (within 20%), three times wider than one person's."""
    rng = np.random.default_rng(5)
    relay = simulate_relay(sphere.fibonacci_sphere(8, 3), people(300, 10.0, rng), 10, 30.0, rng)
    s = summarise_relay(relay, 30.0, rng)
    assert s.prototype_error_deg < 2.0
    assert abs(s.chain_kappa / s.mixture_kappa - 1) < 0.2, s
    assert s.chain_kappa < s.individual_kappa / 2.5
