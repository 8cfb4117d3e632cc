"""An across-participant study served over HTTP by several `python -m mcmcp.serve` processes,
taken by simulated participants, then checked from the database alone.

Every request goes to one of the processes at random (a proxy without stickiness); participants
arrive one after another; a share of them close the page part-way (`leave`), another share wait
past their lease before one answer (`late`: that answer must get 409); once a share of the
expected answers is in, one server process is killed with SIGKILL and started again, while
participants keep answering (their requests are retried as the page retries them). Then, from
the database: `ChainStore.check` (every chain one unbroken line, never held by two leases at
once, no late answer inside it), every answer accepted with 200 is the session's row at that
trial, with that side, and a step of its chain; every answer refused as late is the session's
`late` row and in the store's audit table, never in a chain; the chains' steps and the sessions'
chain rows are the same set (the step and the rows commit together).
Used by tests/online/test_shared_serve.py (a small run) and benchmarks/bench_shared_serve.py.
"""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import numpy as np
from webserver import Server, take_part_http

from mcmcp.chainstore import ChainStore
from mcmcp.config import load_config
from mcmcp.engine import schedule_length
from mcmcp.online.database import Database
from mcmcp.online.study import LATE_TEXT

TOKEN = "shared-load-experimenter"


def plan(n: int, n_trials: int, leave: float, late: float, seed: int) -> list[dict]:
    """Who does what: participant ids, the trial at which each leaver closes the page (None:
    stays to the end) and the trial each late one answers late (None: never)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_leave, n_late = round(leave * n), round(late * n)
    out = []
    for i in range(n):
        rank = int(np.flatnonzero(order == i)[0])
        out.append({"participant": f"S{seed}x{i:04d}",
                    "leave": int(rng.integers(2, n_trials + 1)) if rank < n_leave else None,
                    "late": int(rng.integers(1, n_trials + 1))
                    if n_leave <= rank < n_leave + n_late else None})
    return out


async def _crowd(urls: list[str], people: list[dict], servers: list[Server], lease: float,
                 think: float, arrival: float, kill_after: int, deadline: float) -> dict:
    answered = [0]
    killed: dict = {}

    async def one(i: int, who: dict) -> dict:
        await asyncio.sleep(i * arrival)
        async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=1)) as client:
            result = await take_part_http(
                client, who["participant"], deadline, think=think, servers=tuple(urls),
                late=None if who["late"] is None else (who["late"], lease + 1.5),
                leave=who["leave"], counter=answered)
        return result

    async def killer():
        while answered[0] < kill_after:
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        killed.update(at_answers=answered[0], at=time.monotonic())
        await loop.run_in_executor(None, servers[-1].kill9)
        await loop.run_in_executor(None, servers[-1].start)
        killed["down_s"] = time.monotonic() - killed["at"]

    t0 = time.perf_counter()
    kill = asyncio.create_task(killer())
    results = await asyncio.gather(*(one(i, w) for i, w in enumerate(people)))
    wall = time.perf_counter() - t0
    if not kill.done():  # fewer answers than planned before the kill: say so
        kill.cancel()
    return {"results": results, "wall": wall, "killed": killed}


def run_load(config: Path, db_url: str, folder: Path, n: int, seed: int, *,
             leave: float = 0.2, late: float = 0.05, think: float = 0.05,
             arrival: float = 0.05, kill_share: float = 0.4, processes: int = 2,
             timeout: float = 1800.0) -> dict:
    """Serve `config` (an across-participant design) from `processes` servers on `db_url`,
    let `n` simulated participants take it (see the module docstring) and check the database.
    Returns the numbers (see `check_load`) with the run's: wall seconds, answers per second,
    when the kill came."""
    cfg = load_config(config)
    n_trials = schedule_length(cfg)
    people = plan(n, n_trials, leave, late, seed)
    expected = sum((w["leave"] or n_trials + 1) - 1 for w in people)
    servers = [Server(config, db_url, folder / f"server-{i}.log", token=TOKEN)
               for i in range(processes)]
    try:
        with ThreadPoolExecutor(processes) as pool:  # tables are made under a lock
            list(pool.map(Server.start, servers))
        run = asyncio.run(_crowd([s.url for s in servers], people, servers,
                                 cfg.chains.lease_seconds, think, arrival,
                                 int(kill_share * expected), time.monotonic() + timeout))
    except BaseException:  # what the servers said, before their folder goes
        for s in servers:
            print(f"--- {s.log_path}:\n{s.log_path.read_text()[-6000:]}", file=sys.stderr)
        raise
    finally:
        for s in servers:
            s.stop()
    numbers = check_load(db_url, cfg.name, people, run["results"])
    answers = numbers["accepted"]
    return {**numbers, "wall_s": run["wall"], "answers_per_s": answers / run["wall"],
            "killed": run["killed"], "expected_answers": expected}


def check_load(db_url: str, study: str, people: list[dict], results: list[dict]) -> dict:
    """Everything the run must keep, read from the database (see the module docstring)."""
    store = ChainStore(db_url)
    db = Database(db_url, create=False)
    try:
        problems = store.check(study)
        steps = store._step_frame(study)
        late_kept = store.late(study)
        chains = store.chains(study)
        leases = store.leases(study)
        sessions = {r.participant: r for r in db.all_sessions(study)}
        d = next(iter(sessions.values())).d
        rows = {p: db.rows(r.id, d) for p, r in sessions.items()}
    finally:
        store.close()
        db.close()
    lost, late_missing, planned_not_refused = [], [], []
    session_steps, session_late = set(), set()
    for who, result in zip(people, results, strict=True):
        pid = who["participant"]
        mine = rows.get(pid, [])
        shown = [r for r in mine if r["kind"] != "gate"]
        session_steps |= {(r["chain"], r["chain_step"], r["lease"]) for r in mine
                          if r["kind"] in ("chain", "gate")}
        session_late |= {(pid, r["lease"]) for r in mine if r["kind"] == "late"}
        for progress, side in result["answered"]:
            i = int(progress.split(" / ")[0]) - 1
            if i >= len(shown) or shown[i]["response"] != side or shown[i]["kind"] != "chain":
                lost.append((pid, progress))
        for progress, _, message in result["refused"]:
            i = int(progress.split(" / ")[0]) - 1
            if message == LATE_TEXT and (i >= len(shown) or shown[i]["kind"] != "late"):
                late_missing.append((pid, progress))
        if who["late"] is not None and not any(
                m == LATE_TEXT and int(p.split(" / ")[0]) == who["late"]
                for p, _, m in result["refused"]):
            planned_not_refused.append(pid)
    store_steps = {(int(r.chain), int(r.chain_step), r.lease)
                   for r in steps[["chain", "chain_step", "lease"]].itertuples()}
    store_late = {(r.participant, r.lease) for r in late_kept.itertuples()}
    refused_late = sum(m == LATE_TEXT for r in results for _, _, m in r["refused"])
    return {
        "participants": len(people),
        "left": sum(w["leave"] is not None for w in people),
        "planned_late": sum(w["late"] is not None for w in people),
        "accepted": sum(len(r["answered"]) for r in results),
        "refused_late": refused_late,
        "refused_other": sum(len(r["refused"]) for r in results) - refused_late,
        "waits": sum(r["waits"] for r in results),
        "problems": problems,
        "lost": lost,
        "late_missing": late_missing,
        "planned_late_not_refused": planned_not_refused,
        "steps_not_in_sessions": len(store_steps - session_steps),
        "session_steps_not_in_store": len(session_steps - store_steps),
        "late_kept": len(late_kept),
        "late_rows_not_kept": len(session_late - store_late),
        "chains": len(chains),
        "chain_steps": len(steps),
        "chain_lengths": chains["shown"].tolist(),
        "leases": len(leases),
        "leases_expired": int((leases["end_reason"] == "expired").sum()),
    }
