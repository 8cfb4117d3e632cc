"""vae.model: shapes, the sphere, radius, losses against closed forms, determinism."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vae.faces import generate_faces
from vae.model import GaussianVAE, ModelConfig, SphereVAE, build_model

TINY = {"image_size": (16, 12), "channels": (4, 8), "hidden": 16}


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{**TINY, **kw})


def batch(n=10, seed=0, size=(16, 12)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, *size), generator=g), torch.randint(0, 7, (n,), generator=g)


def kl_vmf3_uniform(kappa: float) -> float:
    """KL(vMF(mu, kappa) || uniform on S^2) = log kappa - log sinh kappa + kappa coth kappa - 1."""
    log_sinh = kappa + math.log1p(-math.exp(-2 * kappa)) - math.log(2)
    return math.log(kappa) - log_sinh + kappa / math.tanh(kappa) - 1


@pytest.mark.parametrize("prior", ["vmf", "gaussian"])
@pytest.mark.parametrize("d", [2, 3, 5])
def test_shapes(prior, d):
    model = build_model(tiny(prior=prior, latent_dim=d)).eval().requires_grad_(False)
    x, _ = batch()
    mu = model.encode(x)
    assert mu.shape == (10, d)
    images = model.decode(mu)
    assert images.shape == (10, 1, 16, 12)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert model.classify(mu).shape == (10, 7)
    out = model(x, generator=torch.Generator().manual_seed(1))
    assert out.recon.shape == x.shape and out.z.shape == (10, d) and out.kl.shape == (10,)


def test_sphere_codes_are_unit_and_gaussian_are_not():
    x, _ = batch()
    sphere = build_model(tiny()).eval().requires_grad_(False)
    out = sphere(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sphere.encode(x).norm(dim=1), torch.ones(10))
    torch.testing.assert_close(out.z.norm(dim=1), torch.ones(10))
    # kappa 300 keeps samples within a few degrees of mu
    assert float(torch.arccos((out.z * out.mu).sum(1).clamp(-1, 1)).max()) < 0.35
    gauss = build_model(tiny(prior="gaussian")).eval()
    assert isinstance(gauss, GaussianVAE) and isinstance(sphere, SphereVAE)
    assert not torch.allclose(gauss.encode(x).norm(dim=1), torch.ones(10))


def test_radius_scales_the_code_seen_by_decoder_and_classifier():
    r1 = build_model(tiny(radius=1.0), seed=3).eval()
    r2 = build_model(tiny(radius=2.0), seed=3).eval()
    r2.load_state_dict(r1.state_dict())
    z = F.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    torch.testing.assert_close(r2.decode(z), r1.decode(2.0 * z))
    torch.testing.assert_close(r2.classify(z), r1.classify(2.0 * z))
    assert not torch.allclose(r2.decode(z), r1.decode(z))


@pytest.mark.parametrize("kappa", [1.0, 300.0])
def test_vmf_kl_is_the_closed_form_constant(kappa):
    model = build_model(tiny(kappa=kappa))
    x, y = batch()
    losses, out = model.loss(x, y, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.kl, torch.full((10,), kl_vmf3_uniform(kappa)), rtol=1e-4, atol=1e-4)
    assert all(torch.isfinite(v) for v in losses)


def test_gaussian_kl_matches_torch_normal():
    model = build_model(tiny(prior="gaussian"))
    x, y = batch()
    _, out = model.loss(x, y, torch.Generator().manual_seed(0))
    h = model.encoder(x)
    std = torch.exp(0.5 * model.to_logvar(h))
    q = torch.distributions.Normal(model.to_mean(h), std)
    p = torch.distributions.Normal(torch.zeros_like(std), torch.ones_like(std))
    torch.testing.assert_close(out.kl, torch.distributions.kl_divergence(q, p).sum(-1))


@pytest.mark.parametrize("prior", ["vmf", "gaussian"])
def test_loss_parts(prior):
    """recon = summed BCE of the decoded sample; ce = cross-entropy of the logits (not probs)."""
    model = build_model(tiny(prior=prior, class_weight=7.0))
    x, y = batch()
    losses, out = model.loss(x, y, torch.Generator().manual_seed(0))
    p = out.recon.double()
    bce = -(x * torch.log(p) + (1 - x) * torch.log1p(-p)).flatten(1).sum(1).mean()
    torch.testing.assert_close(losses.recon.double(), bce, rtol=1e-4, atol=1e-3)
    log_p = out.logits.double() - torch.logsumexp(out.logits.double(), dim=1, keepdim=True)
    ce = -log_p[torch.arange(10), y].mean()
    torch.testing.assert_close(losses.ce.double(), ce, rtol=1e-5, atol=1e-6)
    # logits are raw scores, not already probabilities (no double softmax)
    assert not torch.allclose(out.logits.sum(1), torch.ones(10))
    torch.testing.assert_close(losses.total, losses.recon + losses.kl + 7.0 * losses.ce)


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["vmf", "gaussian"])
def test_loss_decreases_on_tiny_data(prior):
    faces = generate_faces(n_identities=4, poses_per_emotion=1, size=(16, 12), seed=0)
    x = torch.from_numpy(faces.images).float().div(255.0)[:, None]
    y = torch.from_numpy(faces.labels)
    model = build_model(tiny(prior=prior, class_weight=10.0), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(30):
        losses, _ = model.loss(x, y, g)
        opt.zero_grad()
        losses.total.backward()
        opt.step()
        first = first if first is not None else losses
    # grey pixels keep a BCE floor (their entropy, ~120 nats here): compare in nats
    assert losses.recon.item() < first.recon.item() - 4.0
    assert losses.ce.item() < first.ce.item() - 0.2


def test_init_and_sampling_are_seeded_and_leave_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_model(tiny(), seed=5), build_model(tiny(), seed=5)
    c = build_model(tiny(), seed=6)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.parameters(), c.parameters(), strict=True))
    x, _ = batch()
    z1 = a(x, generator=torch.Generator().manual_seed(9)).z
    z2 = a(x, generator=torch.Generator().manual_seed(9)).z
    assert torch.equal(z1, z2)
    assert torch.equal(state, torch.get_rng_state())


def test_calibrate_sets_exact_feature_statistics():
    model = build_model(tiny())
    x, _ = batch(n=40)
    model.encoder.calibrate(x, batch=16)
    with torch.no_grad():
        h = model.encoder.features(x)
    torch.testing.assert_close(model.encoder.norm.running_mean, h.mean(0))
    torch.testing.assert_close(model.encoder.norm.running_var, h.var(0))


@pytest.mark.parametrize(
    "bad, word",
    [
        ({"image_size": (30, 64)}, "image_size"),
        ({"latent_dim": 1}, "latent_dim"),
        ({"prior": "normal"}, "vmf, gaussian"),
        ({"kappa": 0.0}, "kappa"),
        ({"radius": -1.0}, "radius"),
    ],
)
def test_config_validation_names_the_field(bad, word):
    with pytest.raises(ValueError, match=word):
        ModelConfig(**bad)


def test_config_round_trips_through_plain_dict():
    cfg = tiny(latent_dim=2, radius=2.0)
    assert ModelConfig(**cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["image_size"], list)
