"""The ask/tell engine with hand-given densities: schedule, chain bookkeeping, gate, resume."""

from __future__ import annotations

import numpy as np
import pytest

from mcmcp.config import config_from_dict
from mcmcp.engine import Engine, block_order, build_schedule
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate
from mcmcp.sampling.seeds import participant_key
from mcmcp.store import SessionStore
from tests.lab.test_session import make_assets

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
    slots = build_schedule(cfg, "P1", 1)
    assert slots == build_schedule(cfg, "P1", 1) and slots != build_schedule(cfg, "P1", 2)
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


def first_trials(engine: Engine, n: int) -> list[dict]:
    """The first n shown trials (answered by `respond`), without timing."""
    return strip(run(engine, prefetch=False, stop=n))


def test_participants_get_their_own_streams(ckpt):
    """Same config, three participants: starts, schedules, sides, catch positions and proposals
    all differ; the same participant again gets exactly the same session."""
    cfg = config(ckpt, per_chain=6)
    engines = {p: Engine(cfg, D, p, 1, gates(), CENTROIDS) for p in ("P01", "pilot1", "pilot2")}
    for a, b in (("P01", "pilot1"), ("pilot1", "pilot2")):
        ea, eb = engines[a], engines[b]
        assert not np.allclose(np.stack(list(ea.positions().values())),
                               np.stack(list(eb.positions().values())))
        assert [s.kind for s in ea.schedule] != [s.kind for s in eb.schedule]  # catch positions
        assert [s.chain for s in ea.schedule] != [s.chain for s in eb.schedule]
        ta, tb = first_trials(ea, 20), first_trials(eb, 20)
        sides = [[r["left_role"] for r in t if r["kind"] != "gate"] for t in (ta, tb)]
        assert sides[0] != sides[1]
        prop = [r["proposal_0"] for r in ta if r["kind"] == "chain"]
        assert not set(prop) & {r["proposal_0"] for r in tb if r["kind"] == "chain"}
    again = Engine(cfg, D, "P01", 1, gates(), CENTROIDS)
    assert first_trials(again, 20) == first_trials(Engine(cfg, D, "P01", 1, gates(), CENTROIDS), 20)


def test_fibonacci_starts_stay_evenly_spread(ckpt):
    """Fibonacci starts are the lattice turned by a per-participant rotation: the pairwise angles
    (the spread) are the lattice's, the positions are not."""
    from mcmcp.sampling.sphere import fibonacci_sphere

    cfg = config_from_dict({"name": "f", "model": {"checkpoint": str(ckpt)},
                            "chains": {"per_emotion": 5, "start": "fibonacci"},
                            "trials": {"per_chain": 1, "practice": 0, "catch_rate": 0.0},
                            "gate": {"kind": "none"}})
    lattice = fibonacci_sphere(5, D)
    for p in ("P01", "P02"):
        starts = np.stack(list(Engine(cfg, D, p, 1).positions().values()))
        np.testing.assert_allclose(starts @ starts.T, lattice @ lattice.T, atol=1e-12)
        assert not np.allclose(starts, lattice)


def test_block_order_counterbalances(ckpt):
    emotions = ["happy", "sad", "angry"]

    def cfg(order):
        return config_from_dict({"name": "b", "model": {"checkpoint": str(ckpt)},
                                 "emotions": emotions, "block_order": order,
                                 "trials": {"per_chain": 1, "practice": 0, "catch_rate": 0.0},
                                 "gate": {"kind": "none"}, "chains": {"per_emotion": 2}})

    assert block_order(cfg("fixed"), "P002") == tuple(emotions)
    rotated = [block_order(cfg("rotated"), f"P{n:03d}") for n in (1, 2, 3, 4)]
    assert rotated[0] == ("happy", "sad", "angry") and rotated[1] == ("sad", "angry", "happy")
    assert {r[0] for r in rotated[:3]} == set(emotions) and rotated[3] == rotated[0]
    with pytest.raises(ValueError, match="ends in"):
        block_order(cfg("rotated"), "pilot")
    orders = {p: block_order(cfg("random"), p) for p in (f"S{i}" for i in range(12))}
    assert all(sorted(o) == sorted(emotions) for o in orders.values())
    assert len(set(orders.values())) > 2
    assert block_order(cfg("random"), "S3") == orders["S3"]
    # the engine's blocks follow the order, and the emotion of every row says which it was
    engine = Engine(cfg("rotated"), D, "P002", 1)
    assert engine.emotions == rotated[1]
    assert [s.emotion for s in engine.schedule if s.kind == "chain"][0] == "sad"
    rows = run(engine, prefetch=True)
    assert [r["emotion"] for r in rows if r["block"] == 0] == ["sad"] * 2


def test_rows_carry_key_device_experiment_and_run_stamp(ckpt):
    engine = Engine(config(ckpt, per_chain=2, catch_rate=0.0, repeat_rate=0.0), D, "P1", 1,
                    gates(), CENTROIDS)
    engine.stamp(run=2, date="2026-01-01T10:00:00+01:00", frame_rate=60.0)
    trial = engine.ask()
    rows = engine.tell(trial, "left", 0.5, key="f", device="keyboard")
    assert rows[-1]["key"] == "f" and rows[-1]["device"] == "keyboard"
    assert all(r["run"] == 2 and r["experiment"] == "e" and r["frame_rate"] == 60.0 for r in rows)
    seeds = engine.seeds()
    assert seeds["participant_key"] == participant_key("P1") and "participant_key" in seeds["streams"]


# ----------------------------------------------------------------------------- GSP (slider)


def gsp_config(ckpt, **trials):
    t = {"per_chain": 5, "practice": 1, "catch_rate": 0.0, "break_every": 0, **trials}
    return config_from_dict({"name": "g", "seed": 4, "model": {"checkpoint": str(ckpt)},
                             "paradigm": "gsp", "gsp": {"points": 12},
                             "emotions": ["happy", "sad"], "chains": {"per_emotion": 2},
                             "trials": t, "gate": {"kind": "none"}})


def slide(trial) -> int:
    return int(np.random.default_rng([98, trial.trial]).integers(len(trial.circle.points)))


def run_gsp(engine: Engine, stop: int | None = None) -> list[dict]:
    rows: list[dict] = []
    pending = engine.ask()
    while pending is not None and (stop is None or pending.trial <= stop):
        nxt = engine.ask() if engine.can_ask() else None
        rows += engine.tell(pending, slide(pending), 2.0)
        pending = nxt if nxt is not None else engine.ask()
    return rows


@pytest.mark.parametrize("with_gate", [False, True])
def test_gsp_rows_rebuild_chains_and_resume_exactly(ckpt, tmp_path, with_gate):
    cfg = gsp_config(ckpt)
    g = gates(gamma=2.0) if with_gate else None
    full = run_gsp(Engine(cfg, D, "P1", 1, g, CENTROIDS))
    assert all(r["paradigm"] == "gsp" and r["kind"] in ("practice", "chain") for r in full)
    assert len(full) == 1 + 2 * 2 * 5  # one row per trial: the gate refuses moves in its row
    for r in full:
        x = np.array([r[f"current_{i}"] for i in range(D)])
        u = np.array([r[f"direction_{i}"] for i in range(D)])
        theta = 2 * np.pi * r["gsp_choice"] / 12
        np.testing.assert_allclose([r[f"proposal_{i}"] for i in range(D)],
                                   np.cos(theta) * x + np.sin(theta) * u, atol=1e-12)
        assert abs(x @ u) < 1e-12 and 0 <= r["gsp_start"] < 12 and 0 <= r["gsp_shift"] < 12
        assert "response" not in r and "left_role" not in r
    steps = [r for r in full if r["kind"] == "chain"]
    for c in range(4):
        mine = sorted((r for r in steps if r["chain"] == c), key=lambda r: r["iteration"])
        assert [r["iteration"] for r in mine] == list(range(5))
        for a, b in zip(mine, mine[1:], strict=False):
            nxt = "proposal" if a["accepted"] else "current"
            assert [b[f"current_{i}"] for i in range(D)] == [a[f"{nxt}_{i}"] for i in range(D)]
    refused = [r for r in steps if r["gsp_choice"] != 0 and not r["accepted"]]
    assert bool(refused) == with_gate
    if with_gate:
        assert all(r["gate_prob"] is not None for r in steps)
    store = SessionStore.create(tmp_path, "P1", 1, D, {})
    store.append_many(run_gsp(Engine(cfg, D, "P1", 1, g, CENTROIDS), stop=6))
    store.close()
    resumed = Engine(cfg, D, "P1", 1, g, CENTROIDS, rows_so_far=store.read_rows())
    assert resumed.next_index == 6
    assert strip(full[:6] + run_gsp(resumed)) == strip(full)
    engine = Engine(cfg, D, "P1", 1, g, CENTROIDS)
    with pytest.raises(ValueError, match="circle point 0..11"):
        engine.tell(engine.ask(), "left", 1.0)
