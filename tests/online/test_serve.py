"""The online study's HTTP API in-process (the real Starlette app on a real database): the same
screens and rows as a lab session, recruitment ids, bad requests, the experimenter's numbers
and the export that analysis reads."""

from __future__ import annotations

import json
import secrets
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient
from webserver import lab_session, walk

from mcmcp import schema
from mcmcp.config import ConfigError, load_config
from mcmcp.online.app import MAX_BODY, create_app
from mcmcp.online.database import Database, sessions, trials
from mcmcp.online.export import export
from mcmcp.online.study import OnlineStudy
from mcmcp.store import SessionStore, read_trials
from tests.lab.test_session import write_config

TOKEN = "experimenter-secret"
ONLINE = {"consent": "Do you agree?", "completion_code": "CODE-123",
          "redirect_url": "https://example.org/done?cc=CODE-123"}
# timing differs between any two runs; agent is 'latent' in the lab run, 'human' online
# how and when the answers were given, not what was shown or chosen (the lab run is an agent's)
NOT_COMPARED = ["rt", "onset", "gap", "dropped_frames", "timestamp", "agent", "key", "device",
                "date", "frame_rate", "run"]


def online_config(folder: Path, **changes) -> Path:
    return write_config(folder, **{"online": ONLINE, **changes})


def serve(config: Path, url: str) -> tuple[OnlineStudy, TestClient]:
    study = OnlineStudy.open(load_config(config), Database(url), str(config))
    return study, TestClient(create_app(study, TOKEN))


def begin(client: TestClient, **ids) -> dict:
    res = client.post("/api/start", json={
        **ids, "client": {"viewport": [1280, 800], "dpr": 1, "refresh_hz": 60.0}})
    assert res.status_code == 200, res.text
    return res.json()


def step(client: TestClient, view: dict, side: str = "left", rt: float = 0.5) -> dict:
    """One step from `view`: agree, continue, or answer `side`."""
    screen = view["screen"]
    if screen["kind"] == "trial":
        res = client.post("/api/answer", json={"trial": screen["id"], "side": side, "rt": rt,
                                               "onset": 10.0, "gap": 0.3, "device": "keyboard"})
    else:
        body = {"screen": screen["id"]}
        if screen["kind"] == "consent":
            body["consent"] = True
        res = client.post("/api/ack", json=body)
    assert res.status_code == 200, res.text
    return res.json()


def to_trial(client: TestClient, view: dict) -> dict:
    while view["screen"]["kind"] != "trial":
        view = step(client, view)
    return view


def finish(client: TestClient, view: dict, rng: np.random.Generator) -> dict:
    while view["screen"]["kind"] != "end":
        view = step(client, view, side=str(rng.choice(["left", "right"])))
    return view


def test_online_session_is_the_lab_session(tmp_path, db_url, capsys):
    """Answered with the sides a lab session got, the server shows the same screens and saves
    the same rows (gate, catch, repeat, practice rows included) as `python -m mcmcp.run`."""
    config = online_config(tmp_path)
    lab_screens, lab = lab_session(config, tmp_path, capsys)
    shown = lab[lab["kind"] != "gate"]
    study, client = serve(config, db_url)
    answers = iter(zip(shown["response"], shown["rt"], strict=True))

    def answer(view: dict) -> dict:
        assert view["screen"]["progress"] and view["screen"]["prompt"].startswith("Which face")
        side, rt = next(answers)
        return step(client, view, side, float(rt))

    screens, view = walk(client, begin(client, participant="P1"), answer)
    assert screens[0] == "consent"
    assert [s for s in screens[1:] if s != "trial"] == lab_screens
    assert screens.count("trial") == len(shown) == study.n_shown
    assert view["end"] == {"code": "CODE-123", "redirect": ONLINE["redirect_url"]}

    out = tmp_path / "export"
    [folder] = export(study.db, out)
    online = read_trials(folder / "trials.csv")
    assert list(online.columns) == schema.header(3)
    pd.testing.assert_frame_equal(online.drop(columns=NOT_COMPARED), lab.drop(columns=NOT_COMPARED))
    assert (online["agent"] == "human").all()
    answered = online[online["kind"] != "gate"]
    assert (answered["device"] == "keyboard").all()  # step() answers as a key press
    assert answered["key"].tolist() == answered["response"].tolist()  # config keys: left, right
    assert (answered["frame_rate"] == 60.0).all() and answered["date"].notna().all()
    assert online.loc[online["kind"] != "gate", "rt"].tolist() == shown["rt"].tolist()
    meta = json.loads((folder / "session.json").read_text())
    assert meta["status"] == "complete" and meta["window"] == "browser"
    assert meta["rows"] == len(lab) and meta["online"]["consent"] is True
    assert len(meta["checkpoint_sha256"]) == 64 and meta["config"]["name"] == "small"

    from analysis import load_trials

    assert len(load_trials(out)) == len(lab)


def test_reload_second_browser_and_recruitment_ids(tmp_path):
    study, client = serve(online_config(tmp_path), f"sqlite:///{tmp_path / 'db.sqlite'}")
    ids = {"PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1e", "STUDY_ID": "st1", "SESSION_ID": "se1"}
    view = to_trial(client, begin(client, **ids))
    view = step(client, view, "right")
    # reload: the same screen, id and pair; starting again gives it too
    again = client.get("/api/state").json()
    assert again["screen"] == view["screen"] and again["next"] == view["next"]
    assert begin(client, **ids)["screen"] == view["screen"]
    # a second browser (no cookie) with another submission's ids gets no second session
    other = TestClient(client.app)
    res = other.post("/api/start", json={**ids, "SESSION_ID": "se2", "client": {
        "viewport": [800, 600], "dpr": 2, "refresh_hz": None}})
    assert res.status_code == 409 and "another browser" in res.json()["error"]
    assert other.get("/api/state").status_code == 401
    for bad in ("../x", "a/b", "Jane Doe", "", "x" * 33, "P1'; DROP TABLE sessions;--", 7):
        res = other.post("/api/start", json={"participant": bad, "client": {
            "viewport": [1, 1], "dpr": 1, "refresh_hz": 60}})
        assert res.status_code == 400, bad
    res = other.post("/api/start", json={"participant": "A", "PROLIFIC_PID": "B",
                                         "client": {"viewport": [1, 1], "dpr": 1,
                                                    "refresh_hz": 60}})
    assert res.status_code == 400
    [record] = study.db.all_sessions()
    assert record.participant == ids["PROLIFIC_PID"] and record.status == "running"
    assert record.meta["online"]["study_id"] == "st1" and record.meta["online"]["session_id"] == "se1"
    assert record.meta["online"]["client"]["viewport"] == [1280, 800]


def test_declining_consent_records_nothing(tmp_path):
    study, client = serve(online_config(tmp_path), f"sqlite:///{tmp_path / 'db.sqlite'}")
    view = begin(client, participant="D1")
    assert view["screen"]["kind"] == "consent"
    res = client.post("/api/ack", json={"screen": view["screen"]["id"]})  # consent is required
    assert res.status_code == 400
    res = client.post("/api/ack", json={"screen": view["screen"]["id"], "consent": False})
    assert res.status_code == 200 and res.json()["screen"]["kind"] == "declined"
    assert client.get("/api/state").json()["screen"]["kind"] == "declined"
    [record] = study.db.all_sessions()
    assert record.status == "declined" and record.n_rows == 0
    assert export(study.db, tmp_path / "out") == []


def _snapshot(db: Database) -> tuple:
    with db.engine.connect() as conn:
        return (conn.execute(sessions.select()).all(), conn.execute(trials.select()).all())


def test_bad_requests_get_4xx_and_write_nothing(tmp_path):
    study, client = serve(online_config(tmp_path), f"sqlite:///{tmp_path / 'db.sqlite'}")
    view = to_trial(client, begin(client, participant="F1"))
    trial = view["screen"]["id"]
    good = {"trial": trial, "side": "left", "rt": 0.6, "onset": 3.0, "gap": None,
            "device": "mouse"}
    cookie = next(iter(client.cookies.keys()))
    before = _snapshot(study.db)

    def post(path: str, cookies: dict | None = None, **kwargs):
        c = TestClient(client.app, cookies=client.cookies if cookies is None else cookies)
        return c.post(path, **kwargs)

    bad_answers = [
        {**good, "trial": secrets.token_urlsafe(12)},          # not the pending trial
        {**good, "trial": "../../etc/passwd"}, {**good, "trial": ""}, {**good, "trial": 5},
        {**good, "side": "up"}, {**good, "side": None}, {**good, "side": ["left"]},
        {**good, "rt": -1}, {**good, "rt": 0}, {**good, "rt": 1e9}, {**good, "rt": True},
        {**good, "rt": "0.5"}, {**good, "onset": -3}, {**good, "gap": -0.1},
        {**good, "device": "joystick"}, {**good, "device": None},
        {**good, "extra": 1}, {k: v for k, v in good.items() if k != "side"}, {},
    ]
    for body in bad_answers:
        res = post("/api/answer", json=body)
        assert 400 <= res.status_code < 500 and "error" in res.json(), body
    raw = [b"{", b"[]", b"null", b'"left"', b"\xff\xfe\x00", b'{"rt": NaN}',
           b'{"rt": Infinity}', b"[" * 1020 + b"]" * 1020, json.dumps(good)[:-1].encode()]
    for body in raw:
        res = post("/api/answer", content=body, headers={"content-type": "application/json"})
        assert res.status_code == 400, body[:20]
    res = post("/api/answer", content=json.dumps(good), headers={"content-type": "text/plain"})
    assert res.status_code == 415
    huge = json.dumps({**good, "pad": "x" * 10_000_000})
    res = post("/api/answer", content=huge, headers={"content-type": "application/json"})
    assert res.status_code == 413

    def chunks():  # no content-length: the stream itself is cut off
        for _ in range(100):
            yield b"x" * MAX_BODY
    res = post("/api/answer", content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413
    for cookies in ({}, {cookie: secrets.token_urlsafe(24)}, {cookie: "' OR 1=1 --"},
                    {cookie: "x" * 5000}):
        assert post("/api/answer", cookies=cookies, json=good).status_code == 401
        assert post("/api/ack", cookies=cookies, json={"screen": trial}).status_code == 401
    assert post("/api/ack", json={"screen": trial}).status_code == 409  # a trial is on show
    assert client.get("/api/answer").status_code == 405
    res = client.get("/api/experimenter", headers={"authorization": "Bearer wrong"})
    assert res.status_code == 401
    assert _snapshot(study.db) == before

    assert post("/api/answer", json=good).status_code == 200
    after = _snapshot(study.db)
    assert post("/api/answer", json=good).status_code == 409  # the same answer again
    assert _snapshot(study.db) == after


@pytest.mark.filterwarnings("ignore:emotion .* chains differ in length")  # E3 has just begun
def test_experimenter_numbers_match_analysis(tmp_path):
    from analysis import load_trials
    from analysis.diagnostics import catch_accuracy, convergence
    from analysis.load import chain_states

    config = online_config(tmp_path, trials={"per_chain": 10, "practice": 1, "catch_rate": 0.2,
                                             "break_every": 0})
    study, client = serve(config, f"sqlite:///{tmp_path / 'db.sqlite'}")
    rng = np.random.default_rng(3)
    for pid in ("E1", "E2"):
        c = TestClient(client.app)
        finish(c, begin(c, participant=pid), rng)
    c = TestClient(client.app)
    for _ in range(5):  # a third participant part-way through
        step(c, to_trial(c, begin(c, participant="E3")), "left")
    begin(TestClient(client.app), participant="E4")  # still on the consent page

    assert client.get("/api/experimenter").status_code == 401
    res = client.get("/api/experimenter", headers={"authorization": f"Bearer {TOKEN}"})
    assert res.status_code == 200
    data = res.json()
    assert data["counts"] == {"in_progress": 2, "done": 2, "declined": 0, "abandoned": 0,
                              "trials_answered": 2 * study.n_shown + 5}
    by_id = {p["participant"]: p for p in data["participants"]}
    assert by_id["E1"]["shown"] == by_id["E1"]["of"] == study.n_shown
    assert by_id["E4"]["status"] == "consent" and by_id["E4"]["catch_accuracy"] is None

    export(study.db, tmp_path / "out")
    offline = load_trials(tmp_path / "out")
    catch = catch_accuracy(offline).set_index("participant")
    for pid in ("E1", "E2"):
        assert by_id[pid]["catch_n"] == catch.loc[pid, "n_catch"] > 0
        assert by_id[pid]["catch_accuracy"] == pytest.approx(catch.loc[pid, "accuracy"])
    done = offline[offline["participant"].isin(["E1", "E2"])]
    rhat = convergence(chain_states(done), by=[]).set_index("emotion")
    assert {e["emotion"] for e in data["emotions"]} == {"happy", "sad"}
    for e in data["emotions"]:  # the finished sessions' chains (two each)
        assert e["rhat"] == pytest.approx(rhat.loc[e["emotion"], "rhat_max"])
        assert e["n_chains"] == 2 * 2
    own = convergence(chain_states(offline), by=["participant"]).groupby("participant")
    for pid in ("E1", "E2"):  # 10-trial chains can be stuck: R-hat inf travels as "inf"
        expected = own["rhat_max"].max()[pid]
        got = by_id[pid]["rhat"]
        assert float(got) == pytest.approx(expected) if np.isfinite(expected) else got == "inf"
    # the prototype verdicts are the report's, computed on the exported files
    from analysis.checks import inference_checks, trial_facts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        judged = inference_checks(chain_states(done), trial_facts(done),
                                  precision=study.cfg.analysis.precision)
    for pid in ("E1", "E2", "all"):
        mine = judged[judged["participant"] == pid]
        words = [f"{v.emotion}: {v.headline_words}" for v in mine.itertuples()]
        if pid == "all":
            assert [e["prototype"] for e in data["emotions"]] == [w.split(": ", 1)[1]
                                                                   for w in words]
        else:
            assert by_id[pid]["verdicts"] == words and words
    assert by_id["E3"]["verdicts"] == [] and data["precision"] == study.cfg.analysis.precision


def test_export_appends_and_never_overwrites(tmp_path):
    study, client = serve(online_config(tmp_path), f"sqlite:///{tmp_path / 'db.sqlite'}")
    rng = np.random.default_rng(0)
    view = to_trial(client, begin(client, participant="X1"))
    for _ in range(4):
        view = step(client, to_trial(client, view), "right")
    out = tmp_path / "out"
    [folder] = export(study.db, out)
    first = (folder / "trials.csv").read_text()
    assert json.loads((folder / "session.json").read_text())["status"] == "running"
    finish(client, view, rng)
    export(study.db, out)
    full = (folder / "trials.csv").read_text()
    assert full.startswith(first) and len(full) > len(first)
    assert json.loads((folder / "session.json").read_text())["status"] == "complete"
    assert export(study.db, out) == [folder] and (folder / "trials.csv").read_text() == full

    # a lab session of another participant under the same id: refused before any write
    other = TestClient(client.app)
    finish(other, begin(other, participant="Y1"), rng)
    lab = SessionStore.create(tmp_path / "out2", "Y1", 1, 3, {"config": {}})
    lab.close()
    lab_before = (lab.folder / "trials.csv").read_bytes()
    with pytest.raises(ValueError, match="sub-Y1/ses-01 holds another session"):
        export(study.db, tmp_path / "out2")
    assert (lab.folder / "trials.csv").read_bytes() == lab_before
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["sub-Y1"]


def test_server_refuses_a_changed_config_or_no_consent(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study, client = serve(online_config(tmp_path), url)
    begin(client, participant="C1")
    changed = online_config(tmp_path, chains={"per_emotion": 3})
    with pytest.raises(ConfigError, match="chains"):
        OnlineStudy.open(load_config(changed), Database(url), str(changed))
    edited = online_config(tmp_path, online={**ONLINE, "consent": "Reworded consent."})
    OnlineStudy.open(load_config(edited), Database(url), str(edited))  # texts may change
    no_consent = write_config(tmp_path)
    with pytest.raises(ConfigError, match="online.consent"):
        OnlineStudy.open(load_config(no_consent), Database(url), str(no_consent))
