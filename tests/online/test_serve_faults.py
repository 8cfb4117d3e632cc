"""kill -9 of a real two-process server in the middle of a study, on SQLite and on PostgreSQL:
every answer the server accepted is kept once, and every participant resumes exactly (their
data equal those of the same answers given without a crash)."""

from __future__ import annotations

import pandas as pd
import pytest
from starlette.testclient import TestClient
from webserver import Server, crash_mid_study, progress_labels, side_for

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
    results, _ = crash_mid_study(server, db, PARTICIPANTS, n_total, replay_every=5)
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
