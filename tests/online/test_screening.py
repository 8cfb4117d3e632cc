"""The recruitment site's flow and screening over the real app on a real database: codes and
return links on declining and on screening out, the device and window policy from the YAML,
what is stored about the browser, full-screen exits recorded, and the YAML keys checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mcmcp.config import ConfigError, load_config
from mcmcp.online.export import export
from tests.online.test_serve import ONLINE, _snapshot, online_config, serve, step, to_trial

ROOT = Path(__file__).resolve().parents[2]
CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
PHONE = ("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.0.0 Mobile Safari/537.36")
IPAD = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.1 Safari/605.1.15")  # iPadOS asks for desktop pages
POLICY = {**ONLINE, "decline_code": "NOCONSENT1",
          "decline_url": "https://app.prolific.com/submissions/complete?cc=NOCONSENT1",
          "screenout_code": "SCREENOUT1",
          "screenout_url": "https://app.prolific.com/submissions/complete?cc=SCREENOUT1",
          "devices": ["desktop"], "min_window": [1000, 700], "fullscreen": True}
DESKTOP = {"viewport": [1280, 800], "screen": [1920, 1080], "dpr": 1.25, "refresh_hz": 144.0,
           "pointer": "fine", "touch_points": 0}


def start(client: TestClient, pid: str, agent: str = CHROME, **client_info):
    return client.post("/api/start", headers={"user-agent": agent},
                       json={"participant": pid, "client": {**DESKTOP, **client_info}})


def test_decline_and_screen_out_end_with_the_recruitment_codes(tmp_path):
    study, client = serve(online_config(tmp_path, online=POLICY),
                          f"sqlite:///{tmp_path / 'db.sqlite'}")
    before = _snapshot(study.db)
    phone = start(client, "M1", PHONE, viewport=[412, 915], pointer="coarse", touch_points=5)
    tablet = start(client, "M2", IPAD, viewport=[1180, 820], pointer="coarse", touch_points=5)
    small = start(client, "M3", viewport=[900, 600])
    for res in (phone, tablet):
        assert res.status_code == 200 and "set-cookie" not in res.headers
        view = res.json()
        assert view["screen"]["kind"] == "screened_out"
        assert "desktop or laptop" in view["screen"]["text"]
        assert view["end"] == {"code": "SCREENOUT1", "redirect": POLICY["screenout_url"]}
    assert "a phone" in phone.json()["screen"]["text"]
    assert "a tablet" in tablet.json()["screen"]["text"]
    view = small.json()
    assert view["screen"]["kind"] == "resize" and "1000 x 700" in view["screen"]["text"]
    assert "900 x 600" in view["screen"]["text"] and "set-cookie" not in small.headers
    assert _snapshot(study.db) == before  # nobody screened is stored

    view = start(client, "M3").json()  # the window made larger: the study starts
    assert view["screen"]["kind"] == "consent"
    assert view["display"]["min_window"] == [1000, 700] and view["display"]["fullscreen"]
    res = client.post("/api/ack", json={"screen": view["screen"]["id"], "consent": False})
    view = res.json()
    assert view["screen"]["kind"] == "declined"
    assert view["end"] == {"code": "NOCONSENT1", "redirect": POLICY["decline_url"]}
    assert client.get("/api/state").json()["end"]["code"] == "NOCONSENT1"


def test_browser_facts_are_checked_and_stored(tmp_path):
    study, client = serve(online_config(tmp_path, online=POLICY),
                          f"sqlite:///{tmp_path / 'db.sqlite'}")
    before = _snapshot(study.db)
    for bad in ({"dpr": 10 ** 400}, {"dpr": 0}, {"refresh_hz": 10 ** 400}, {"viewport": [-1, 5]},
                {"screen": [1920]}, {"pointer": "laser"}, {"touch_points": 1000},
                {"touch_points": True}, {"colour": "blue"}):
        res = start(client, "B1", **bad)
        assert res.status_code == 400 and "client" in res.json()["error"], bad
    assert _snapshot(study.db) == before
    view = to_trial(client, start(client, "B1").json())
    [record] = study.db.all_sessions()
    stored = record.meta["online"]["client"]
    assert stored == {**DESKTOP, "user_agent": CHROME, "browser": "Chrome 120",
                      "device": "desktop"}

    # full-screen exits: recorded with where the participant was, exported
    for kind in ("fullscreen_exit", "fullscreen_enter", "fullscreen_exit"):
        assert client.post("/api/event", json={"kind": kind}).status_code == 200
    assert client.post("/api/event", json={"kind": "tab_hidden"}).status_code == 400
    assert TestClient(client.app).post("/api/event",
                                       json={"kind": "fullscreen_exit"}).status_code == 401
    step(client, view, "left")
    [folder] = export(study.db, tmp_path / "out")
    meta = json.loads((folder / "session.json").read_text())
    assert meta["online"]["client"]["screen"] == [1920, 1080]
    assert [(e["kind"], e["on_show"]) for e in meta["events"]] == [
        ("fullscreen_exit", "trial"), ("fullscreen_enter", "trial"), ("fullscreen_exit", "trial")]


@pytest.mark.parametrize("key, value, allowed", [
    ("min_window", [0, 600], "[width, height]"), ("min_window", 800, "[width, height]"),
    ("devices", ["desktop", "watch"], "devices allowed"), ("devices", [], "devices allowed"),
    ("fullscreen", "yes", "true or false"),
    ("participant_links", "closed", "open, signed, recruitment"),
    ("decline_url", "ftp://x.org/", "http"), ("screenout_code", "two words", "letters"),
    ("link_secret_env", "1SECRET", "environment variable"),
])
def test_online_keys_are_checked(tmp_path, key, value, allowed):
    config = online_config(tmp_path, online={**ONLINE, key: value})
    with pytest.raises(ConfigError, match=f"online.{key}") as err:
        load_config(config)
    assert allowed in str(err.value)


def test_happy_yaml_has_the_recruitment_codes():
    online = load_config(ROOT / "experiments/happy.yaml", require_checkpoint=False).online
    assert online.completion_code and online.decline_code and online.screenout_code
    assert online.devices == ("desktop",) and online.min_window is not None
