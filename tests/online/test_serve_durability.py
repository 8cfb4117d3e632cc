"""Nothing is acknowledged that is not durable: with the SQLite file deleted, read-only or on a
full disk, or PostgreSQL down, answers and new participants get 503 (one log line says why),
nothing is written, and once the database is back the same participants go on where they were.
Real files, a real tmpfs, a real PostgreSQL cluster stopped as a crash would stop it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.online.test_serve import begin, online_config, serve, to_trial

CLIENT = {"viewport": [1280, 800], "dpr": 1, "refresh_hz": 60.0}


def answer(client: TestClient, view: dict):
    return client.post("/api/answer", json={"trial": view["screen"]["id"], "side": "left",
                                            "rt": 0.5, "onset": 10.0, "gap": None,
                                            "device": "keyboard"})


def started(tmp_path: Path, url: str):
    """A study with participant A part-way through: (study, A's client, A's view)."""
    study, client = serve(online_config(tmp_path), url)
    view = to_trial(client, begin(client, participant="A1"))
    for _ in range(3):
        res = answer(client, view)
        assert res.status_code == 200, res.text
        view = to_trial(client, res.json())
    return study, client, view


def refused(client: TestClient, view: dict, capsys, cause: str) -> None:
    """The answer and a new participant get 503 with a message to wait; one log line names
    `cause`."""
    res = answer(client, view)
    assert res.status_code == 503 and "wait" in res.json()["error"]
    assert res.headers["retry-after"]
    again = answer(client, view)
    assert again.status_code == 503
    res = TestClient(client.app).post("/api/start", json={"participant": "B1", "client": CLIENT})
    assert res.status_code == 503
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "unavailable" in ln]
    assert len(lines) == 1 and cause in lines[0], lines


def goes_on(study, client: TestClient, view: dict, capsys) -> None:
    """Back: the same trial is answered once, and the log says so."""
    shown = sum(r.shown for r in study.db.all_sessions())
    res = answer(client, view)
    assert res.status_code == 200, res.text
    assert sum(r.shown for r in study.db.all_sessions()) == shown + 1
    assert "available again" in capsys.readouterr().err
    assert study.db.counts() == {r.id: r.n_rows for r in study.db.all_sessions()}


def test_deleted_sqlite_file_acknowledges_nothing(tmp_path, capsys):
    path = tmp_path / "online.sqlite"
    study, client, view = started(tmp_path, f"sqlite:///{path}")
    path.unlink()
    refused(client, view, capsys, "is gone")
    assert not path.exists()  # never silently replaced by a new, empty database


def test_deleted_sqlite_wal_acknowledges_nothing(tmp_path, capsys):
    """The write-ahead log holds committed answers until SQLite copies them into the file:
    deleting it mid-study would lose them at the next restart."""
    path = tmp_path / "online.sqlite"
    study, client, view = started(tmp_path, f"sqlite:///{path}")
    Path(f"{path}-wal").unlink()
    refused(client, view, capsys, "write-ahead log")


def test_read_only_sqlite_file_acknowledges_nothing(tmp_path, capsys):
    path = tmp_path / "online.sqlite"
    study, client, view = started(tmp_path, f"sqlite:///{path}")
    # root may write any file it can open: only the immutable flag stops it, as a read-only
    # mount would; anyone else loses write permission
    lock = ["chattr", "+i", str(path)] if os.geteuid() == 0 else ["chmod", "a-w", str(path)]
    unlock = ["chattr", "-i", str(path)] if os.geteuid() == 0 else ["chmod", "u+w", str(path)]
    subprocess.run(lock, check=True)
    try:
        refused(client, view, capsys, "read-only")
    finally:
        subprocess.run(unlock, check=True)
    goes_on(study, client, view, capsys)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only: tests run as root in CI)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                         capture_output=True, text=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def test_full_disk_acknowledges_nothing(tmp_path, small_disk, capsys):
    study, client, view = started(tmp_path, f"sqlite:///{small_disk / 'online.sqlite'}")
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    refused(client, view, capsys, "full")
    filler.unlink()
    goes_on(study, client, view, capsys)


def test_postgres_down_acknowledges_nothing(tmp_path, capsys):
    from pgcluster import Cluster

    with Cluster() as pg:
        study, client, view = started(tmp_path, pg.new_database())
        pg.halt()
        try:
            refused(client, view, capsys, "")
        finally:
            pg.resume()
        goes_on(study, client, view, capsys)


def test_processes_starting_together_on_a_new_postgres_database(postgres):
    """Two server processes started at once (a systemd pair) both open a new database: one
    creates the tables, neither fails."""
    from concurrent.futures import ThreadPoolExecutor

    from mcmcp.online.database import Database

    for _ in range(3):
        url = postgres.new_database()
        with ThreadPoolExecutor(4) as pool:
            for db in pool.map(Database, [url] * 4):
                assert db.all_sessions() == []
                db.close()
