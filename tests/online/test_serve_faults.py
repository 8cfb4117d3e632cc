"""kill -9 of a real two-process server in the middle of a study, on SQLite and on PostgreSQL:
every answer the server accepted is kept once, and every participant resumes exactly (their
data equal those of the same answers given without a crash)."""

from __future__ import annotations

import asyncio
import time

import httpx2
import pandas as pd
import pytest
from starlette.testclient import TestClient
from webserver import Server, progress_labels, side_for, take_part_http

from mcmcp.online.database import Database
from mcmcp.online.export import export
from mcmcp.store import read_trials
from tests.online.test_serve import NOT_COMPARED, begin, online_config, serve, step

pytestmark = pytest.mark.slow
PARTICIPANTS = [f"K{i}" for i in range(4)]


def reference(config, folder) -> dict[str, pd.DataFrame]:
    """The same participants answering the same way, in-process and never interrupted."""
    study, client = serve(config, f"sqlite:///{folder / 'reference.sqlite'}")
    for pid in PARTICIPANTS:
        c = TestClient(client.app)
        view = begin(c, participant=pid)
        while view["screen"]["kind"] != "end":
            side = (side_for(pid, view["screen"]["progress"])
                    if view["screen"]["kind"] == "trial" else "left")
            view = step(c, view, side)
    return {f.parent.name: read_trials(f / "trials.csv")
            for f in export(study.db, folder / "reference")}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill9_mid_study_keeps_every_answer_and_everyone_resumes(tmp_path, backend, request):
    config = online_config(tmp_path, trials={"per_chain": 5, "practice": 1, "catch_rate": 0.15,
                                             "repeat_rate": 0.1, "break_every": 8})
    url = (f"sqlite:///{tmp_path / 'online.sqlite'}" if backend == "sqlite"
           else request.getfixturevalue("postgres").new_database())
    expected = reference(config, tmp_path)
    n_total = sum(int((df["kind"] != "gate").sum()) for df in expected.values())
    server = Server(config, url, tmp_path / "server.log", workers=2).start()
    db = Database(url)
    kills = []

    def answered() -> int:
        return sum(r.shown for r in db.all_sessions())

    async def study():
        deadline = time.monotonic() + 300
        clients = [httpx2.AsyncClient(base_url=server.url) for _ in PARTICIPANTS]
        async with asyncio.TaskGroup() as group:
            tasks = {pid: group.create_task(take_part_http(client, pid, deadline, replay_every=5))
                     for pid, client in zip(PARTICIPANTS, clients, strict=True)}
            # crash when about a third of all answers are in, then start again on the same port
            while answered() < n_total // 3:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(server.kill9)
            kills.append(answered())
            await asyncio.to_thread(server.start)
        for client in clients:
            await client.aclose()
        return {pid: task.result() for pid, task in tasks.items()}

    try:
        results = asyncio.run(study())
    finally:
        server.stop()
    assert n_total // 3 <= kills[0] < n_total  # the kill came mid-study
    assert {r.participant: r.status for r in db.all_sessions()} == dict.fromkeys(
        PARTICIPANTS, "complete")
    assert db.counts() == {r.id: r.n_rows for r in db.all_sessions()}  # no row lost or doubled
    got = {f.parent.name: read_trials(f / "trials.csv") for f in export(db, tmp_path / "out")}
    for pid, result in results.items():
        df, ref = got[f"sub-{pid}"], expected[f"sub-{pid}"]
        pd.testing.assert_frame_equal(df.drop(columns=NOT_COMPARED), ref.drop(columns=NOT_COMPARED))
        shown = df[df["kind"] != "gate"].reset_index(drop=True)
        # every accepted answer is in the data, once, with the side that was sent
        assert len(result["answered"]) <= len(shown)
        assert set(result["answered"]) <= set(zip(progress_labels(shown), shown["response"],
                                                  strict=True))
        assert result["refused_replays"] >= 1
