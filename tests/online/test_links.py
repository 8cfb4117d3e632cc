"""Resuming without the cookie, safely, over the real app on a real database: a recruitment
submission's ids bring its session to a new browser, signed lab links keep guessed ids from
being claimed, and the experimenter releases, resets and ends sessions (recorded, trials kept)."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from mcmcp.config import ConfigError, load_config
from mcmcp.links import main as links_cli
from mcmcp.online.app import create_app
from mcmcp.online.database import Database
from mcmcp.online.export import export
from mcmcp.online.links import link_secret, sign
from mcmcp.online.study import OnlineStudy
from mcmcp.store import read_trials
from tests.online.test_serve import (
    ONLINE,
    TOKEN,
    _snapshot,
    online_config,
    serve,
    step,
    to_trial,
)

CLIENT = {"viewport": [1280, 800], "dpr": 1, "refresh_hz": 60.0}
SECRET = "a-study-secret-0123456789"


def start(client: TestClient, **link):
    return client.post("/api/start", json={**link, "client": CLIENT})


def answer_some(client: TestClient, view: dict, n: int) -> dict:
    view = to_trial(client, view)
    for _ in range(n):
        view = to_trial(client, step(client, view, "left"))
    return view


def test_recruitment_ids_resume_in_another_browser(tmp_path):
    study, first = serve(online_config(tmp_path), f"sqlite:///{tmp_path / 'db.sqlite'}")
    ids = {"PROLIFIC_PID": "60a1b2c3d4e5f60718293a4b", "STUDY_ID": "st1", "SESSION_ID": "se1"}
    view = answer_some(first, start(first, **ids).json(), 3)
    second = TestClient(first.app)  # another device: no cookie
    res = start(second, **ids)
    assert res.status_code == 200, res.text
    assert res.json()["screen"]["images"] == view["screen"]["images"]  # exactly where they were
    assert first.get("/api/state").status_code == 401  # the session moved to the new browser
    for other in ({**ids, "SESSION_ID": "se2"}, {**ids, "STUDY_ID": "st2"},
                  {"PROLIFIC_PID": ids["PROLIFIC_PID"]}, {"participant": ids["PROLIFIC_PID"]}):
        res = start(TestClient(first.app), **other)
        assert res.status_code == 409, other
    view = step(second, res_view := second.get("/api/state").json(), "right")
    assert view["screen"]["id"] != res_view["screen"]["id"]
    [folder] = export(study.db, tmp_path / "out")
    events = json.loads((folder / "session.json").read_text())["events"]
    assert [(e["kind"], e["by"]) for e in events] == [("resumed", "recruitment ids")]
    assert len(read_trials(folder / "trials.csv")) >= 4


def test_signed_links_cannot_be_guessed_and_resume(tmp_path, capsys):
    config = online_config(tmp_path, online={**ONLINE, "participant_links": "signed"})
    cfg = load_config(config)
    with pytest.raises(ConfigError, match="MCMCP_LINK_SECRET"):
        link_secret(cfg.online, {}, str(config))
    study = OnlineStudy.open(cfg, Database(f"sqlite:///{tmp_path / 'db.sqlite'}"), str(config),
                             link_secret(cfg.online, {"MCMCP_LINK_SECRET": SECRET}))
    first = TestClient(create_app(study, TOKEN))
    before = _snapshot(study.db)
    for link in ({"participant": "P002"}, {"participant": "P002", "sig": sign(SECRET, "small",
                                                                              "P003")},
                 {"participant": "P002", "sig": sign("another-secret-123456", "small", "P002")},
                 {"participant": "P002", "sig": sign(SECRET, "other_study", "P002")}):
        res = start(first, **link)
        assert res.status_code == 403 and "not valid" in res.json()["error"], link
    assert _snapshot(study.db) == before  # a refused link writes nothing

    good = {"participant": "P002", "sig": sign(SECRET, "small", "P002")}
    view = answer_some(first, start(first, **good).json(), 2)
    res = start(TestClient(first.app), **good)  # the same link on another device resumes
    assert res.status_code == 200 and res.json()["screen"]["images"] == view["screen"]["images"]
    # a recruitment-style link cannot get round the signature with a lab id
    assert start(TestClient(first.app), PROLIFIC_PID="P003", STUDY_ID="s",
                 SESSION_ID="t").status_code == 403

    # the links command signs with the same secret
    import os
    os.environ["MCMCP_LINK_SECRET"] = SECRET
    try:
        assert links_cli(["--config", str(config), "--base", "https://x.org/faces",
                          "P002", "P007"]) == 0
    finally:
        del os.environ["MCMCP_LINK_SECRET"]
    out = capsys.readouterr().out.split()
    assert out[0] == f"https://x.org/faces/?participant=P002&sig={good['sig']}"
    assert out[1].endswith(f"sig={sign(SECRET, 'small', 'P007')}")


def test_recruitment_only_studies_refuse_lab_links(tmp_path):
    study, client = serve(online_config(tmp_path, online={**ONLINE,
                                                          "participant_links": "recruitment"}),
                          f"sqlite:///{tmp_path / 'db.sqlite'}")
    before = _snapshot(study.db)
    for link in ({"participant": "P001"}, {"PROLIFIC_PID": "P001"},
                 {"PROLIFIC_PID": "P001", "STUDY_ID": "st1"}):
        res = start(TestClient(client.app), **link)
        assert res.status_code == 403 and "recruitment site" in res.json()["error"], link
    assert _snapshot(study.db) == before
    ids = {"PROLIFIC_PID": "60a1b2c3d4e5f60718293a4b", "STUDY_ID": "st1", "SESSION_ID": "se1"}
    assert start(client, **ids).status_code == 200


def manage(client: TestClient, uid: str, action: str, token: str = TOKEN):
    return client.post("/api/experimenter/session", json={"uid": uid, "action": action},
                       headers={"authorization": f"Bearer {token}"})


def test_experimenter_releases_resets_and_ends_sessions(tmp_path, db_url):
    study, a = serve(online_config(tmp_path), db_url)
    view = answer_some(a, start(a, participant="P010").json(), 3)
    b = TestClient(a.app)  # the participant lost their cookie: another browser
    assert start(b, participant="P010").status_code == 409
    [record] = study.db.all_sessions()
    assert manage(a, record.uid, "release", token="wrong").status_code == 401
    assert manage(a, "0" * 32, "release").status_code == 404
    assert manage(a, record.uid, "delete").status_code == 400
    assert manage(a, record.uid, "release").status_code == 200
    assert a.get("/api/state").status_code == 401  # the old browser lost it
    res = start(b, participant="P010")
    assert res.status_code == 200 and res.json()["screen"]["images"] == view["screen"]["images"]
    assert start(TestClient(a.app), participant="P010").status_code == 409  # released once

    c = TestClient(a.app)  # ended: the page says so, nothing more is taken, rows kept
    ended = answer_some(c, start(c, participant="P011").json(), 2)
    uid = study.db.latest("small", "P011").uid
    assert manage(a, uid, "end").json()["status"] == "ended"
    assert c.get("/api/state").json()["screen"]["kind"] == "ended"
    res = c.post("/api/answer", json={"trial": ended["screen"]["id"], "side": "left", "rt": 0.5,
                                      "onset": 1.0, "gap": None, "device": "keyboard"})
    assert res.status_code == 409
    assert manage(a, uid, "end").status_code == 409  # already over
    res = start(TestClient(a.app), participant="P011")  # its link, in another browser
    assert res.status_code == 409 and "ended your session" in res.json()["error"]

    d = TestClient(a.app)  # reset: kept as session 1, the link starts session 2
    answer_some(d, start(d, participant="P012").json(), 2)
    uid = study.db.latest("small", "P012").uid
    assert manage(a, uid, "reset").json()["status"] == "reset"
    assert d.get("/api/state").json()["screen"]["kind"] == "reset"
    fresh = start(d, participant="P012").json()
    assert fresh["screen"]["kind"] == "consent" and study.db.latest("small", "P012").session == 2
    to_trial(d, fresh)

    numbers = a.get("/api/experimenter", headers={"authorization": f"Bearer {TOKEN}"}).json()
    rows = {(p["participant"], p["session"]): p for p in numbers["participants"]}
    assert rows[("P011", 1)]["status"] == "ended" and rows[("P012", 1)]["status"] == "reset"
    assert rows[("P012", 2)]["uid"] == study.db.latest("small", "P012").uid

    folders = {f.relative_to(tmp_path / "out").as_posix(): f
               for f in export(study.db, tmp_path / "out")}
    assert set(folders) == {"sub-P010/ses-01", "sub-P011/ses-01", "sub-P012/ses-01"}

    def meta(name):
        return json.loads((folders[name] / "session.json").read_text())
    assert [(e["kind"], e["by"]) for e in meta("sub-P010/ses-01")["events"]] == [
        ("released", "experimenter"), ("resumed", "released by the experimenter")]
    assert meta("sub-P011/ses-01")["status"] == "ended"
    assert meta("sub-P012/ses-01")["status"] == "reset"
    for name in ("sub-P011/ses-01", "sub-P012/ses-01"):  # answered trials are never deleted
        assert (read_trials(folders[name] / "trials.csv")["kind"] != "gate").sum() == 2
