"""mcmcp.agents and mcmcp.sampling.densities: the Luce rule, lapses, side bias, RTs, image agents."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import expit
from scipy.stats import vonmises_fisher

from mcmcp.agents import (
    BATCH,
    CallableAgent,
    ClassifierAgent,
    LatentAgent,
    ObserverAgent,
    make_agent,
)
from mcmcp.sampling.densities import ClassifierDensity, VMFMixture
from mcmcp.sampling.sphere import fibonacci_sphere, geodesic, normalize, rotate_towards, sample_uniform
from mcmcp.specs import AgentSpec
from vae.labels import EMOTIONS, emotion_index
from vae.model import ModelConfig, build_model
from vae.observer import ObserverClassifier

ROOT = Path(__file__).resolve().parents[2]
M = normalize(np.array([0.0, 0.6, 0.8]))
N = 20000


def pairs(angle_a, angle_b, n=N):
    """n identical pairs: left angle_a and right angle_b radians away from M."""
    away = np.array([1.0, 0.0, 0.0])
    left = np.tile(rotate_towards(M, away, angle_a), (n, 1))
    right = np.tile(rotate_towards(M, away, angle_b), (n, 1))
    return left, right


def latent(**kw):
    return LatentAgent({"happy": VMFMixture.single(M, 5.0)}, **kw)


def test_luce_rule_matches_closed_form_and_exponent_sharpens():
    left, right = pairs(0.6, 0.3)
    dens = VMFMixture.single(M, 5.0)
    ratio = dens.logpdf(right[:1]) - dens.logpdf(left[:1])
    rng = np.random.default_rng(0)
    rates = []
    for g in (0.0, 1.0, 3.0):
        p = float(expit(g * ratio[0]))
        got = latent(exponent=g).choose("happy", left, right, rng).chose_right.mean()
        assert got == pytest.approx(p, abs=0.012)
        rates.append(got)
    assert rates[0] == pytest.approx(0.5, abs=0.012)
    assert rates[0] < rates[1] < rates[2]


def test_lapse_one_is_a_coin_flip():
    left, right = pairs(1.5, 0.0)  # the right face is far better
    c = latent(exponent=5.0, lapse=1.0).choose("happy", left, right, np.random.default_rng(1))
    assert c.chose_right.mean() == pytest.approx(0.5, abs=0.012)
    half = latent(exponent=50.0, lapse=0.4).choose("happy", left, right, np.random.default_rng(2))
    assert half.chose_right.mean() == pytest.approx(0.8, abs=0.012)


def test_side_bias_shifts_choices_toward_right():
    left, right = pairs(0.5, 0.5)  # equally good faces
    for bias in (0.0, 0.8, -0.8):
        c = latent(side_bias=bias).choose("happy", left, right, np.random.default_rng(3))
        assert c.chose_right.mean() == pytest.approx(expit(bias), abs=0.012)


def test_rt_positive_seeded_and_slower_for_close_pairs():
    agent = latent(exponent=2.0)
    close = agent.choose("happy", *pairs(0.4, 0.41), np.random.default_rng(4))
    far = agent.choose("happy", *pairs(1.5, 0.0), np.random.default_rng(4))
    assert np.all(close.rt > 0.25) and np.all(far.rt > 0.25)
    assert np.median(close.rt) > np.median(far.rt) + 0.2
    again = agent.choose("happy", *pairs(0.4, 0.41), np.random.default_rng(4))
    np.testing.assert_array_equal(close.rt, again.rt)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="lapse"):
        latent(lapse=1.5)
    with pytest.raises(ValueError, match="exponent"):
        latent(exponent=-1.0)
    with pytest.raises(KeyError, match="sad"):
        latent().choose("sad", *pairs(0.1, 0.2, 3), np.random.default_rng(0))


def tiny_vae(seed=0):
    # plain: an untrained identity model draws its reference face whatever the code is
    config = ModelConfig(image_size=(16, 16), hidden=8, channels=(4, 4), kind="plain",
                         upsample="transposed")
    return build_model(config, seed).eval()


def test_callable_agent_on_codes_and_images():
    rng = np.random.default_rng(5)
    k = emotion_index("happy")

    model = tiny_vae()
    codes = fibonacci_sphere(40)
    with torch.no_grad():
        bright = model.decode(torch.as_tensor(codes, dtype=torch.float32)).mean((1, 2, 3)).numpy()
    scale = 3.0 / bright.std()

    def brighter_is_happier(images):
        # a made-up observer: P(happy) grows with mean brightness
        b = torch.as_tensor(images).mean(dim=(1, 2, 3)).double().numpy()
        probs = np.full((len(b), 7), 1.0)
        probs[:, k] = np.exp(scale * (b - bright.mean()))
        return probs / probs.sum(1, keepdims=True)

    agent = CallableAgent("bright", brighter_is_happier, takes="images", model=model)
    order = np.argsort(bright)
    lo, hi = np.repeat(codes[order[:10]], 300, 0), np.repeat(codes[order[-10:]], 300, 0)
    c = agent.choose("happy", lo, hi, rng)
    with torch.no_grad():
        p_lo = brighter_is_happier(model.decode(torch.as_tensor(lo, dtype=torch.float32)))[:, k]
        p_hi = brighter_is_happier(model.decode(torch.as_tensor(hi, dtype=torch.float32)))[:, k]
    expected = np.mean(p_hi / (p_hi + p_lo))
    assert agent.name == "bright" and expected > 0.8
    assert c.chose_right.mean() == pytest.approx(expected, abs=0.03)

    def north_is_sad(x):
        probs = np.full((len(x), 7), 1.0)
        probs[:, emotion_index("sad")] = np.exp(4 * x[:, 2])
        return probs / probs.sum(1, keepdims=True)

    coder = CallableAgent("north", north_is_sad, takes="codes", exponent=1.0)
    north, south = pairs(0.0, 0.0, 5000)[0], -pairs(0.0, 0.0, 5000)[0]
    assert coder.choose("sad", south, north, rng).chose_right.mean() > 0.9
    with pytest.raises(ValueError, match="decode"):
        CallableAgent("x", north_is_sad, takes="images")


def test_observer_agent_decodes_each_new_code_once_in_batches():
    model = tiny_vae()
    calls = []
    decode = model.decode

    def counting_decode(z):
        calls.append(len(z))
        return decode(z)

    model.decode = counting_decode
    observer = ObserverClassifier().eval()
    agent = ObserverAgent(model, observer, cells=0, exponent=1.0)  # exact: no table
    n = 1500  # the same 1500 codes on both sides: 1500 to decode, in batches of BATCH
    left, right = fibonacci_sphere(n), fibonacci_sphere(n)[::-1]
    c = agent.choose("angry", left, right, np.random.default_rng(0))
    assert c.chose_right.shape == (n,) and agent.name == "observer"
    assert calls == [BATCH] * (n // BATCH) + [n % BATCH]
    # the next trial: the chains' current faces were scored already, only proposals are new
    calls.clear()
    proposals = sample_uniform(10, 3, np.random.default_rng(1))
    cached = agent.log_preference("angry", np.concatenate([left[:10], proposals]))
    assert calls == [10]
    # remembering changes nothing but the work: an agent without memory gives the same answer
    fresh = ObserverAgent(model, observer, cells=0).log_preference(
        "angry", np.concatenate([left[:10], proposals]))
    np.testing.assert_allclose(cached, fresh, rtol=1e-4)
    agent.reset()
    calls.clear()
    agent.log_preference("angry", left[:5])
    assert calls == [5]
    # the agent works on channels-last copies; the caller's modules keep their layout
    conv = next(m for m in observer.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()


def test_classifier_agent_and_density_agree_with_softmax():
    model = tiny_vae(1)
    x = fibonacci_sphere(30)
    with torch.no_grad():
        logp = torch.log_softmax(model.classify(torch.as_tensor(x, dtype=torch.float32)), -1)
    k = emotion_index("fearful")
    np.testing.assert_allclose(ClassifierDensity(model, "fear").logpdf(x), logp[:, k].numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(ClassifierAgent(model).log_preference("fearful", x),
                               logp[:, k].numpy(), rtol=1e-6)


def test_make_agent_kinds():
    dens = {"happy": VMFMixture.single(M, 5.0)}
    a = make_agent(AgentSpec("latent", 2.0, 0.1, 0.2), densities=dens)
    assert (a.name, a.exponent, a.lapse, a.side_bias) == ("latent", 2.0, 0.1, 0.2)
    assert make_agent(AgentSpec("classifier"), model=tiny_vae()).name == "classifier"
    with pytest.raises(ValueError, match="observer"):
        make_agent(AgentSpec("observer"), model=tiny_vae())


# ----------------------------------------------------------------------------- densities


def test_vmf_mixture_logpdf_single_matches_scipy_and_mixture_integrates_to_one():
    x = fibonacci_sphere(20000)
    single = VMFMixture.single(M, 7.0)
    np.testing.assert_allclose(single.logpdf(x[:100]), vonmises_fisher(M, 7.0).logpdf(x[:100]),
                               rtol=1e-10)
    mix = VMFMixture(np.array([M, -M, [1.0, 0, 0]]), np.array([3.0, 20.0, 0.0]),
                     np.array([2.0, 1.0, 1.0]))
    assert mix.weights.sum() == pytest.approx(1.0)
    # quadrature on an even lattice: the mean density times the area is the total mass
    assert np.mean(np.exp(mix.logpdf(x))) * 4 * np.pi == pytest.approx(1.0, abs=2e-3)


def test_vmf_mixture_fit_recovers_components_and_round_trips():
    rng = np.random.default_rng(6)
    a, b = M, normalize(np.array([1.0, 0.0, -0.2]))
    truth = VMFMixture(np.array([a, b]), np.array([40.0, 15.0]), np.array([0.7, 0.3]))
    x = truth.sample(6000, rng)
    fit = VMFMixture.fit(x, 2, seed=0)
    order = np.argsort(-fit.weights)
    np.testing.assert_allclose(fit.weights[order], [0.7, 0.3], atol=0.03)
    assert np.degrees(geodesic(fit.means[order[0]], a)) < 2.0
    assert np.degrees(geodesic(fit.means[order[1]], b)) < 3.0
    np.testing.assert_allclose(fit.kappas[order], [40.0, 15.0], rtol=0.15)
    back = VMFMixture.from_dict(fit.to_dict())
    np.testing.assert_allclose(back.logpdf(x[:50]), fit.logpdf(x[:50]))
    one = VMFMixture.fit(vonmises_fisher(a, 25.0).rvs(3000, random_state=1), 1)
    assert one.kappas[0] == pytest.approx(25.0, rel=0.08)
    np.testing.assert_allclose(one.mode(), one.means[0])


CHECKPOINT = ROOT / "vae/checkpoints/default.pt"
OBSERVER = ROOT / "vae/checkpoints/observer.pt"


@pytest.mark.slow
def test_trained_agents_prefer_their_emotions_centroid(default_faces):
    """The committed model and observer: every agent picks an emotion's centroid over others'."""
    from mcmcp.sampling.densities import class_centroids, emotion_densities
    from vae.checkpoint import load_checkpoint
    from vae.observer import load_observer
    from vae.store import split_by_identity

    loaded = load_checkpoint(CHECKPOINT)
    faces = default_faces
    train, _ = split_by_identity(faces.identities, 0.2, 0)
    train = train[:: max(1, len(train) // 700)]
    cents = class_centroids(loaded, faces, train)
    dens = emotion_densities(loaded, faces, train, "vmf")
    agents = [LatentAgent(dens, exponent=3.0), ClassifierAgent(loaded.model, exponent=3.0),
              ObserverAgent(loaded.model, load_observer(OBSERVER), exponent=3.0)]
    rng = np.random.default_rng(0)
    for agent in agents:
        correct = []
        for e in EMOTIONS:
            foils = np.array([cents[f] for f in EMOTIONS if f != e])
            target = np.tile(cents[e], (len(foils), 1))
            correct.append(agent.choose(e, foils, target, rng).chose_right)
        assert np.mean(correct) > 0.7, agent.name


def test_a_sessions_observer_agent_decodes_every_face_and_a_simulations_keeps_tables():
    """A session asks one pair at a time, where a table would build up to 36 nodes for one new
    face; simulations ask for hundreds of faces at once and keep tables."""
    from mcmcp.agents import TABLE_CELLS, make_agent
    from mcmcp.config import config_from_dict
    from mcmcp.materials import fit_materials
    from vae.checkpoint import load_checkpoint
    from vae.observer import load_observer

    cfg = config_from_dict({"name": "pilot", "emotions": ["happy"], "gate": {"kind": "none"},
                            "trials": {"catch_rate": 0}, "agent": {"kind": "observer"}},
                           "<test>")
    loaded = load_checkpoint(ROOT / "vae/checkpoints/default.pt")
    _, _, agent = fit_materials(cfg, loaded, None)
    assert agent.name == "observer" and agent.cells == 0
    observer = load_observer(ROOT / "vae/checkpoints/observer.pt")
    simulated = make_agent(cfg.agent, model=loaded.model, observer=observer)
    assert simulated.cells == TABLE_CELLS > 0
