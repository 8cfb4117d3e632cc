"""The ask/tell engine with hand-given densities: schedule, chain bookkeeping, gate, resume."""

from __future__ import annotations

import numpy as np
import pytest
from test_session import make_assets

from mcmcp.config import config_from_dict
from mcmcp.densities import VMFMixture
from mcmcp.engine import Engine, build_schedule
from mcmcp.gate import Gate
from mcmcp.store import SessionStore

D = 3
CENTROIDS = {e: v for e, v in zip(("happy", "sad", "angry"), np.eye(3), strict=True)}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))[0]


def config(ckpt, **trials):
    t = {"per_chain": 6, "practice": 2, "catch_rate": 0.2, "repeat_rate": 0.15,
         "break_every": 7, **trials}
    return config_from_dict({"name": "e", "seed": 4, "model": {"checkpoint": str(ckpt)},
                             "emotions": ["happy", "sad"], "chains": {"per_emotion": 3},
                             "trials": t, "gate": {"kind": "vmf", "gamma": 1.0}})


def gates(gamma=1.0):
    return {e: Gate(VMFMixture.single(m, 4.0), gamma) for e, m in CENTROIDS.items()}


def respond(trial) -> str:
    return "right" if np.random.default_rng([99, trial.trial]).random() < 0.5 else "left"


def run(engine: Engine, prefetch: bool, stop: int | None = None) -> list[dict]:
    """Answer every trial with `respond`; with prefetch, ask t+1 before telling t."""
    rows: list[dict] = []
    pending = engine.ask()
    while pending is not None and (stop is None or pending.trial <= stop):
        nxt = engine.ask() if prefetch and engine.can_ask() else None
        rows += engine.tell(pending, respond(pending), 0.5)
        pending = nxt if nxt is not None else engine.ask()
    return rows


def strip(rows):
    return [{k: v for k, v in r.items() if k != "timestamp"} for r in rows]


def test_schedule(ckpt):
    cfg = config(ckpt)
    slots = build_schedule(cfg, 1)
    assert slots == build_schedule(cfg, 1) and slots != build_schedule(cfg, 2)
    assert [s.kind for s in slots[:2]] == ["practice", "practice"]
    for b, emotion in enumerate(cfg.emotions):
        block = [s for s in slots[2:] if s.block == b]
        assert all(s.emotion == emotion for s in block)
        chain_ids = [s.chain for s in block if s.kind == "chain"]
        assert sorted(chain_ids) == sorted([b * 3 + c for c in range(3)] * 6)
        assert all(a != c for a, c in zip(chain_ids, chain_ids[1:], strict=False))
        kinds = [s.kind for s in block]
        n = len(block)
        assert kinds.count("catch") == round(0.2 * 18 / 0.65)
        assert kinds.count("repeat") == round(0.15 * 18 / 0.65)
        first_repeat = kinds.index("repeat")
        assert kinds[:first_repeat].count("chain") >= 2 and n == len(kinds)


def test_rows_rebuild_every_chain(ckpt):
    cfg = config(ckpt)
    engine = Engine(cfg, D, "P1", 1, gates(), CENTROIDS)
    rows = run(engine, prefetch=True)
    assert [r["row"] for r in rows] == list(range(len(rows)))
    shown = [r for r in rows if r["kind"] != "gate"]
    assert [r["trial"] for r in shown] == list(range(1, len(engine.schedule) + 1))
    assert any(r["kind"] == "gate" for r in rows)
    for c in range(6):
        steps = sorted((r for r in rows if r["kind"] in ("chain", "gate") and r["chain"] == c),
                       key=lambda r: r["iteration"])
        assert [r["iteration"] for r in steps] == list(range(len(steps)))
        assert sum(r["kind"] == "chain" for r in steps) == 6
        for a, b in zip(steps, steps[1:], strict=False):
            nxt = "proposal" if a["accepted"] else "current"
            assert [b[f"current_{i}"] for i in range(D)] == [a[f"{nxt}_{i}"] for i in range(D)]
        last = steps[-1]
        final = np.array([last[f"{'proposal' if last['accepted'] else 'current'}_{i}"]
                          for i in range(D)])
        np.testing.assert_array_equal(engine.positions()[c], final)
    for r in shown:
        chosen = r[f"{r['response']}_role"]
        if r["kind"] == "chain":
            assert r["accepted"] == r["chose_proposal"] == (chosen == "proposal")
            assert {r["left_role"], r["right_role"]} == {"current", "proposal"}
        if r["kind"] == "catch":
            assert r["correct"] == (chosen == "target") and r["foil_emotion"] != r["emotion"]
            np.testing.assert_array_equal([r[f"current_{i}"] for i in range(D)],
                                          CENTROIDS[r["emotion"]])
        if r["kind"] == "repeat":
            orig = rows[r["repeat_of"]]
            assert orig["kind"] == "chain" and orig["trial"] <= r["trial"] - 2
            assert r["left_role"] == orig["right_role"]  # sides swapped
            assert [r[f"proposal_{i}"] for i in range(D)] == \
                [orig[f"proposal_{i}"] for i in range(D)]


def test_gate_passes_with_barker_probability(ckpt):
    """Across all screenings, #passed matches the sum of the pass probabilities."""
    cfg = config(ckpt, per_chain=150, practice=0, catch_rate=0.0, repeat_rate=0.0)
    rows = run(Engine(cfg, D, "P1", 1, gates(gamma=2.0), CENTROIDS), prefetch=True)
    screened = [r for r in rows if r["kind"] in ("chain", "gate")]
    p = np.array([r["gate_prob"] for r in screened])
    passed = np.array([r["kind"] == "chain" for r in screened])
    assert passed.sum() == 2 * 3 * 150 and len(screened) > passed.sum() + 100
    sd = np.sqrt(np.sum(p * (1 - p)))
    assert abs(passed.sum() - p.sum()) < 4 * sd
    for r in screened:  # the recorded probability is Barker on gamma * log g
        expect = 1 / (1 + np.exp(-2.0 * (r["log_gate_proposal"] - r["log_gate_current"])))
        assert r["gate_prob"] == pytest.approx(expect, rel=1e-9, abs=1e-300)


def test_resume_from_saved_rows_is_exact(ckpt, tmp_path):
    cfg = config(ckpt, per_chain=5)
    full = run(Engine(cfg, D, "P1", 1, gates(), CENTROIDS), prefetch=False)
    store = SessionStore.create(tmp_path, "P1", 1, D, {})
    first = run(Engine(cfg, D, "P1", 1, gates(), CENTROIDS), prefetch=True, stop=13)
    store.append_many(first)
    store.close()
    resumed = Engine(cfg, D, "P1", 1, gates(), CENTROIDS, rows_so_far=store.read_rows())
    assert resumed.next_index == 13
    rest = run(resumed, prefetch=True)
    assert strip(first + rest) == strip(full)


def test_one_chain_cannot_prefetch(ckpt):
    cfg = config_from_dict({"name": "one", "model": {"checkpoint": str(ckpt)},
                            "chains": {"per_emotion": 1},
                            "trials": {"per_chain": 3, "practice": 0, "catch_rate": 0.0},
                            "gate": {"kind": "none"}})
    engine = Engine(cfg, D, "P1", 1)
    trial = engine.ask()
    assert not engine.can_ask()
    with pytest.raises(RuntimeError, match="on screen"):
        engine.ask()
    engine.tell(trial, "left", 0.4)
    assert engine.can_ask()
    with pytest.raises(RuntimeError, match="order"):
        engine.tell(trial, "left", 0.4)


def test_kappa_adapts_during_burn_in_only(ckpt):
    cfg = config_from_dict({"name": "a", "model": {"checkpoint": str(ckpt)},
                            "chains": {"per_emotion": 2, "adapt": {"target": 0.3, "burn_in": 10},
                                       "kappa_proposal": 5.0},
                            "trials": {"per_chain": 20, "practice": 0, "catch_rate": 0.0},
                            "gate": {"kind": "none"}})
    rows = run(Engine(cfg, D, "P1", 1), prefetch=True)
    for c in (0, 1):
        kappas = [r["kappa_proposal"] for r in rows if r["chain"] == c]
        assert kappas[0] == 5.0 and len(set(kappas[:11])) > 1
        assert len(set(kappas[11:])) == 1
