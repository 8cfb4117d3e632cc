"""analysis.responders: the choice-dependence test flags random responders (guided or not) and
not attentive ones, and its p-values are uniform under the null."""

from __future__ import annotations

import numpy as np
from scipy.stats import kstest, vonmises_fisher

from analysis.responders import choice_dependence, min_trials, quadratic_features
from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate
from mcmcp.sampling.sphere import fibonacci_sphere, normalize, sample_uniform, spherical_mean
from mcmcp.sim.chains import simulate_chains

M = normalize(np.array([0.3, -0.5, 0.8]))


def test_two_mode_log_densities_are_in_the_span_of_the_features():
    """A Watson density (modes at +-M) and a vMF: log p differences are exact linear
    combinations of the feature differences."""
    x = sample_uniform(50, 3, np.random.default_rng(0))
    z = quadratic_features(x)
    design = np.column_stack([np.ones(50), z])
    for logp in (7.0 * (x @ M) ** 2, 3.0 * x @ M):
        coef, res, *_ = np.linalg.lstsq(design, logp, rcond=None)
        np.testing.assert_allclose(design @ coef, logp, atol=1e-10)


def test_p_values_are_about_uniform_for_random_choices():
    """Under the null the Bonferroni p-value is at least uniform (conservative): P(p < a) <= a."""
    rng = np.random.default_rng(1)
    p = []
    for _ in range(150):
        cur = sample_uniform(300, 3, rng)
        prop = vonmises_fisher(M, 1.0).rvs(300, random_state=rng)
        p.append(choice_dependence(cur, prop, rng.random(300) < 0.4, M).p_value)
    p = np.array(p)
    assert kstest(p, "uniform", alternative="greater").pvalue > 1e-3
    assert np.mean(p < 0.1) <= 0.1 + 3 * np.sqrt(0.09 / len(p))


def flag_rate(kappa, exponent, gate, reps=40, seed=0):
    rng = np.random.default_rng(seed)
    starts = np.concatenate([fibonacci_sphere(4) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
                             for _ in range(reps)])
    agent = LatentAgent({"sad": VMFMixture.single(M, kappa)}, exponent=exponent)
    trace = simulate_chains(starts, 100, 5.0, agent, "sad", gate, rng)
    flags = 0
    for r in range(reps):
        cols = slice(4 * r, 4 * r + 4)
        shown = trace.shown[:, cols] & trace.active[:, cols]
        centre = spherical_mean(trace.current[:, cols][shown])
        flags += choice_dependence(trace.current[:, cols][shown], trace.proposal[:, cols][shown],
                                   trace.chose_proposal[:, cols][shown], centre).random
    return flags / reps


def test_random_responders_are_flagged_and_attentive_broad_categories_are_not():
    """4 chains x 100 trials. A person pressing keys at random (Luce exponent 0) is flagged,
    with or without a gate pulling the chains to a sad face; attentive people with a broad
    category (kappa 5) are not."""
    gate = Gate(VMFMixture.single(M, 20.0), 0.5)
    assert flag_rate(20.0, 0.0, gate) >= 0.9 and flag_rate(20.0, 0.0, None) >= 0.9
    assert flag_rate(5.0, 1.0, gate) <= 0.05 and flag_rate(5.0, 1.0, None) == 0.0


def test_pairs_too_alike_are_inconclusive_not_random():
    """Under a narrow gate (kappa 200, gamma 1) on the category, every pair shows nearly the same
    face: an attentive person's answers look random, and the test says it cannot tell."""
    rng = np.random.default_rng(4)
    agent = LatentAgent({"sad": VMFMixture.single(M, 20.0)})
    trace = simulate_chains(np.tile(M, (4, 1)), 250, 5.0, agent, "sad",
                            Gate(VMFMixture.single(M, 200.0), 1.0), rng)
    shown = trace.shown & trace.active
    dep = choice_dependence(trace.current[shown], trace.proposal[shown],
                            trace.chose_proposal[shown], M)
    assert dep.power < 0.8 and not dep.random
    assert dep.inconclusive or dep.p_value < 0.01


def test_too_few_trials_get_no_p_value():
    """Below 10 trials per coefficient there is no p-value (a separated fit gave a lab demo's 16
    trials p = 0.0009)."""
    rng = np.random.default_rng(2)
    n = min_trials(3) - 1
    cur, prop = sample_uniform(n, 3, rng), sample_uniform(n, 3, rng)
    few = choice_dependence(cur, prop, rng.random(n) < 0.5, M)
    assert np.isnan(few.p_value) and not few.random and not few.inconclusive
    n = min_trials(3)
    cur, prop = sample_uniform(n, 3, rng), sample_uniform(n, 3, rng)
    assert np.isfinite(choice_dependence(cur, prop, rng.random(n) < 0.5, M).p_value)
