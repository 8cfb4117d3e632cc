"""Guided designs that need no heroic re-weighting: the annealed gate and unguided control chains
(mcmcp.sampling.gate schedule, the engine's rows, the config keys)."""

from __future__ import annotations

import numpy as np
import pytest

from mcmcp.config import ConfigError, config_from_dict, config_to_dict
from mcmcp.engine import Engine
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate, make_gate
from mcmcp.store import SessionStore
from tests.core.test_engine import CENTROIDS, D, run
from tests.lab.test_session import make_assets


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))[0]


def design(ckpt, gate=None, chains=None, per_chain=20):
    return config_from_dict({
        "name": "g", "seed": 3, "model": {"checkpoint": str(ckpt)}, "emotions": ["happy", "sad"],
        "chains": {"per_emotion": 3, **(chains or {})},
        "trials": {"per_chain": per_chain, "practice": 0, "catch_rate": 0.0},
        "gate": {"kind": "vmf", "gamma": 1.0, **(gate or {})}})


def gates(cfg):
    """The config's gate of each emotion, on hand-given densities."""
    dens = {e: VMFMixture.single(m, 4.0) for e, m in CENTROIDS.items()}
    return {e: make_gate(cfg.gate, e, dens) for e in cfg.emotions}


def test_gamma_falls_linearly_to_zero():
    gate = Gate(VMFMixture.single(np.array([0, 0, 1.0]), 5.0), 2.0, anneal_until=0.4)
    progress = np.array([0.0, 0.1, 0.2, 0.39, 0.4, 0.9])
    np.testing.assert_allclose(gate.gamma_at(progress), 2.0 * np.maximum(0, 1 - progress / 0.4))
    np.testing.assert_allclose(Gate(gate.density, 2.0).gamma_at(progress), 2.0)
    with pytest.raises(ValueError, match="anneal_until"):
        Gate(gate.density, 1.0, anneal_until=0.0)


def test_a_gate_that_is_off_passes_everything():
    dens = VMFMixture.single(np.array([0, 0, 1.0]), 50.0)
    gate = Gate(dens, 3.0, anneal_until=0.5)
    rng = np.random.default_rng(0)
    cur = np.tile([0, 0, 1.0], (2000, 1))
    prop = np.tile([1.0, 0, 0], (2000, 1))  # far worse for g: a constant gate passes ~e^-150
    progress = np.repeat([0.0, 0.25, 0.6], [700, 700, 600])
    res = gate.screen(cur, prop, rng, progress=progress)
    assert not res.passed[:1400].any()
    assert res.passed[1400:].all() and (res.prob[1400:] == 1).all()
    np.testing.assert_allclose(res.gamma, gate.gamma_at(progress))


def test_engine_rows_record_the_gamma_in_force_and_control_chains_are_unguided(ckpt, tmp_path):
    cfg = design(ckpt, gate={"anneal": {"until": 0.5}}, chains={"unguided": 1})
    engine = Engine(cfg, D, "P1", 1, gates(cfg), CENTROIDS)
    rows = run(engine, prefetch=True)
    for c in range(6):
        steps = sorted((r for r in rows if r.get("chain") == c), key=lambda r: r["iteration"])
        if c % 3 == 2:  # the last chain of each block is the control
            assert engine.is_control(c)
            assert all(r["kind"] == "chain" and r.get("gate_gamma") is None for r in steps)
            continue
        shown_before = 0
        for r in steps:
            assert r["gate_gamma"] == pytest.approx(max(0.0, 1.0 - shown_before / 10))
            if r["gate_gamma"] == 0:
                assert r["kind"] == "chain" and r["gate_prob"] == 1.0
            shown_before += r["kind"] == "chain"
        assert shown_before == 20 and any(r["kind"] == "gate" for r in steps)
    # resuming in the middle of the annealing continues the schedule exactly
    store = SessionStore.create(tmp_path, "P1", 1, D, {})
    first = run(Engine(cfg, D, "P1", 1, gates(cfg), CENTROIDS), prefetch=True, stop=17)
    store.append_many(first)
    store.close()
    resumed = Engine(cfg, D, "P1", 1, gates(cfg), CENTROIDS, rows_so_far=store.read_rows())
    strip = lambda rs: [{k: v for k, v in r.items() if k != "timestamp"} for r in rs]  # noqa: E731
    assert strip(first + run(resumed, prefetch=True)) == strip(rows)


def test_config_keys_round_trip_and_are_validated(ckpt):
    cfg = design(ckpt, gate={"anneal": {"until": 0.3}}, chains={"unguided": 2})
    assert cfg.gate.anneal.until == 0.3 and cfg.chains.unguided == 2
    assert config_from_dict(config_to_dict(cfg)) == cfg
    default = design(ckpt)  # the default design: annealed until 0.4, no control chains
    assert default.gate.anneal.until == 0.4 and default.chains.unguided == 0
    assert design(ckpt, gate={"anneal": None}).gate.anneal is None
    assert design(ckpt, gate={"kind": "none"}).gate.anneal is None
    bad = [({"gate": {"anneal": {"until": 0}}}, "gate.anneal.until", "(0.0, 0.8]"),
           ({"gate": {"anneal": {"until": 0.9}}}, "gate.anneal.until", "(0.0, 0.8]"),
           ({"gate": {"anneal": {"until": float("nan")}}}, "gate.anneal.until", "finite"),
           ({"gate": {"anneal": {"until": 0.4, "shape": "cosine"}}}, "gate.anneal.shape",
            "known keys"),
           ({"gate": {"anneal": 0.4}}, "gate.anneal", "a mapping"),
           ({"gate": {"kind": "none", "anneal": {"until": 0.4}}}, "gate.anneal", "gate.kind is none"),
           ({"chains": {"unguided": 3}}, "chains.unguided", "[0, 2]"),
           ({"chains": {"unguided": float("inf")}}, "chains.unguided", "an integer"),
           ({"chains": {"unguided": 1}, "gate": {"kind": "none"}}, "chains.unguided",
            "gate.kind is none")]
    for changes, key, allowed in bad:
        with pytest.raises(ConfigError) as info:
            design(ckpt, gate=changes.get("gate"), chains=changes.get("chains"))
        assert info.value.key == key and allowed in str(info.value), str(info.value)


def test_simulated_files_record_the_annealed_gamma_and_leave_control_chains_unscreened(
        tmp_path):
    """The streamed simulation (mcmcp.simulate -> layout -> SessionStore): each guided chain's
    rows carry γ·max(0, 1 - shown / (until · per_chain)) for the trials shown before them and no
    gate row once γ is 0; the last chain of each block (chains.unguided 1) has no gate columns."""
    import yaml

    from analysis.load import load_trials
    from mcmcp import simulate

    until, per_chain, gamma = 0.5, 30, 1.0
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({
        "name": "g", "seed": 4, "emotions": ["happy", "sad"],
        "chains": {"per_emotion": 3, "unguided": 1, "kappa_proposal": 5.0},
        "trials": {"per_chain": per_chain, "practice": 0, "catch_rate": 0.0},
        "gate": {"kind": "manual", "mean": [0.0, 0.0, 1.0], "kappa": 20.0, "gamma": gamma,
                 "anneal": {"until": until}},
        "agent": {"kind": "latent"}}))
    simulate.main(["--config", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "data"),
                   "--truth", "manual"])
    rows = load_trials(tmp_path / "data")
    steps = rows[rows["kind"].isin(["chain", "gate"])]
    control = steps["chain"].astype(int) % 3 == 2
    assert steps.loc[control, ["gate_gamma", "log_gate_current"]].isna().all().all()
    assert (steps.loc[control, "kind"] == "chain").all()
    for _, chain in steps[~control].groupby("chain"):
        chain = chain.sort_values("iteration")
        shown = (chain["kind"] == "chain").to_numpy(bool)
        g = chain["gate_gamma"].to_numpy(float)
        expected = gamma * np.clip(1 - (np.cumsum(shown) - shown) / (until * per_chain), 0, 1)
        assert np.allclose(g, expected)
        assert not (~shown & (g == 0)).any()  # a gate that is off screens nothing out
        assert (g == 0).sum() == per_chain * (1 - until)
