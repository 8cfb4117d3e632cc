"""analysis.cones.mcse_cone: the calibrated cone of one participant's chains, against the closed
form for independent draws and against the truth of simulated participants at 4 x 100 trials."""

from __future__ import annotations

import numpy as np
from scipy.special import ive
from scipy.stats import binomtest, special_ortho_group, vonmises_fisher

from analysis.cones import batch_units, inside, mcse_cone, mean_cone
from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import fibonacci_sphere, normalize
from mcmcp.sim.chains import simulate_chains

M = normalize(np.array([0.3, -0.5, 0.8]))


def kept(trace, chains: range) -> tuple[np.ndarray, np.ndarray]:
    """The states after the burn-in (the second half of every chain, unguided), chain by chain,
    and their chain labels."""
    half = len(trace.current) // 2
    parts = [np.concatenate([trace.current[half + 1:, i], trace.final.position[i][None]])
             for i in chains]
    return np.concatenate(parts), np.repeat(np.arange(len(parts)), [len(p) for p in parts])


def test_independent_draws_give_the_closed_form_variance():
    """n iid vMF(kappa) draws on S^2 as 4 chains: each tangent coordinate of the mean direction
    has variance 1 / (n kappa A(kappa)), A = I_{3/2} / I_{1/2} (Mardia & Jupp 2000, 10.4)."""
    kappa, n = 10.0, 8000
    x = vonmises_fisher(M, kappa).rvs(n, random_state=0)
    cone = mcse_cone(x, np.repeat(np.arange(4), n // 4))
    a = ive(1.5, kappa) / ive(0.5, kappa)
    np.testing.assert_allclose(np.diag(cone.cov), 1 / (n * kappa * a), rtol=0.15)
    assert 0.8 * n < cone.n_units < 1.2 * n  # independent draws: the ESS is the count


def test_weights_enter_like_importance_sampling():
    """Draws from vMF(q, 15) weighted by p/q estimate the mean direction of p = vMF(M, 15); the
    cone covers it about 95% of the time."""
    rng = np.random.default_rng(1)
    q = normalize(M + np.array([0.2, 0.0, 0.0]))
    hits = 0
    for _ in range(300):
        y = vonmises_fisher(q, 15.0).rvs(400, random_state=rng)
        hits += inside(mcse_cone(y, np.repeat(np.arange(4), 100), np.exp(15.0 * y @ (M - q))), M)
    ci = binomtest(hits, 300).proportion_ci(0.95)
    assert ci.low < 0.97 and ci.high > 0.93, hits / 300


def participants(kappa: float, n_shown: int, reps: int, seed: int):
    rng = np.random.default_rng(seed)
    starts = np.concatenate([fibonacci_sphere(4) @ special_ortho_group.rvs(3, random_state=rng).T
                             for _ in range(reps)])
    trace = simulate_chains(starts, n_shown, 5.0, LatentAgent({"sad": VMFMixture.single(M, kappa)}),
                            "sad", None, rng)
    return [kept(trace, range(4 * r, 4 * r + 4)) for r in range(reps)]


def test_narrow_category_at_four_chains_of_100_trials_is_covered():
    """The lab's design (4 x 100 trials) with a narrow category (kappa 200): the chains move
    rarely, so a few dozen kept states per chain are worth a handful of independent ones. The
    cone covers the truth 93-97% of the time; batch means (5 per chain, the previous cone)
    covered about 75%."""
    data = participants(200.0, 100, 300, 5)
    hits = sum(inside(mcse_cone(x, c), M) for x, c in data)
    ci = binomtest(hits, len(data)).proportion_ci(0.95)
    assert ci.low < 0.97 and ci.high > 0.93, hits / len(data)
    old = sum(inside(mean_cone(x, batch_units(c)), M) for x, c in data)
    assert old / len(data) < 0.85  # what the report printed before


def test_a_chain_too_short_gives_no_cone():
    x = vonmises_fisher(M, 10.0).rvs(11, random_state=0)
    assert np.isnan(mcse_cone(x, np.repeat([0, 1, 2], [4, 4, 3])).cone_deg)
