"""The experimenter page costs nothing: between two calls its numbers read only the rows added
since, in one query, and still equal what `analysis` computes from the export."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import event
from starlette.testclient import TestClient

from mcmcp.online.monitor import Monitor
from tests.online.test_serve import TOKEN, begin, finish, online_config, serve, to_trial


@pytest.mark.filterwarnings("ignore:emotion .* chains differ in length")
def test_monitor_reads_only_new_rows_and_agrees_with_analysis(tmp_path):
    from analysis import load_trials
    from analysis.diagnostics import catch_accuracy, convergence
    from analysis.load import chain_states
    from mcmcp.online.export import export

    config = online_config(tmp_path, trials={"per_chain": 8, "practice": 1, "catch_rate": 0.2,
                                             "break_every": 0})
    study, client = serve(config, f"sqlite:///{tmp_path / 'db.sqlite'}")
    rng = np.random.default_rng(5)
    c1 = TestClient(client.app)
    finish(c1, begin(c1, participant="M1"), rng)
    c2 = TestClient(client.app)
    view = to_trial(c2, begin(c2, participant="M2"))
    monitor = Monitor(study.db, study.cfg.name, study.d, study.n_shown)
    first = monitor.summary()
    assert first["counts"]["done"] == 1 and len(first["emotions"]) == 2

    statements = []
    event.listen(study.db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: statements.append(statement))
    finish(c2, view, rng)
    del statements[:]
    data = monitor.summary()
    # rows: only M2's new ones (catch answers are counted, not read)
    trial_reads = [s for s in statements if "FROM trials" in s and "count(" not in s]
    assert len(trial_reads) == 1 and ">=" in trial_reads[0]
    assert all("meta" not in s for s in statements)  # no session metadata either

    export(study.db, tmp_path / "out")
    offline = load_trials(tmp_path / "out")
    catch = catch_accuracy(offline).set_index("participant")
    own = convergence(chain_states(offline), by=["participant"]).groupby("participant")
    group = convergence(chain_states(offline), by=[]).set_index("emotion")
    by_id = {p["participant"]: p for p in data["participants"]}
    for pid in ("M1", "M2"):
        assert by_id[pid]["status"] == "complete" and by_id[pid]["shown"] == study.n_shown
        assert by_id[pid]["catch_n"] == catch.loc[pid, "n_catch"] > 0
        assert by_id[pid]["catch_accuracy"] == pytest.approx(catch.loc[pid, "accuracy"])
        expected = own["rhat_max"].max()[pid]
        got = by_id[pid]["rhat"]
        assert float(got) == pytest.approx(expected) if np.isfinite(expected) else got == "inf"
    assert data["counts"] == {"in_progress": 0, "done": 2, "declined": 0, "abandoned": 0,
                              "trials_answered": 2 * study.n_shown}
    for e in data["emotions"]:
        assert e["rhat"] == pytest.approx(group.loc[e["emotion"], "rhat_max"])
        assert e["n_chains"] == 2 * 2


def test_page_shows_each_sessions_device_and_full_screen_exits(tmp_path):
    config = online_config(tmp_path, trials={"per_chain": 2, "practice": 0, "catch_rate": 0.0,
                                             "repeat_rate": 0.0})
    study, client = serve(config, f"sqlite:///{tmp_path / 'db.sqlite'}")
    to_trial(client, begin(client, participant="D1"))
    for kind in ("fullscreen_exit", "fullscreen_enter", "fullscreen_exit"):
        assert client.post("/api/event", json={"kind": kind}).status_code == 200
    other = TestClient(client.app)
    begin(other, participant="D2")
    res = client.get("/api/experimenter", headers={"authorization": f"Bearer {TOKEN}"})
    by_id = {p["participant"]: p for p in res.json()["participants"]}
    assert by_id["D1"]["fullscreen_exits"] == 2 and by_id["D2"]["fullscreen_exits"] == 0
    # as begin() measured it: a 1280 x 800 window, dpr 1, 60 Hz, no screen size given
    assert by_id["D1"]["device"] == {"device": "desktop", "browser": None, "screen": None,
                                     "dpr": 1.0, "refresh_hz": 60.0}
