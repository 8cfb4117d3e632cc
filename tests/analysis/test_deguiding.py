"""analysis.deguiding: the expected weight ESS against Monte Carlo with scipy's vMF, the gate's
natural parameter, the guard's verdicts and the two-estimate test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import vonmises_fisher

from analysis.cones import mean_cone
from analysis.deguiding import compare_means, gate_natural_parameter, guard, log_expected_w2
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import fibonacci_sphere, normalize, rotate_towards

M = normalize(np.array([0.2, 0.9, -0.3]))


def away(angle_deg: float) -> np.ndarray:
    return rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.radians(angle_deg))


@pytest.mark.parametrize("kappa_p, kappa_q, angle", [(20.0, 28.0, 0.0), (5.0, 8.0, 20.0),
                                                     (10.0, 10.0, 25.0)])
def test_expected_w2_matches_quadrature_and_monte_carlo(kappa_p, kappa_q, angle):
    """E_q[w²] = ∫ p²/q: by quadrature on an even grid of the sphere (exact up to the grid) and
    by Monte Carlo from scipy's sampler (noisier: w² is heavy-tailed under q)."""
    p, q = vonmises_fisher(M, kappa_p), vonmises_fisher(away(angle), kappa_q)
    closed = log_expected_w2(kappa_p * M, kappa_q * away(angle))
    grid = fibonacci_sphere(200_000)
    quad = np.mean(np.exp(2 * p.logpdf(grid) - q.logpdf(grid))) * 4 * np.pi
    assert np.log(quad) == pytest.approx(closed, abs=1e-4)
    x = q.rvs(400_000, random_state=1)
    assert np.log(np.mean(np.exp(2 * (p.logpdf(x) - q.logpdf(x))))) == pytest.approx(closed,
                                                                                     abs=0.2)


def test_worked_examples_of_the_guard():
    """Category kappa 20 (d = 3): a gate with pull 15 on the category keeps ~45% of the states;
    a gate of kappa 200 (gamma 1), aligned or 40 deg off, keeps none (the issue's cases)."""
    eta_p = 20.0 * M
    mild = guard(eta_p + 15.0 * M, M, 15.0)  # eta_g = M (kappa 1), gamma 15: pull 15
    assert mild.ess_fraction == pytest.approx(0.45, abs=0.02) and not mild.unreliable
    assert mild.words() == ""
    for angle in (0.0, 40.0):
        eta_g = 200.0 * away(angle)
        g = guard(eta_p + eta_g, eta_g, 1.0)
        assert g.kappa_category == pytest.approx(20.0) and g.pull == pytest.approx(200.0)
        assert g.unreliable and g.ess_fraction < 1e-100
        assert "(γ·κ_gate = 200) is stronger than the category (κ ≈ 20)" in g.words()
    # a weak gate far off the category: the pull is weaker, the offset is what hurts
    off = guard(eta_p + 15.0 * away(90.0), away(90.0), 15.0)
    assert off.unreliable and off.gate_offset_deg == pytest.approx(90.0)
    assert "sits 90° from the category" in off.words()


def test_gate_natural_parameter_of_a_vmf_gate_is_exact():
    gate = VMFMixture.single(away(30.0), 12.0)
    x = vonmises_fisher(M, 5.0).rvs(300, random_state=2)
    eta, r2 = gate_natural_parameter(x, gate.logpdf(x))
    np.testing.assert_allclose(eta, 12.0 * away(30.0), atol=1e-9)
    assert r2 == pytest.approx(1.0)
    mix = VMFMixture(np.array([M, away(60.0)]), np.array([10.0, 10.0]), np.array([0.5, 0.5]))
    assert gate_natural_parameter(x, mix.logpdf(x))[1] < 0.999  # a local summary only


def test_compare_means_holds_its_level_and_sees_a_real_difference():
    rng = np.random.default_rng(3)
    false_alarms = 0
    for _ in range(200):
        a = vonmises_fisher(M, 20.0).rvs(300, random_state=rng)
        b = vonmises_fisher(M, 20.0).rvs(100, random_state=rng)
        res = compare_means(mean_cone(a, np.arange(300) // 15), mean_cone(b, np.arange(100) // 20),
                            alpha=0.05)
        false_alarms += res.disagree
    assert false_alarms <= 20  # about 5% at most (conservative reference distribution)
    a = vonmises_fisher(M, 20.0).rvs(300, random_state=rng)
    b = vonmises_fisher(away(10.0), 20.0).rvs(100, random_state=rng)
    res = compare_means(mean_cone(a, np.arange(300) // 15), mean_cone(b, np.arange(100) // 10))
    assert res.disagree and res.angle_deg == pytest.approx(10.0, abs=3.0)
