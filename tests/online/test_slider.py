"""GSP slider trials over the HTTP API (the real app on a real database): the same screens and
rows as a lab GSP session, a slider answer the server refuses without writing, and kill -9 of a
real server mid-study losing no answer."""

from __future__ import annotations

import pandas as pd
import pytest
from starlette.testclient import TestClient
from webserver import Server, crash_mid_study, lab_session, progress_labels, slider_for, walk

from mcmcp.online.database import Database
from mcmcp.online.export import export
from mcmcp.sampling.gsp import point_to_slider
from mcmcp.store import read_trials
from tests.online.test_serve import (
    NOT_COMPARED,
    _snapshot,
    begin,
    online_config,
    serve,
)

K = 8


def gsp_config(tmp_path):
    return online_config(tmp_path, name="gsp_small", paradigm="gsp", emotions=["happy", "sad"],
                         gsp={"points": K}, chains={"per_emotion": 2, "adapt": None},
                         gate={"kind": "vmf", "gamma": 0.5},
                         trials={"per_chain": 3, "practice": 1, "catch_rate": 0.0,
                                 "repeat_rate": 0.0, "break_every": 4})


def slide(client: TestClient, view: dict, position: int, moves: list, **changes):
    return client.post("/api/answer", json={
        "trial": view["screen"]["id"], "position": position, "moves": moves, "rt": 1.5,
        "onset": 4.0, "gap": None, "device": "mouse", **changes})


def ack(client: TestClient, view: dict) -> dict:
    body = {"screen": view["screen"]["id"]}
    if view["screen"]["kind"] == "consent":
        body["consent"] = True
    res = client.post("/api/ack", json=body)
    assert res.status_code == 200, res.text
    return res.json()


def test_online_slider_session_is_the_lab_slider_session(tmp_path, capsys):
    """Confirming the positions of the points a lab agent chose gives the lab's rows (the gate
    included), and every trial's view is one face per slider position plus the handle's start."""
    config = gsp_config(tmp_path)
    lab_screens, lab = lab_session(config, tmp_path, capsys)
    study, client = serve(config, f"sqlite:///{tmp_path / 'db.sqlite'}")
    answers = lab.itertuples()

    def answer(view: dict) -> dict:
        screen = view["screen"]
        assert len(screen["images"]) == K and len(view["next"] or [None] * K) == K
        assert screen["slider"]["points"] == K and 0 <= screen["slider"]["start"] < K
        row = next(answers)
        position = int(point_to_slider(row.gsp_choice, row.gsp_shift, K))
        assert int(point_to_slider(row.gsp_start, row.gsp_shift, K)) == screen["slider"]["start"]
        moves = [] if position == screen["slider"]["start"] else [[0.25, position]]
        res = slide(client, view, position, moves, rt=float(row.rt))
        assert res.status_code == 200, res.text
        return res.json()

    screens, _ = walk(client, begin(client, participant="P1"), answer)
    screens.pop()  # the end screen: the lab prints it too
    assert [s for s in screens[1:] if s != "trial"] + ["end"] == lab_screens
    [folder] = export(study.db, tmp_path / "out")
    online = read_trials(folder / "trials.csv")
    pd.testing.assert_frame_equal(online.drop(columns=NOT_COMPARED), lab.drop(columns=NOT_COMPARED))


def test_bad_slider_answers_get_400_and_write_nothing(tmp_path, db_url):
    study, client = serve(gsp_config(tmp_path), db_url)
    view = begin(client, participant="S1")
    while view["screen"]["kind"] != "trial":
        view = ack(client, view)
    start = view["screen"]["slider"]["start"]
    other = (start + 3) % K
    before = _snapshot(study.db)
    bad = [
        dict(position=K, moves=[[0.2, K]]), dict(position=-1, moves=[[0.2, -1]]),
        dict(position=1.0, moves=[[0.2, 1]]), dict(position=True, moves=[]),
        dict(position=other, moves=[]),                         # the path must end there
        dict(position=other, moves=[[0.5, other], [0.2, start]]),  # out of time order
        dict(position=other, moves=[[2.0, other]]),             # after the confirm (rt 1.5)
        dict(position=other, moves=[[-0.1, other]]), dict(position=other, moves=[[0.1]]),
        dict(position=other, moves=[[10 ** 400, other]]), dict(position=other, moves="x"),
        dict(position=other, moves=[[0.1, other]] * 2001),
        dict(position=other, moves=[[0.1, other]], side="left"),
        dict(position=other, moves=[[0.1, other]], device="joystick"),
    ]
    for body in bad:
        res = slide(client, view, **body)
        assert res.status_code in (400, 413), (body, res.text)
    res = client.post("/api/answer", json={"trial": view["screen"]["id"], "side": "left",
                                           "rt": 0.5, "onset": 1.0, "gap": None,
                                           "device": "keyboard"})
    assert res.status_code == 400
    assert _snapshot(study.db) == before
    res = slide(client, view, other, [[0.2, (start + 1) % K], [0.3, other]], device="touch")
    assert res.status_code == 200, res.text
    assert study.db.moves(1) == [(0, [[0.2, (start + 1) % K], [0.3, other]])]
    [row] = study.db.rows(1, 3)  # the circle's whole direction, a unit vector
    assert abs(sum(row[f"direction_{i}"] ** 2 for i in range(3)) - 1) < 1e-12


@pytest.mark.slow
def test_kill9_mid_gsp_study_keeps_every_answer_and_everyone_resumes(tmp_path):
    config = gsp_config(tmp_path)
    participants = ["G1", "G2", "G3"]
    study, client = serve(config, f"sqlite:///{tmp_path / 'reference.sqlite'}")
    for pid in participants:  # the same answers in-process, never interrupted
        c = TestClient(client.app)
        view = begin(c, participant=pid)
        while view["screen"]["kind"] != "end":
            if view["screen"]["kind"] != "trial":
                view = ack(c, view)
                continue
            slider = view["screen"]["slider"]
            position = slider_for(pid, view["screen"]["progress"], slider["points"])
            res = slide(c, view, position, [] if position == slider["start"]
                        else [[0.25, position]], rt=0.5)
            view = res.json()
    expected = {f.parent.name: read_trials(f / "trials.csv")
                for f in export(study.db, tmp_path / "reference")}
    n_total = sum(len(df) for df in expected.values())

    url = f"sqlite:///{tmp_path / 'online.sqlite'}"
    server = Server(config, url, tmp_path / "server.log").start()
    db = Database(url)
    results, _ = crash_mid_study(server, db, participants, n_total, replay_every=4)
    got = {f.parent.name: f for f in export(db, tmp_path / "out")}
    for pid, result in results.items():
        df = read_trials(got[f"sub-{pid}"] / "trials.csv")
        ref = expected[f"sub-{pid}"]
        pd.testing.assert_frame_equal(df.drop(columns=NOT_COMPARED),
                                      ref.drop(columns=NOT_COMPARED))
        positions = ((df["gsp_choice"] - df["gsp_shift"]) % df["gsp_points"]).tolist()
        assert set(result["answered"]) <= set(zip(progress_labels(df), positions, strict=True))
        assert result["refused_replays"] >= 1
        moves = pd.read_csv(got[f"sub-{pid}"] / "slider_moves.csv")
        assert moves.groupby("row")["position"].last().to_dict() == {
            row: p for row, p in enumerate(positions)
            if p != (df["gsp_start"].iloc[row] - df["gsp_shift"].iloc[row]) % K}
