"""The shared chain store and the shared chain source: leases, compare-and-set answers, late
answers, and processes racing for chains on SQLite files and PostgreSQL clusters, checked from
the database alone (`ChainStore.check`)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import update

from mcmcp.agents import LatentAgent
from mcmcp.chainstore import ChainStore, LeaseLost, steps_table
from mcmcp.config import config_from_dict
from mcmcp.engine import Engine
from mcmcp.sampling import chain
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate
from mcmcp.shared import NoChainFree, SharedChains

D = 3
PROTOTYPES = {"happy": np.array([0.0, 0.0, 1.0]), "sad": np.array([1.0, 0.0, 0.0])}


def shared_config(per_emotion=2, per_hold=4, per_participant=8, lease_seconds=60.0,
                  per_chain=1000, name="shared"):
    return config_from_dict({
        "name": name, "seed": 3, "emotions": ["happy", "sad"],
        "chains": {"per_emotion": per_emotion, "kappa_proposal": 8.0,
                   "across_participants": True, "lease_seconds": lease_seconds},
        "trials": {"per_chain": per_chain, "practice": 0, "catch_rate": 0.0,
                   "per_hold": per_hold, "per_participant": per_participant},
        "gate": {"kind": "none"}}, "<test>", require_checkpoint=False)


def step_row(lease, state, rng, accepted):
    """One chain row of `lease`'s chain at `state` and the state after it."""
    proposal = chain.propose(state, rng)
    row = {"chain": lease.chain, "iteration": int(state.iteration), "kind": "chain",
           "lease": lease.id, "chain_step": int(state.iteration), "accepted": accepted,
           **{f"current_{i}": float(state.position[i]) for i in range(D)},
           **{f"proposal_{i}": float(proposal[i]) for i in range(D)}}
    return row, chain.step(state, proposal, accepted)


def test_leases_answers_and_late_answers(tmp_path):
    """One holder per chain; an answer commits only under its lease, before it expires; a late
    answer is kept for audit and never enters the chain; a chain taken over goes on from its
    last committed state."""
    store = ChainStore(f"sqlite:///{tmp_path / 'chains.sqlite'}")
    cfg = shared_config()
    SharedChains(store, cfg, D, "setup", 1)  # makes the study's chains
    rng = np.random.default_rng(0)
    a = store.lease("shared", "happy", "A", now=100.0, seconds=10.0)
    b = store.lease("shared", "happy", "B", now=100.0, seconds=10.0)
    assert (a.chain, b.chain) == (0, 1) and a.state.iteration == 0
    assert store.lease("shared", "happy", "C", now=101.0, seconds=10.0) is None
    row, state = step_row(a, a.state, rng, True)
    a = store.advance(a, [row], state, 1, now=105.0, seconds=10.0)  # extends to 115
    assert store.lease("shared", "happy", "C", now=112.0, seconds=10.0).chain == 1  # B's ran out
    c = store.lease("shared", "happy", "C", now=116.0, seconds=10.0)  # A's ran out at 115
    assert c.chain == 0 and c.version == 1
    np.testing.assert_array_equal(c.state.position, state.position)
    late, _ = step_row(a, state, rng, False)
    with pytest.raises(LeaseLost) as lost:
        store.advance(a, [late], chain.step(state, state.position, False), 1, now=117.0,
                      seconds=10.0)
    assert lost.value.reason == "taken"
    row, state = step_row(c, c.state, rng, False)
    store.advance(c, [row], state, 1, now=118.0, seconds=10.0, release=True)
    d = store.lease("shared", "happy", "D", now=119.0, seconds=10.0)
    assert d.chain == 0 and d.version == 2  # handed back: the least advanced free chain
    row, _ = step_row(d, d.state, rng, True)
    with pytest.raises(LeaseLost) as lost:  # expired, nobody took it yet
        store.advance(d, [row], chain.step(d.state, d.state.position, True), 1, now=130.0,
                      seconds=10.0)
    assert lost.value.reason == "expired"
    assert store.expire("shared", now=131.0) == 2  # chain 0 (D) and chain 1 (C)
    late = store.late("shared")
    assert late["reason"].tolist() == ["taken", "expired"]
    assert late["participant"].tolist() == ["A", "D"]
    leases = store.leases("shared")
    assert leases[leases["chain"] == 0]["participant"].tolist() == ["A", "C", "D"]
    assert store.check("shared") == []
    with pytest.raises(ValueError, match="do not continue version"):  # a gap in the line
        store.advance(d, [{**row, "chain_step": 3}], d.state._replace(iteration=4), 1,
                      now=120.0, seconds=10.0)


def test_check_finds_a_broken_line_and_a_double_holder(tmp_path):
    """The database check fails when a step does not continue the one before, and when a
    chain's leases overlap: it can fail, so its empty answer elsewhere means something."""
    store = ChainStore(f"sqlite:///{tmp_path / 'chains.sqlite'}")
    SharedChains(store, shared_config(), D, "setup", 1)
    rng = np.random.default_rng(1)
    lease = store.lease("shared", "happy", "A", now=0.0, seconds=100.0)
    state = lease.state
    for t in range(3):
        row, state = step_row(lease, state, rng, True)
        lease = store.advance(lease, [row], state, 1, now=1.0 + t, seconds=100.0,
                              release=t == 2)
    other = store.lease("shared", "happy", "B", now=6.0, seconds=100.0)
    assert other.chain == 1 and store.check("shared") == []
    with store.engine.begin() as conn:  # step 1 moved: it no longer starts where step 0 left
        bad = store.steps("shared")[1]
        bad["current_0"] += 1e-9
        conn.execute(update(steps_table).where(steps_table.c.chain == 0,
                                               steps_table.c.chain_step == 1).values(row=bad))
        conn.execute(update(steps_table.metadata.tables["shared_leases"]).where(
            steps_table.metadata.tables["shared_leases"].c.participant == "A").values(
            ended=7.0, end_reason="expired"))
    problems = store.check("shared")
    assert any("does not start where step 0 left" in p for p in problems), problems
    # A's lease now says it expired at 7.0: a lease of chain 0 granted at 6.5 overlaps it
    third = store.lease("shared", "happy", "C", now=6.5, seconds=100.0)
    assert third.chain == 0
    assert any("was still running when lease" in p for p in store.check("shared"))


def latent_agent(prototype_shift: float, seed: int) -> LatentAgent:
    """A participant whose prototypes are the group's turned by `prototype_shift` radians."""
    rng = np.random.default_rng(seed)
    dens = {}
    for e, m in PROTOTYPES.items():
        axis = rng.standard_normal(D)
        axis -= (axis @ m) * m
        axis /= np.linalg.norm(axis)
        mine = np.cos(prototype_shift) * m + np.sin(prototype_shift) * axis
        dens[e] = VMFMixture.single(mine, 20.0)
    return LatentAgent(dens)


def answer(trial, agent, rng) -> str:
    choice = agent.choose(trial.emotion, trial.left[None], trial.right[None], rng)
    return "right" if choice.chose_right[0] else "left"


class Clock:
    """A clock tests move by hand (unix seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_participants_take_turns_on_shared_chains_through_the_engine(tmp_path):
    """Six participants, three at a time, answer through the real engine with a gate (gate
    rows commit with the trial they precede); one leaves mid-hold, one answers after their
    lease expired. Every answer that committed is in a chain exactly once, with its lease and
    step; the late one is one `late` row of P004's, in no chain, and in the audit table."""
    store = ChainStore(f"sqlite:///{tmp_path / 'chains.sqlite'}")
    cfg = shared_config(per_emotion=3, per_hold=4, per_participant=8, lease_seconds=5.0)
    clock = Clock()
    gates = {e: Gate(VMFMixture.single(m, 2.0), 1.0) for e, m in PROTOTYPES.items()}
    people = [f"P{k:03d}" for k in range(1, 7)]
    engines = {p: Engine(cfg, D, p, 1, gates, source=SharedChains(store, cfg, D, p, 1,
                                                                   clock=clock))
               for p in people}
    agents = {p: latent_agent(0.2, k) for k, p in enumerate(people)}
    rng = np.random.default_rng(5)
    told: dict[str, list[dict]] = {p: [] for p in people}
    lost = []
    away = 8  # rounds P004 spends away from trial 6 (1 s per answer of the others)
    for wave in (people[:3], people[3:]):
        clock.now += 6.0  # P002's lease has run out before the second wave
        pending = {p: engines[p].ask() for p in wave}
        while any(t is not None for t in pending.values()):
            for p in wave:
                trial = pending[p]
                if trial is None:
                    continue
                clock.now += 1.0
                if p == "P002" and trial.trial == 3:  # leaves mid-hold, never answers again
                    pending[p] = None
                    continue
                if p == "P004" and trial.trial == 6 and away:  # away past the lease
                    away -= 1
                    continue
                rows = engines[p].tell(trial, answer(trial, agents[p], rng), 0.8)
                if rows[-1]["kind"] == "late":
                    lost.append((p, rows))
                else:
                    told[p] += rows
                pending[p] = engines[p].ask()
    assert [p for p, _ in lost] == ["P004"]
    (late_row,) = lost[0][1]  # one row: no gate rows, no step of any chain
    assert late_row["chain_step"] is None and late_row["accepted"] is None
    assert late_row["lease"] and late_row["response"] in ("left", "right")
    assert store.check("shared") == []
    steps = store.steps("shared")
    key = {(r["participant"], r["lease"], r["chain_step"]) for r in steps}
    mine = {(r["participant"], r["lease"], r["chain_step"]) for p in people for r in told[p]}
    assert key == mine  # every told row committed, nothing else in the chains
    assert len(mine) == sum(len(told[p]) for p in people)
    assert sum(r["kind"] == "gate" for r in steps) > 0
    late = store.late("shared")
    assert late["participant"].tolist() == ["P004"]
    assert all(r["chain_step"] not in {s["chain_step"] for s in steps if s["chain"] == r["chain"]
                                       and s["lease"] == r["lease"]} for r in late["rows"][0])
    # shown chain trials: 8 per participant who finished; P002 gave 2, P004 lost one
    shown = {p: sum(r["kind"] == "chain" for r in told[p]) for p in people}
    assert shown == {"P001": 8, "P002": 2, "P003": 8, "P004": 7, "P005": 8, "P006": 8}
    # the late answer's chain is still marked as P004's, its lease expired; expire() hands it
    # back, and then no chain is held
    chains = store.chains("shared")
    assert chains["holder"].dropna().tolist() == ["P004"]
    assert store.expire("shared", clock.now) == 1
    assert store.chains("shared")["holder"].isna().all() and store.check("shared") == []


def race(url: str, worker: int, n_people: int, seed: int) -> dict:
    """One server-like process: participants one after another, each answering through the
    engine; 20% leave mid-way, 10% are away past their lease once. Returns counts."""
    store = ChainStore(url)
    cfg = shared_config(per_emotion=2, per_hold=3, per_participant=6, lease_seconds=1.0)
    rng = np.random.default_rng([seed, worker])
    counts = {"told": 0, "lost": 0, "waited": 0, "left": 0}
    for k in range(n_people):
        pid = f"W{worker}P{k:02d}"
        engine = Engine(cfg, D, pid, 1, source=SharedChains(store, cfg, D, pid, 1))
        agent = latent_agent(0.3, 100 * worker + k)
        leave_at = int(rng.integers(1, 6)) if rng.random() < 0.2 else None
        late_at = int(rng.integers(1, 6)) if rng.random() < 0.1 else None
        while not engine.done:
            try:
                trial = engine.ask()
            except NoChainFree:
                counts["waited"] += 1
                time.sleep(0.05)
                continue
            if trial.trial == leave_at:
                counts["left"] += 1
                break
            time.sleep(float(rng.uniform(0.0, 0.01)))
            if trial.trial == late_at:
                time.sleep(1.2)
            rows = engine.tell(trial, answer(trial, agent, rng), 0.5)
            counts["lost" if rows[-1]["kind"] == "late" else "told"] += 1
    store.close()
    return counts


def run_race(url: str, processes: int = 4, people: int = 8) -> list[dict]:
    """`processes` workers racing (`race`), and one more, worker 9, killed with SIGKILL
    mid-run (its leases run out and the others go on with its chains)."""
    ctx = multiprocessing.get_context("spawn")
    victim = ctx.Process(target=race, args=(url, 9, 1000, 7))
    victim.start()
    with ctx.Pool(processes) as pool:
        result = pool.starmap_async(race, [(url, w, people, 7) for w in range(processes)])
        store, deadline = ChainStore(url), time.monotonic() + 120
        while not any(r["participant"].startswith("W9") for r in store.steps("shared")) \
                and time.monotonic() < deadline:  # kill it once it has answered, mid-run
            time.sleep(0.2)
        store.close()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
        assert victim.exitcode == -signal.SIGKILL
        return result.get(timeout=300)


def check_race(url: str, counts: list[dict]) -> None:
    """From the database alone: every chain one line held by one lease at a time; every
    answer a surviving worker was told committed is in a chain, every late one in the audit
    table; the killed worker's answers that committed are whole steps of the chains."""
    store = ChainStore(url)
    assert store.check("shared") == []
    steps = pd.DataFrame(store.steps("shared"))
    survivors = ~steps["participant"].str.startswith("W9")
    assert survivors.sum() == sum(c["told"] for c in counts)  # no gate: one row per answer
    assert (~survivors).sum() > 0  # the killed worker had answered before it died
    late = store.late("shared")
    assert (~late["participant"].str.startswith("W9")).sum() == sum(c["lost"] for c in counts)
    leases = store.leases("shared")
    assert leases.groupby("chain")["participant"].count().min() > 1  # chains changed hands
    store.close()


def test_processes_racing_on_sqlite_never_share_a_chain(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    ChainStore(url).close()
    counts = run_race(url)
    check_race(url, counts)


def test_processes_racing_on_postgresql_never_share_a_chain(postgres):
    url = postgres.new_database()
    ChainStore(url).close()
    counts = run_race(url)
    check_race(url, counts)


def test_gsp_sliders_move_shared_chains_too(tmp_path):
    """GSP (slider trials, a gate that may refuse a confirmed move): people take turns on the
    shared chains through the engine; every chain is one unbroken line."""
    store = ChainStore(f"sqlite:///{tmp_path / 'chains.sqlite'}")
    cfg = config_from_dict({
        "name": "gsp_shared", "seed": 2, "emotions": ["happy"], "paradigm": "gsp",
        "gsp": {"points": 12},
        "chains": {"per_emotion": 2, "across_participants": True},
        "trials": {"per_chain": 100, "practice": 0, "catch_rate": 0.0, "per_hold": 4,
                   "per_participant": 8},
        "gate": {"kind": "none"}}, "<test>", require_checkpoint=False)
    gates = {"happy": Gate(VMFMixture.single(PROTOTYPES["happy"], 2.0), 1.0)}
    rng = np.random.default_rng(3)
    for k in range(5):
        pid = f"G{k}"
        engine = Engine(cfg, D, pid, 1, gates, source=SharedChains(store, cfg, D, pid, 1))
        agent = latent_agent(0.2, k)
        while (trial := engine.ask()) is not None:
            c = trial.circle
            point = agent.slide(trial.emotion, c.points[None], np.array([c.start]),
                                np.array([c.shift]), rng).choice[0]
            rows = engine.tell(trial, int(point), 1.5)
            assert rows[-1]["lease"] and rows[-1]["chain_step"] == rows[-1]["iteration"]
    assert store.check("gsp_shared") == []
    steps = pd.DataFrame(store.steps("gsp_shared"))
    assert len(steps) == 40 and steps["gsp_choice"].notna().all()
    assert (~steps["accepted"]).any() and steps["accepted"].any()


def test_shared_designs_refuse_to_run_without_the_chain_store():
    """An across-participant config needs the shared chain source: the engine alone refuses
    it (the lab, the online server and the simulations give it one)."""
    cfg = shared_config()
    with pytest.raises(ValueError, match="SharedChains"):
        Engine(cfg, D, "P1", 1)


def test_a_session_resumed_after_a_late_answer_goes_on_where_it_was(tmp_path):
    """The late answer is one of the session's shown trials (a `late` row), so a session
    rebuilt from its rows (a lab --resume, another server process) asks the next trial of its
    schedule, not the late one again, and takes over its live holds."""
    from mcmcp import schema

    store = ChainStore(f"sqlite:///{tmp_path / 'chains.sqlite'}")
    cfg = shared_config(per_emotion=2, per_hold=4, per_participant=8, lease_seconds=5.0)
    clock, rng = Clock(), np.random.default_rng(9)
    agent = latent_agent(0.1, 1)
    engine = Engine(cfg, D, "R1", 1, source=SharedChains(store, cfg, D, "R1", 1, clock=clock))
    rows = []
    for _ in range(5):  # trial 3 comes after the lease ran out
        trial = engine.ask()
        clock.now += 10.0 if trial.trial == 3 else 1.0
        rows += engine.tell(trial, answer(trial, agent, rng), 0.7)
    assert [r["kind"] for r in rows if r["kind"] != "gate"] == ["chain", "chain", "late",
                                                                "chain", "chain"]
    saved = pd.DataFrame(rows, columns=schema.header(D), dtype=object).astype(
        schema.pandas_dtypes(D))
    again = Engine(cfg, D, "R1", 1, rows_so_far=saved,
                   source=SharedChains(store, cfg, D, "R1", 1, clock=clock))
    assert again.next_index == 5 and again.n_rows == len(rows)
    while (trial := again.ask()) is not None:
        clock.now += 1.0
        rows += again.tell(trial, answer(trial, agent, rng), 0.7)
    shown = [r for r in rows if r["kind"] != "gate"]
    assert [r["trial"] for r in shown] == list(range(1, 9))
    assert [r["row"] for r in rows] == list(range(len(rows)))
    assert store.check("shared") == []
    assert store.expire("shared", clock.now) == 1  # only the lease the late answer missed
    assert store.chains("shared")["holder"].isna().all()
