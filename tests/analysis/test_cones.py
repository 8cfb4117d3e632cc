"""analysis.cones: the batch-means cone against the closed-form variance of a vMF mean direction
and its coverage of the truth (independent draws and real chains)."""

from __future__ import annotations

import numpy as np
from scipy.special import ive
from scipy.stats import binomtest, vonmises_fisher

from analysis.cones import batch_units, inside, mean_cone
from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import fibonacci_sphere, normalize
from mcmcp.sim.chains import simulate_chains

M = normalize(np.array([0.3, -0.5, 0.8]))


def test_batch_units_are_contiguous_runs_of_each_chain():
    chain = np.repeat([0, 1, 2], [10, 7, 3])
    units = batch_units(chain, 5)
    assert len(np.unique(units)) == 5 + 5 + 3
    for c in range(3):
        u = units[chain == c]
        assert (np.diff(u) >= 0).all() and not set(u) & set(units[chain != c])


def test_covariance_matches_the_closed_form():
    """n iid vMF(kappa) draws on S^2: each tangent coordinate of the mean direction has variance
    1 / (n kappa A(kappa)), A = I_{3/2} / I_{1/2} (Mardia & Jupp 2000, 10.4)."""
    kappa, n = 10.0, 20000
    x = vonmises_fisher(M, kappa).rvs(n, random_state=0)
    cone = mean_cone(x, np.arange(n) // 20)  # 1000 units of 20 draws
    a = ive(1.5, kappa) / ive(0.5, kappa)
    np.testing.assert_allclose(np.linalg.eigvalsh(cone.cov), 1 / (n * kappa * a), rtol=0.15)


def assert_covers_about_95(hits: int, n: int) -> None:
    """The binomial 95% interval of the coverage meets [0.93, 0.975]: nominal, or a little
    conservative (the cone is the ellipse's largest semi-axis)."""
    ci = binomtest(hits, n).proportion_ci(0.95)
    assert ci.low < 0.975 and ci.high > 0.93, hits / n


def test_coverage_of_independent_draws_weighted_and_not():
    rng = np.random.default_rng(1)
    hits, weighted_hits, reps = 0, 0, 400
    q = normalize(M + np.array([0.2, 0.0, 0.0]))
    for _ in range(reps):
        x = vonmises_fisher(M, 15.0).rvs(200, random_state=rng)
        hits += inside(mean_cone(x, np.arange(200) // 10), M)
        # importance sampling from vMF(q, 15) back to vMF(M, 15): w = p / q
        y = vonmises_fisher(q, 15.0).rvs(400, random_state=rng)
        w = np.exp(15.0 * y @ (M - q))
        weighted_hits += inside(mean_cone(y, np.arange(400) // 20, w), M)
    assert_covers_about_95(hits, reps)
    assert_covers_about_95(weighted_hits, reps)


def test_chains_cover_where_the_chain_bootstrap_does_not():
    """4 chains x 250 trials of one participant (kappa_proposal 5, category kappa 20): the
    batch-means cone covers the truth about 95% of the time."""
    reps, C = 150, 4
    rng = np.random.default_rng(2)
    starts = np.concatenate([fibonacci_sphere(C) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
                             for _ in range(reps)])
    trace = simulate_chains(starts, 250, 5.0, LatentAgent({"sad": VMFMixture.single(M, 20.0)}),
                            "sad", None, rng)
    kept = trace.current[125:]
    hits = 0
    for r in range(reps):
        x = kept[:, r * C:(r + 1) * C].transpose(1, 0, 2).reshape(-1, 3)  # chain by chain
        hits += inside(mean_cone(x, batch_units(np.repeat(np.arange(C), len(kept)))), M)
    assert_covers_about_95(hits, reps)
