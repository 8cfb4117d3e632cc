"""vae.distributions against independent references: scipy.stats / scipy.special and closed forms."""

import math

import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as st
import torch
from torch.distributions import kl_divergence

from vae.distributions import (
    HypersphericalUniform,
    VonMisesFisher,
    log_ive,
    log_vmf_normaliser,
    mean_resultant_length,
)

DIMS = (2, 3, 5, 10)
KAPPAS = (0.01, 1.0, 10.0, 300.0, 1e4)


def unit(d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (v / v.norm()).to(dtype)


def log_area(d: int) -> float:
    """log|S^(d-1)| = log(2 pi^(d/2) / Gamma(d/2)), written out independently of the module."""
    return float(np.log(2.0) + 0.5 * d * np.log(np.pi) - sps.gammaln(0.5 * d))


def tangent_basis(mu: np.ndarray) -> np.ndarray:
    """(d-1, d) orthonormal rows spanning the tangent space at mu."""
    q, _ = np.linalg.qr(np.column_stack([mu, np.eye(mu.size)[:, : mu.size - 1]]))
    return q[:, 1:].T


def angle_statistic(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """d = 2: signed angle from mu; d >= 3: azimuth of x around mu (uniform under a vMF)."""
    t = tangent_basis(mu)
    if mu.size == 2:
        return np.arctan2(x @ t[0], x @ mu)
    return np.arctan2(x @ t[1], x @ t[0])


# --- Bessel functions and normaliser -------------------------------------------------------


@pytest.mark.parametrize("order", [0.0, 0.5, 1.0, 1.5, 2.0, 4.0, 9.5, 30.0])
def test_log_ive_and_its_derivative_match_scipy(order):
    x = torch.logspace(-3, 5, 200, dtype=torch.float64, requires_grad=True)
    out = log_ive(order, x)
    xn = x.detach().numpy()
    ref = np.log(sps.ive(order, xn))
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-9, atol=1e-8)
    (grad,) = torch.autograd.grad(out.sum(), x)
    # d/dx log(I_v(x) e^-x) = I_{v+1}/I_v + v/x - 1
    ref_grad = sps.ive(order + 1, xn) / sps.ive(order, xn) + order / xn - 1.0
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3, 4, 5, 10, 64])
def test_normaliser_and_mean_length_match_scipy(d):
    k = np.logspace(-3, 5, 60)
    v = d / 2 - 1
    ref_log_c = v * np.log(k) - d / 2 * np.log(2 * np.pi) - (np.log(sps.ive(v, k)) + k)
    out = log_vmf_normaliser(torch.from_numpy(k), d).numpy()
    np.testing.assert_allclose(out, ref_log_c, rtol=1e-10, atol=1e-8)
    ref_a = sps.ive(d / 2, k) / sps.ive(v, k)
    np.testing.assert_allclose(
        mean_resultant_length(torch.from_numpy(k), d).numpy(), ref_a, rtol=1e-8
    )


def test_d3_normaliser_small_kappa_limit_is_uniform():
    k = torch.tensor([1e-8, 1e-6, 1e-3], dtype=torch.float64)
    np.testing.assert_allclose(log_vmf_normaliser(k, 3).numpy(), -np.log(4 * np.pi), atol=2e-7)


# --- densities, entropy, KL -------------------------------------------------------------------


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_log_prob_and_entropy_match_scipy(d, kappa):
    mu = unit(d, seed=d)
    ref = st.vonmises_fisher(mu.numpy(), kappa)
    x = ref.rvs(200, random_state=np.random.default_rng(7))
    # include points far from mu, where the density is tiny
    x = np.concatenate([x, st.uniform_direction(d).rvs(50, random_state=8)])
    q = VonMisesFisher(mu, torch.tensor(kappa, dtype=torch.float64))
    np.testing.assert_allclose(
        q.log_prob(torch.from_numpy(x)).numpy(), ref.logpdf(x), rtol=1e-5, atol=1e-9
    )
    np.testing.assert_allclose(q.entropy().item(), ref.entropy(), rtol=1e-5, atol=1e-9)


def kl_d3_closed_form(k: float) -> float:
    """KL(vMF_3(k) || U(S^2)) = E[log(C_3 e^{k w}) + log 4 pi] = k coth k - 1 + log(k / sinh k).

    C_3 = k / (4 pi sinh k) and E[w] = coth k - 1/k; log(k/sinh k) is written as
    log(2k) - k - log1p(-exp(-2k)) so that large k does not overflow.
    """
    return k / np.tanh(k) - 1.0 + np.log(2 * k) - k - np.log1p(-np.exp(-2 * k))


@pytest.mark.parametrize("kappa", [1e-3, 0.01, 1.0, 10.0, 300.0, 1e4, 1e5])
def test_kl_to_uniform_d3_closed_form(kappa):
    q = VonMisesFisher(unit(3, 0), torch.tensor(kappa, dtype=torch.float64))
    kl = kl_divergence(q, HypersphericalUniform(3, dtype=torch.float64)).item()
    assert kl == pytest.approx(kl_d3_closed_form(kappa), rel=1e-7, abs=1e-12)


def test_kl_d3_closed_form_against_quadrature():
    """The closed form above, checked once by integrating the density of w = mu.x directly."""
    for k in (0.3, 4.0, 40.0):
        # density of w on [-1, 1]: k e^{k w} / (2 sinh k); uniform on S^2 gives w ~ U(-1, 1)
        w = np.linspace(-1, 1, 200_001)
        log_p = np.log(k) + k * w - np.log(2 * np.sinh(k))
        kl = np.trapezoid(np.exp(log_p) * (log_p - np.log(0.5)), w)
        assert kl == pytest.approx(kl_d3_closed_form(k), rel=1e-6)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_kl_to_uniform_is_log_area_minus_scipy_entropy(d, kappa):
    q = VonMisesFisher(unit(d, 1), torch.full((2,), kappa, dtype=torch.float64))
    kl = kl_divergence(q, HypersphericalUniform(d, dtype=torch.float64))
    assert kl.shape == (2,)
    ref = log_area(d) - st.vonmises_fisher(unit(d, 1).numpy(), kappa).entropy()
    np.testing.assert_allclose(kl.numpy(), ref, rtol=1e-5, atol=1e-9)


# --- sampling against scipy -------------------------------------------------------------------


def ks_pvalues(x: np.ndarray, ref: np.ndarray, mu: np.ndarray) -> tuple[float, float]:
    p_w = st.ks_2samp(x @ mu, ref @ mu).pvalue
    p_angle = st.ks_2samp(angle_statistic(x, mu), angle_statistic(ref, mu)).pvalue
    return p_w, p_angle


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kappa", KAPPAS)
def test_samples_match_scipy(d, kappa):
    n = 5000
    mu = unit(d, seed=10 + d)
    q = VonMisesFisher(mu, kappa)
    x = q.sample((n,), generator=torch.Generator().manual_seed(d * 1000 + int(kappa)))
    assert x.shape == (n, d)
    np.testing.assert_allclose(x.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    ref = st.vonmises_fisher(mu.numpy(), kappa).rvs(n, random_state=np.random.default_rng(3))
    p_w, p_angle = ks_pvalues(x.numpy(), ref, mu.numpy())
    assert p_w > 1e-3 and p_angle > 1e-3, (p_w, p_angle)


@pytest.mark.parametrize("kappa", [1e-3, 1.0, 300.0, 1e5])
@pytest.mark.parametrize("wood", [False, True])
def test_both_radial_samplers_on_s2_match_scipy_in_float32(kappa, wood):
    """The exact inverse CDF and Wood's rejection (forced on d = 3, as in the benchmark)."""
    n = 5000
    mu = unit(3, seed=5, dtype=torch.float32)
    q = VonMisesFisher(mu, torch.tensor(kappa, dtype=torch.float32))
    x = q._rsample((n,), torch.Generator().manual_seed(11), wood=wood).detach()
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()
    mu64 = mu.double().numpy()
    ref = st.vonmises_fisher(mu64, kappa).rvs(n, random_state=np.random.default_rng(4))
    # 1 - w from the difference vector keeps float32 precision near mu at large kappa
    one_minus_w = 0.5 * ((x.double().numpy() - mu64) ** 2).sum(-1)
    p_w = st.ks_2samp(one_minus_w, 0.5 * ((ref - mu64) ** 2).sum(-1)).pvalue
    p_angle = st.ks_2samp(
        angle_statistic(x.double().numpy(), mu64), angle_statistic(ref, mu64)
    ).pvalue
    assert p_w > 1e-3 and p_angle > 1e-3, (p_w, p_angle)


@pytest.mark.parametrize("d", [3, 5])
@pytest.mark.parametrize("kappa", [0.5, 5.0, 50.0])
def test_mean_matches_empirical_mean(d, kappa):
    n = 20_000
    mu = unit(d, seed=20 + d)
    q = VonMisesFisher(mu, kappa)
    x = q.sample((n,), generator=torch.Generator().manual_seed(21))
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - q.mean).abs() <= 5 * se + 1e-12).all()
    assert q.mean.norm().item() == pytest.approx(sps.ive(d / 2, kappa) / sps.ive(d / 2 - 1, kappa))


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [3, 5])
def test_rsample_gradcheck_with_fixed_base_noise(d):
    """Samples are smooth in (loc, kappa) for fixed noise (Wood: for a fixed accepted draw)."""

    def draw(raw_loc, kappa):
        loc = raw_loc / raw_loc.norm()
        return VonMisesFisher(loc, kappa).rsample((4,), torch.Generator().manual_seed(3))

    raw = (unit(d, 30) + 0.3).requires_grad_(True)  # loc_1 away from 0 (the Householder switch)
    kappa = torch.tensor([2.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(draw, (raw, kappa))


@pytest.mark.parametrize("d", [3, 5, 10])
def test_loc_gradient_of_expected_alignment_points_to_target(d):
    """d/d loc of E[target.x] = A_d(k) (I - loc loc^T) target for unit loc."""
    kappa = 4.0
    loc = unit(d, 40).requires_grad_(True)
    target = unit(d, 41)
    x = VonMisesFisher(loc, kappa).rsample((20_000,), torch.Generator().manual_seed(5))
    (grad,) = torch.autograd.grad((x @ target).mean(), loc)
    loc0 = loc.detach()
    tangential = grad - (grad @ loc0) * loc0
    expected = mean_resultant_length(torch.tensor(kappa), d).item() * (
        target - (target @ loc0) * loc0
    )
    cosine = (tangential @ expected) / (tangential.norm() * expected.norm())
    assert cosine > 0.99
    assert tangential.norm().item() == pytest.approx(expected.norm().item(), rel=0.05)


@pytest.mark.parametrize("kappa", [0.5, 2.0, 30.0])
def test_kappa_gradient_on_s2_is_unbiased(kappa):
    """d/dk E[loc.x] = A_3'(k) = 1/k^2 - 1/sinh(k)^2, estimated through the inverse CDF."""
    loc = unit(3, 50)
    k = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
    x = VonMisesFisher(loc, k).rsample((50_000,), torch.Generator().manual_seed(6))
    (grad,) = torch.autograd.grad((x @ loc).mean(), k)
    assert grad.item() == pytest.approx(1 / kappa**2 - 1 / np.sinh(kappa) ** 2, rel=0.03)


@pytest.mark.parametrize("d", [3, 5])
def test_rotation_at_poles_and_equator(d):
    """loc = +-e1 and loc on the plane loc_1 = 0 (where the Householder switches sign)."""
    eye = torch.eye(d, dtype=torch.float64)
    for loc in (eye[0], -eye[0], eye[1], (eye[0] * 1e-12 + eye[1]) / math.hypot(1, 1e-12)):
        loc = loc.clone().requires_grad_(True)
        x = VonMisesFisher(loc, 20.0).rsample((4000,), torch.Generator().manual_seed(8))
        w = x @ loc.detach()
        assert w.mean().item() == pytest.approx(sps.ive(d / 2, 20) / sps.ive(d / 2 - 1, 20), abs=0.01)
        (grad,) = torch.autograd.grad((x @ eye[2]).mean(), loc)
        assert torch.isfinite(grad).all()


# --- stability over the whole kappa range -----------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [2, 3, 4, 5, 10])
def test_everything_finite_from_kappa_1e_minus_3_to_1e5(dtype, d):
    kappa = torch.tensor([1e-3, 1e-1, 1.0, 30.0, 1e3, 1e5], dtype=dtype, requires_grad=True)
    loc = unit(d, 60, dtype).expand(6, d).clone().requires_grad_(True)
    q = VonMisesFisher(loc, kappa)
    x = q.rsample((64,), torch.Generator().manual_seed(7))
    assert x.dtype == dtype and x.shape == (64, 6, d)
    log_p = q.log_prob(x)
    entropy = q.entropy()
    kl = kl_divergence(q, HypersphericalUniform(d, dtype=dtype))
    for t in (x, log_p, entropy, kl, q.mean):
        assert torch.isfinite(t).all()
    assert (kl >= 0).all()
    loss = log_p.mean() + (x * loc).sum() + entropy.sum() + kl.sum() + q.mean.sum()
    grad_loc, grad_kappa = torch.autograd.grad(loss, (loc, kappa))
    assert torch.isfinite(grad_loc).all() and torch.isfinite(grad_kappa).all()
    # float32 results agree with float64 on the same (float32-rounded) inputs
    q64 = VonMisesFisher(loc.detach().double(), kappa.detach().double(), validate_args=False)
    x64 = x.detach().double()
    for ours, ref in (
        (q.log_prob(x.detach()), q64.log_prob(x64)),
        (entropy, q64.entropy()),
        (kl, kl_divergence(q64, HypersphericalUniform(d, dtype=torch.float64))),
    ):
        tol = 1e-6 if dtype == torch.float32 else 1e-12
        assert ((ours.double() - ref).abs() <= tol * ref.abs().clamp_min(1.0)).all()


# --- shapes and validation ------------------------------------------------------------------


def test_batch_and_event_shapes():
    loc = torch.stack([unit(3, s) for s in range(4)])
    q = VonMisesFisher(loc, torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    assert q.batch_shape == (4,) and q.event_shape == (3,)
    x = q.rsample((5, 2))
    assert x.shape == (5, 2, 4, 3)
    assert q.log_prob(x).shape == (5, 2, 4)
    assert q.entropy().shape == (4,) and q.mean.shape == (4, 3)
    # a float concentration and a batch coming from kappa alone
    assert VonMisesFisher(unit(3, 0), 2.0).batch_shape == ()
    assert VonMisesFisher(unit(3, 0), torch.ones(7, dtype=torch.float64)).batch_shape == (7,)
    big = q.expand((6, 4))
    assert big.batch_shape == (6, 4) and big.sample().shape == (6, 4, 3)
    torch.testing.assert_close(big.entropy()[2], q.entropy())


def test_validation_errors():
    with pytest.raises(ValueError, match="loc"):
        VonMisesFisher(torch.tensor([1.0, 1.0, 0.0]), 1.0, validate_args=True)
    with pytest.raises(ValueError, match="concentration"):
        VonMisesFisher(unit(3, 0), -1.0, validate_args=True)
    with pytest.raises(ValueError, match="concentration"):
        VonMisesFisher(unit(3, 0), 0.0, validate_args=True)
    with pytest.raises(ValueError, match="trailing event axis"):
        VonMisesFisher(torch.stack([unit(3, 0)] * 4), torch.ones(4, 1))
    with pytest.raises(ValueError, match="broadcast"):
        VonMisesFisher(torch.stack([unit(3, 0)] * 4), torch.ones(3))
    with pytest.raises(ValueError, match="d >= 2"):
        VonMisesFisher(torch.tensor([1.0]), 1.0)
    q = VonMisesFisher(unit(3, 0), 1.0, validate_args=True)
    with pytest.raises(ValueError):
        q.log_prob(torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64))
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="ambient"):
            HypersphericalUniform(bad)
    with pytest.raises(ValueError, match="ambient dimensions"):
        kl_divergence(q, HypersphericalUniform(4, dtype=torch.float64))


# --- the uniform distribution -----------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3, 5, 10])
def test_uniform_samples_and_density(d):
    p = HypersphericalUniform(d, dtype=torch.float64)
    assert p.event_shape == (d,) and p.batch_shape == ()
    x = p.sample((5000,), generator=torch.Generator().manual_seed(d))
    np.testing.assert_allclose(x.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    ref = st.uniform_direction(d).rvs(5000, random_state=np.random.default_rng(d))
    assert st.ks_2samp(x[:, 0].numpy(), ref[:, 0]).pvalue > 1e-3
    if d == 3:  # Archimedes: each coordinate is uniform on [-1, 1]
        assert st.kstest(x[:, 2].numpy(), st.uniform(-1, 2).cdf).pvalue > 1e-3
    np.testing.assert_allclose(p.log_prob(x[:3]).numpy(), -log_area(d), rtol=1e-12)
    assert p.entropy().item() == pytest.approx(log_area(d), rel=1e-12)
    # the vMF at tiny kappa is the uniform
    q = VonMisesFisher(unit(d, 0), 1e-9)
    np.testing.assert_allclose(q.log_prob(x[:3]).numpy(), -log_area(d), rtol=1e-8)


def test_uniform_on_s2_has_area_4pi():
    assert HypersphericalUniform(3).log_prob(torch.tensor([0.0, 0.0, 1.0])).item() == (
        pytest.approx(-math.log(4 * math.pi))
    )
