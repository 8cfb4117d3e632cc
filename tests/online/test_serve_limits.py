"""Sessions that end: inactivity and the time limit make a session `abandoned` (its answers kept,
exported and shown to the experimenter; it no longer blocks serving a changed design), starts per
address are limited, and so are sessions in progress. Time passing is a real timestamp moved back
in the real database, not a clock mocked."""

from __future__ import annotations

import json
import time

import numpy as np
from sqlalchemy import update
from starlette.testclient import TestClient

from mcmcp.config import load_config
from mcmcp.online.database import Database, sessions
from mcmcp.online.export import export
from mcmcp.online.study import OnlineStudy
from tests.online.test_serve import ONLINE, TOKEN, begin, finish, online_config, serve, step, to_trial

CLIENT = {"viewport": [1280, 800], "dpr": 1, "refresh_hz": 60.0}
LONG_AGO = "2000-01-01T00:00:00.000+00:00"


def age(db: Database, participant: str, column: str) -> None:
    """Move the session's `column` (updated: last request; created: its start) to long ago."""
    with db.engine.begin() as conn:
        conn.execute(update(sessions).where(sessions.c.participant == participant)
                     .values({column: LONG_AGO}))


def test_inactive_and_overlong_sessions_are_abandoned(tmp_path):
    limits = {**ONLINE, "expire_after_minutes": 30, "time_limit_minutes": 90}
    config = online_config(tmp_path, online=limits)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study, client = serve(config, url)
    view = to_trial(client, begin(client, participant="I1"))
    view = step(client, view)
    never = TestClient(client.app)
    begin(never, participant="I2")  # a visitor who never consents
    late = TestClient(client.app)
    to_trial(late, begin(late, participant="I3"))

    age(study.db, "I1", "updated")
    res = client.post("/api/answer", json={"trial": view["screen"]["id"], "side": "left",
                                           "rt": 0.5, "onset": 1.0, "gap": None,
                                           "device": "keyboard"})
    assert res.status_code == 410 and "ended" in res.json()["error"]
    assert client.get("/api/state").status_code == 410
    assert TestClient(client.app).post(  # the same id cannot start again
        "/api/start", json={"participant": "I1", "client": CLIENT}).status_code == 410
    age(study.db, "I3", "created")  # active, but past the time limit
    assert late.get("/api/state").status_code == 410
    age(study.db, "I2", "updated")

    status = {r.participant: r.status for r in study.db.all_sessions()}
    assert status["I1"] == status["I3"] == "abandoned" and status["I2"] == "consent"
    data = client.get("/api/experimenter", headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert data["counts"]["abandoned"] == 2
    [folder] = [f for f in export(study.db, tmp_path / "out") if "I1" in str(f)]
    assert json.loads((folder / "session.json").read_text())["status"] == "abandoned"
    assert len((folder / "trials.csv").read_text().splitlines()) > 1  # answers kept

    # the sessions left in progress (I2) expire at start, so a changed design may be served
    changed = online_config(tmp_path, online=limits, chains={"per_emotion": 3})
    OnlineStudy.open(load_config(changed), Database(url), str(changed))
    assert {r.participant: r.status for r in study.db.all_sessions()}["I2"] == "abandoned"


def test_starts_per_address_are_limited_across_processes(tmp_path, db_url):
    """The limit is counted in the database: two server processes share it."""
    config = online_config(tmp_path, online={**ONLINE, "starts_per_minute": 3})
    (study, client), (_, other) = serve(config, db_url), serve(config, db_url)
    codes = [TestClient((client, other)[i % 2].app).post("/api/start", json={
        "participant": f"R{i}", "client": CLIENT}).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert sorted(r.participant for r in study.db.all_sessions()) == ["R0", "R1", "R2"]
    later = time.time() + 61  # a minute on, the address may start again
    assert study.db.allow_start(study.cfg.name, "testclient", 3, now=later)


def test_sessions_in_progress_are_capped(tmp_path):
    config = online_config(tmp_path, online={**ONLINE, "max_in_progress": 2})
    study, client = serve(config, f"sqlite:///{tmp_path / 'db.sqlite'}")
    first, second = TestClient(client.app), TestClient(client.app)
    view = begin(first, participant="C1")
    begin(second, participant="C2")
    res = TestClient(client.app).post("/api/start", json={"participant": "C3", "client": CLIENT})
    assert res.status_code == 503 and "try again" in res.json()["error"]
    assert begin(second, participant="C2")  # those in progress still get their session back
    finish(first, view, np.random.default_rng(0))
    begin(TestClient(client.app), participant="C3")  # a place became free
    assert len(study.db.all_sessions()) == 3
