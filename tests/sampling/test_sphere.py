"""mcmcp.sampling.sphere against scipy.stats.vonmises_fisher and closed forms."""

import numpy as np
import pytest
from scipy.stats import ks_2samp, vonmises_fisher

from mcmcp.sampling.sphere import (
    fibonacci_sphere,
    geodesic,
    log_vmf_normaliser,
    mean_resultant_length,
    normalize,
    rotate_towards,
    rotation_between,
    sample_uniform,
    sample_vmf,
    spherical_mean,
    to_lonlat,
    vmf_logpdf,
)

KAPPAS = (0.01, 1.0, 10.0, 100.0, 1e4)
N = 3000
P_MIN = 1e-3  # fixed seeds: a true mismatch gives p ~ 0 at these sample sizes


def _basis(mu):
    """Orthonormal basis (d-1, d) of the tangent space at mu."""
    q, _ = np.linalg.qr(np.column_stack([mu, np.eye(len(mu))]))
    return q[:, 1:].T


def _tangent_angle(x, mu):
    """For d >= 3 the azimuth of x around mu in a fixed tangent basis; for d = 2 the side."""
    e = _basis(mu)
    t = x @ e.T
    if len(mu) == 2:
        return np.sign(t[:, 0])
    return np.arctan2(t[:, 1], t[:, 0])


@pytest.mark.parametrize("d", [2, 3, 5])
@pytest.mark.parametrize("kappa", KAPPAS)
def test_sample_vmf_matches_scipy(d, kappa):
    rng = np.random.default_rng(int(kappa * 100) + d)
    mu = normalize(rng.standard_normal(d))
    ours = sample_vmf(np.tile(mu, (N, 1)), kappa, rng)
    ref = vonmises_fisher(mu, kappa).rvs(N, random_state=rng)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0)
    # 1 - w is compared for large kappa, where w itself is ~1 - 1e-4 everywhere
    assert ks_2samp(1.0 - ours @ mu, 1.0 - ref @ mu).pvalue > P_MIN
    a, b = _tangent_angle(ours, mu), _tangent_angle(ref, mu)
    if d == 2:
        assert abs(np.mean(a > 0) - np.mean(b > 0)) < 0.05
    else:
        assert ks_2samp(a, b).pvalue > P_MIN


def test_sample_vmf_per_row_kappa_and_means():
    rng = np.random.default_rng(0)
    mus = sample_uniform(4000, 3, rng)
    kappa = np.where(np.arange(4000) % 2 == 0, 5.0, 500.0)
    x = sample_vmf(mus, kappa, rng)
    w = np.sum(x * mus, axis=1)
    ref5 = vonmises_fisher([0, 0, 1.0], 5.0).rvs(2000, random_state=1)[:, 2]
    ref500 = vonmises_fisher([0, 0, 1.0], 500.0).rvs(2000, random_state=2)[:, 2]
    assert ks_2samp(w[0::2], ref5).pvalue > P_MIN
    assert ks_2samp(1 - w[1::2], 1 - ref500).pvalue > P_MIN


@pytest.mark.parametrize("d", [2, 3, 5])
@pytest.mark.parametrize("kappa", KAPPAS)
def test_logpdf_matches_scipy(d, kappa):
    rng = np.random.default_rng(d)
    mu = normalize(rng.standard_normal(d))
    x = sample_uniform(50, d, rng)
    ref = vonmises_fisher(mu, kappa).logpdf(x)
    np.testing.assert_allclose(vmf_logpdf(x, mu, kappa), ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_normaliser_at_zero_is_uniform(d):
    from scipy.special import gammaln

    log_area = np.log(2.0) + (d / 2) * np.log(np.pi) - gammaln(d / 2)
    assert log_vmf_normaliser(0.0, d) == pytest.approx(-log_area)
    # continuity from kappa -> 0
    assert log_vmf_normaliser(1e-6, d) == pytest.approx(-log_area, abs=1e-5)


def test_geodesic_matches_arccos_and_is_accurate_at_extremes():
    rng = np.random.default_rng(3)
    a, b = sample_uniform(200, 3, rng), sample_uniform(200, 3, rng)
    np.testing.assert_allclose(geodesic(a, b), np.arccos(np.clip(np.sum(a * b, 1), -1, 1)),
                               atol=1e-7)
    e = np.array([1.0, 0, 0])
    tiny = rotate_towards(e, np.array([0, 1.0, 0]), 1e-9)
    assert geodesic(e, tiny) == pytest.approx(1e-9, rel=1e-6)
    assert geodesic(e, -e) == pytest.approx(np.pi)
    # d = 5 and broadcasting
    a5 = sample_uniform(10, 5, rng)
    assert geodesic(a5, a5[0]).shape == (10,)


def test_rotate_towards_distance():
    rng = np.random.default_rng(4)
    a, b = sample_uniform(20, 4, rng), sample_uniform(20, 4, rng)
    c = rotate_towards(a, b, 0.3)
    np.testing.assert_allclose(geodesic(a, c), 0.3, atol=1e-10)
    assert np.all(geodesic(c, b) < geodesic(a, b))


def test_spherical_mean_of_vmf_samples():
    rng = np.random.default_rng(5)
    mu = normalize(np.array([1.0, 2.0, -0.5]))
    x = vonmises_fisher(mu, 20.0).rvs(5000, random_state=rng)
    assert np.degrees(geodesic(spherical_mean(x), mu)) < 1.0
    # weights: all weight on one point returns that point
    w = np.zeros(len(x))
    w[7] = 1.0
    np.testing.assert_allclose(spherical_mean(x, w), x[7])
    # axis: (chains, draws, d) -> per-chain means
    assert spherical_mean(x.reshape(50, 100, 3), axis=1).shape == (50, 3)
    # mean resultant length of vMF(k=20) on S^2 is coth(k) - 1/k
    assert mean_resultant_length(x) == pytest.approx(1 / np.tanh(20.0) - 1 / 20.0, abs=0.01)


@pytest.mark.parametrize("n", [4, 64, 500])
def test_fibonacci_spread(n):
    x = fibonacci_sphere(n)
    assert x.shape == (n, 3)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    assert mean_resultant_length(x) < 0.5 / n  # tiny lattices are not exactly balanced
    dist = geodesic(x[:, None, :], x[None, :, :])
    np.fill_diagonal(dist, np.inf)
    nearest = dist.min(axis=1)
    # an even spread: every point's nearest neighbour is at a similar distance, close to the
    # spacing of n equal caps, sqrt(4 pi / n)
    spacing = np.sqrt(4 * np.pi / n)
    assert nearest.min() > 0.4 * spacing
    assert nearest.max() < 1.6 * spacing
    ring = fibonacci_sphere(n, 2)
    steps = np.mod(np.diff(np.arctan2(ring[:, 1], ring[:, 0])), 2 * np.pi)
    np.testing.assert_allclose(steps, 2 * np.pi / n, atol=1e-9, rtol=0)


def test_fibonacci_rejects_high_d():
    with pytest.raises(ValueError, match="d = 5"):
        fibonacci_sphere(10, 5)


def test_to_lonlat():
    lon, lat = to_lonlat(np.array([[0, 0, 1.0], [0, 1.0, 0]]))
    np.testing.assert_allclose(lat, [np.pi / 2, 0])
    assert lon[1] == pytest.approx(np.pi / 2)


def test_rotation_between_maps_a_to_b_and_is_a_rotation():
    rng = np.random.default_rng(5)
    for a, b in [(rng.standard_normal(3), rng.standard_normal(3)) for _ in range(5)] + [
        (np.array([0.0, 0, 1]), np.array([0.0, 0, 1])),
        (np.array([0.0, 0, 1]), np.array([0.0, 0, -1])),
    ]:
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        r = rotation_between(a, b)
        np.testing.assert_allclose(r @ a, b, atol=1e-12)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
