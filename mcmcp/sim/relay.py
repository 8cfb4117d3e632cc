"""Shared chains passed from person to person, vectorised: what an across-participant chain
samples when people differ (the methods page's measurement, the planner's model).

A relay runs n chains of one emotion in rounds: in every round each chain is held by a
simulated person, who gives it `per_hold` trials and leaves. Person j's category is
vMF(mu_j, kappa_person), and the people's prototypes mu_j are scattered around the group mean:
mu_j ~ vMF(group_mean, kappa_between) (`individual_prototypes`). The trials run through the same
simulator as every simulated chain (`mcmcp.sim.chains.simulate_chains` and
`simulate_gsp_chains`: chain.propose / step, gsp.step), answered by `PeopleAgent`, whose Luce
rule scores each chain's pair with its holder's category. Pure: arrays in, arrays out, every
draw from the Generator passed in.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mcmcp.agents import LuceAgent
from mcmcp.sampling import sphere
from mcmcp.sim.chains import simulate_chains, simulate_gsp_chains


def individual_prototypes(group_mean: np.ndarray, kappa_between: float, n: int,
                          rng: np.random.Generator) -> np.ndarray:
    """n people's prototypes (n, d): vMF(group_mean, kappa_between) draws (unit vectors);
    kappa_between = inf gives everyone the group mean."""
    mean = np.broadcast_to(np.asarray(group_mean, dtype=float), (n, len(group_mean)))
    if np.isinf(kappa_between):
        return mean.copy()
    return sphere.sample_vmf(mean, kappa_between, rng)


class PeopleAgent(LuceAgent):
    """Many synthetic people at once: row i of a batch is answered by person `emotion[i]`
    (an int index into `means` (P, d)), whose category is vMF(means[p], kappa) on the sphere.
    Lapses, side bias and response times are the Luce agent's (`mcmcp.agents.LuceAgent`)."""

    name = "people"

    def __init__(self, means: np.ndarray, kappa: float, **luce) -> None:
        super().__init__(**luce)
        self.means, self.kappa = np.asarray(means, dtype=float), float(kappa)

    def log_preference(self, emotion: np.ndarray, x: np.ndarray,
                       identity: object = None) -> np.ndarray:
        """kappa * mu_p . x (n,), the log vMF density up to a constant, for person p = emotion
        (n,) ints and codes x (n, d)."""
        return self.kappa * np.einsum("nd,nd->n", self.means[np.asarray(emotion)], x)


class Relay(NamedTuple):
    """A relay's chains: states (T + 1, n, d), the start and the state after each of the
    T = rounds * per_hold steps (MCMCP: each a shown trial; no gate); holders (rounds, n, d),
    the prototype of the person who held chain i in round r."""

    states: np.ndarray
    holders: np.ndarray


def simulate_relay(start: np.ndarray, holders: np.ndarray, per_hold: int, kappa_person: float,
                   rng: np.random.Generator, kappa_proposal: float = 5.0, lapse: float = 0.0,
                   paradigm: str = "mcmcp", points: int = 32) -> Relay:
    """Run n = len(start) chains from `start` (n, d) for R rounds of `per_hold` trials; in
    round r chain i is held by the person whose prototype is holders[r, i] (holders (R, n, d),
    e.g. `individual_prototypes` draws: a new person every hold), with category
    vMF(prototype, kappa_person) and lapse rate `lapse`. paradigm mcmcp (two faces, vMF
    proposals of `kappa_proposal`) or gsp (a slider of `points` points). Unguided."""
    n = len(start)
    states = [start[None]]
    position = start
    for people in holders:
        agent = PeopleAgent(people, kappa_person, lapse=lapse)
        if paradigm == "gsp":
            trace, _ = simulate_gsp_chains(position, per_hold, points, agent, np.arange(n),
                                           None, rng)
        else:
            trace = simulate_chains(position, per_hold, kappa_proposal, agent, np.arange(n),
                                    None, rng)
        states.append(np.concatenate([trace.current[1:], trace.final.position[None]]))
        position = trace.final.position
    return Relay(np.concatenate(states), np.asarray(holders))


class RelaySummary(NamedTuple):
    """What a relay's chains sample, after burn-in. Angles in degrees, kappas concentrations.

    prototype_error_deg: the chains' mean direction vs the mean direction of the prototypes of
    the people who held them (the group mean of individual prototypes); chain_kappa: the vMF
    concentration fitted to the chains' states; individual_kappa: one person's category
    (kappa_person); mixture_kappa: fitted to draws of the population's average category
    (a person drawn at random, then a draw from their category); consensus_kappa: kappa_person
    times the mean resultant length of the people's prototypes, the spread of the product of
    the people's categories (what a chain follows when every trial has a new person, to
    first order in the step size)."""

    prototype_error_deg: float
    chain_kappa: float
    individual_kappa: float
    mixture_kappa: float
    consensus_kappa: float


def summarise_relay(relay: Relay, kappa_person: float, rng: np.random.Generator,
                    burn_in: float = 0.5) -> RelaySummary:
    """The relay's prototype and spread against the people who moved it (see RelaySummary);
    `burn_in`: the fraction of steps discarded. rng draws the population's average category."""
    from scipy.stats import vonmises_fisher

    t0 = int(burn_in * (len(relay.states) - 1)) + 1
    x = relay.states[t0:].reshape(-1, relay.states.shape[-1])
    people = relay.holders.reshape(-1, relay.holders.shape[-1])
    group = sphere.spherical_mean(people)
    chain_mean, chain_kappa = vonmises_fisher.fit(x)
    mixture = sphere.sample_vmf(people[rng.integers(len(people), size=20_000)],
                                kappa_person, rng)
    return RelaySummary(
        prototype_error_deg=float(np.degrees(sphere.geodesic(chain_mean, group))),
        chain_kappa=float(chain_kappa),
        individual_kappa=float(kappa_person),
        mixture_kappa=float(vonmises_fisher.fit(mixture)[1]),
        consensus_kappa=float(kappa_person * sphere.mean_resultant_length(people)),
    )
