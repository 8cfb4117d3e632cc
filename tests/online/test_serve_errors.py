"""Clear errors: a number no measurement can be gets 400 naming the field, never a 500; every
start-up mistake ends `python -m mcmcp.serve` with one line and exit status 2, never a
traceback; a made-up experimenter token goes to a file only its owner can read, never to the
output."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import httpx2
from webserver import ROOT, free_port

from tests.online.test_serve import begin, online_config, serve, to_trial

HUGE = 10 ** 400  # JSON allows it; no float does


def test_out_of_range_numbers_get_400(tmp_path):
    study, client = serve(online_config(tmp_path), f"sqlite:///{tmp_path / 'db.sqlite'}")
    view = to_trial(client, begin(client, participant="N1"))
    good = {"trial": view["screen"]["id"], "side": "left", "rt": 0.6, "onset": 3.0, "gap": 0.2,
            "device": "mouse"}
    for name in ("rt", "onset", "gap"):
        for value in (HUGE, -HUGE):
            res = client.post("/api/answer", json={**good, name: value})
            assert res.status_code == 400, (name, res.text)
            assert res.json()["error"].startswith(f"{name} must be a number")
            assert len(res.json()["error"]) < 200  # the number is not echoed in full
    for client_info in ({"viewport": [1280, 800], "dpr": HUGE, "refresh_hz": 60},
                        {"viewport": [1280, 800], "dpr": 1, "refresh_hz": HUGE},
                        {"viewport": [HUGE, 800], "dpr": 1, "refresh_hz": 60}):
        res = type(client)(client.app).post("/api/start", json={"participant": "N2",
                                                                "client": client_info})
        assert res.status_code == 400, res.text
    assert client.post("/api/answer", json=good).status_code == 200


def _serve(cwd, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mcmcp.serve", *args], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_start_up_mistakes_end_in_one_line(tmp_path):
    import yaml

    config = online_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    no_faces = tmp_path / "no_faces.yaml"
    no_faces.write_text(yaml.safe_dump({**data, "model": {**data["model"],
                                                          "faces": str(tmp_path / "x.h5")}}))
    sqlite = f"sqlite:///{tmp_path / 'ok.sqlite'}"
    unwritable = tmp_path / "locked"
    unwritable.mkdir()
    mistakes = {  # what is wrong -> (arguments, words the one line must say)
        "face store missing": (["--config", str(no_faces), "--db", sqlite], "model.faces"),
        "URL unparsable": (["--config", str(config), "--db", "postgresql+psycopg://u@h:x/db"],
                           "database URL"),
        "PostgreSQL unreachable": (["--config", str(config), "--db",
                                    f"postgresql+psycopg://postgres@/db?host={tmp_path}"
                                    "&port=5999"], "cannot open the database"),
        "SQLite folder unwritable": (["--config", str(config), "--db",
                                      f"sqlite:///{unwritable / 'sub' / 'db.sqlite'}"],
                                     "cannot create the database file"),
        "port out of range": (["--config", str(config), "--db", sqlite, "--port", "70000"],
                              "70000"),
    }
    # root writes anywhere it can open: the immutable flag locks the folder for it too
    lock = ["chattr", "+i"] if os.geteuid() == 0 else ["chmod", "a-w"]
    subprocess.run([*lock, str(unwritable)], check=True)
    try:
        procs = {what: _serve(tmp_path, *args) for what, (args, _) in mistakes.items()}
        for what, proc in procs.items():
            out, err = proc.communicate(timeout=240)
            lines = err.strip().splitlines()
            assert proc.returncode == 2, (what, err)
            assert "Traceback" not in err, (what, err)
            if lines[0].startswith("usage:"):  # argparse: its usage, then the one line
                lines = lines[-1:]
            assert len(lines) == 1 and mistakes[what][1] in lines[0], (what, err)
    finally:
        subprocess.run(["chattr", "-i", str(unwritable)] if os.geteuid() == 0
                       else ["chmod", "u+w", str(unwritable)], check=True)


def test_made_up_token_goes_to_a_private_file_not_the_output(tmp_path):
    config = online_config(tmp_path)
    port = free_port()
    env = {"MCMCP_EXPERIMENTER_TOKEN": ""}
    proc = _serve(tmp_path, "--config", str(config), "--port", str(port), env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/").status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.1)
        path = tmp_path / "participants_data" / "online-small.token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = path.read_text().strip()
        res = httpx2.get(f"http://127.0.0.1:{port}/api/experimenter",
                         headers={"authorization": f"Bearer {token}"})
        assert res.status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert token not in out + err
    assert str(path.relative_to(tmp_path)) in out  # where to find it


def test_token_file_is_kept_private_and_reused(tmp_path, monkeypatch):
    from mcmcp.config import load_config
    from mcmcp.serve import experimenter_token

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MCMCP_EXPERIMENTER_TOKEN", raising=False)
    cfg = load_config(online_config(tmp_path))
    token, where = experimenter_token(cfg)
    path = tmp_path / where
    os.chmod(path, 0o644)
    assert experimenter_token(cfg) == (token, where)  # the same token after a restart
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
