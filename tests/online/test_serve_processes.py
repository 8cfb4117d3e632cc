"""Any process answers fast: when each request reaches one of two server processes at random,
a process that has not got the session rebuilds it from its resume point, never by reading all
its rows, and the data are exactly those of one process answering alone (repeat trials, whose
codes come from one saved row, included); a database made before resume points still works."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sqlalchemy import event, update
from starlette.testclient import TestClient
from webserver import side_for

from mcmcp.online.database import sessions
from mcmcp.online.export import export
from mcmcp.store import read_trials
from tests.online.test_serve import (
    NOT_COMPARED,
    begin,
    online_config,
    serve,
    step,
)


def take_part(clients: list[TestClient], rng: np.random.Generator, pid: str, db=None) -> None:
    """A whole session, each request sent to one of `clients` at random; with `db`, the
    session's resume point is wiped part-way (a database from before resume points)."""
    view = begin(clients[0], participant=pid)
    for c in clients[1:]:
        c.cookies = clients[0].cookies
    n = 0
    while view["screen"]["kind"] != "end":
        client = clients[int(rng.integers(len(clients)))]
        side = (side_for(pid, view["screen"]["progress"]) if view["screen"]["kind"] == "trial"
                else "left")
        view = step(client, view, side)
        n += 1
        if db is not None and n == 12:
            with db.engine.begin() as conn:
                conn.execute(update(sessions).values(resume=None))


def test_any_process_rebuilds_from_the_resume_point(tmp_path, db_url):
    config = online_config(tmp_path, trials={"per_chain": 6, "practice": 1, "catch_rate": 0.15,
                                             "repeat_rate": 0.15, "break_every": 8})
    ref_study, ref_client = serve(config, f"sqlite:///{tmp_path / 'reference.sqlite'}")
    take_part([ref_client], np.random.default_rng(0), "R1")
    expected = read_trials(export(ref_study.db, tmp_path / "ref")[0] / "trials.csv")
    assert (expected["kind"] == "repeat").sum() >= 2

    first, client_a = serve(config, db_url)
    second, client_b = serve(config, db_url)
    reads = []
    for study in (first, second):
        event.listen(study.db.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *args: reads.append(statement))
    take_part([client_a, TestClient(client_b.app)], np.random.default_rng(1), "R1")
    trial_reads = [s for s in reads if "FROM trials" in s]
    # a rebuild reads one trial row at most (the one a repeat shows again), never all of them
    assert trial_reads and all(re.search(r'trials\."?row"? =', s) for s in trial_reads), \
        trial_reads
    got = read_trials(export(first.db, tmp_path / "two")[0] / "trials.csv")
    pd.testing.assert_frame_equal(got.drop(columns=NOT_COMPARED),
                                  expected.drop(columns=NOT_COMPARED))

    # a session saved before resume points: rebuilt from its rows, then goes on the same
    take_part([TestClient(client_a.app), TestClient(client_b.app)], np.random.default_rng(2),
              "R2", first.db)
    take_part([ref_client], np.random.default_rng(2), "R2")
    ref = {f.parent.name: read_trials(f / "trials.csv")
           for f in export(ref_study.db, tmp_path / "ref2")}
    new = {f.parent.name: read_trials(f / "trials.csv")
           for f in export(first.db, tmp_path / "two2")}
    pd.testing.assert_frame_equal(new["sub-R2"].drop(columns=NOT_COMPARED),
                                  ref["sub-R2"].drop(columns=NOT_COMPARED))


def test_a_database_from_before_resume_points_exports_as_it_is(tmp_path):
    """`mcmcp.export` opens a database without changing it: one made before resume points
    (no `resume` column) is read as it is."""
    from sqlalchemy import text

    from mcmcp.online.database import Database

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    study, client = serve(online_config(tmp_path), url)
    take_part([client], np.random.default_rng(0), "O1")
    with study.db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE sessions DROP COLUMN resume"))
    [folder] = export(Database(url, create=False), tmp_path / "out")
    assert read_trials(folder / "trials.csv")["row"].tolist() == list(range(
        study.db.all_sessions()[0].n_rows))


def test_views_send_only_the_faces_a_page_has_not_got(tmp_path):
    """The page names the faces it holds (`have`) and a view sends only the others, so every
    face of a session is decoded and sent once, whichever process answers (an MCMCP chain's
    current face was shown before: an answer brings its one new proposal); a bad `have` gets
    400 and writes nothing."""
    import asyncio

    from webserver import _hold

    config = online_config(tmp_path, trials={"per_chain": 5, "practice": 1, "catch_rate": 0.15,
                                             "repeat_rate": 0.15, "break_every": 6})
    url = f"sqlite:///{tmp_path / 'online.sqlite'}"
    (first, client_a), (second, client_b) = serve(config, url), serve(config, url)
    view = begin(client_a, participant="F1")
    client_b.cookies = client_a.cookies
    rng, held, out, received = np.random.default_rng(3), {}, {"faces": 0, "refetched": 0}, []

    async def call(method: str, path: str, body: dict | None = None):
        return [client_a, client_b][int(rng.integers(2))].request(method, path, json=body)

    async def session(view: dict) -> dict:
        while view["screen"]["kind"] != "end":
            view = await _hold(view, held, 64, call, out)
            received.extend(view["images"])
            screen = view["screen"]
            body = ({"trial": screen["id"], "side": side_for("F1", screen["progress"]),
                     "rt": 0.5, "onset": 1.0, "gap": None, "device": "keyboard"}
                    if screen["kind"] == "trial" else
                    {"screen": screen["id"], **({"consent": True}
                                                if screen["kind"] == "consent" else {})})
            if screen["kind"] == "trial" and len(received) > 6:
                bad = await call("POST", "/api/answer", {**body, "have": ["not-a-key"]})
                assert bad.status_code == 400 and "have must be" in bad.text
            res = await call("POST", "/api/answer" if screen["kind"] == "trial" else "/api/ack",
                             {**body, "have": list(held)})
            assert res.status_code == 200, res.text
            view = res.json()
        return view

    asyncio.run(session(view))
    assert out["refetched"] == 0  # never a view naming a face the page had not got
    assert len(received) == len(set(received))  # no face sent twice
    assert first.renderer.misses + second.renderer.misses == len(received)  # decoded once
    record = first.db.all_sessions()[0]
    assert record.status == "complete" and len(received) < 2 * record.shown
