"""Servers that tests start do not outlive a killed test run (tests/orphans.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.online.test_serve import online_config

pytestmark = pytest.mark.slow

RUN = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
sys.path[:0] = [{tests!r}, {root!r}]
from pgcluster import Cluster
from webserver import Server

cluster = Cluster().start()
server = Server(Path({config!r}), "sqlite:///" + {db!r}, Path({log!r}))
with ThreadPoolExecutor(1) as pool:  # as benchmarks start servers: from a thread that ends
    pool.submit(server.start).result()
postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
print(json.dumps({{"postgres": postmaster, "server": server.proc.pid}}), flush=True)
sys.stdin.read()  # until killed
"""


def _gone(pid: int) -> bool:
    """The process has ended: no such process, or a zombie nobody reaps (a container's init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_test_run_takes_its_postgres_and_server_down(tmp_path):
    config = online_config(tmp_path)
    root = Path(__file__).resolve().parents[2]
    script = RUN.format(tests=str(root / "tests"), root=str(root), config=str(config),
                        db=str(tmp_path / "study.db"), log=str(tmp_path / "server.log"))
    run = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=root,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(run.stdout.readline())
        assert not any(_gone(pid) for pid in pids.values()), pids
    finally:
        os.kill(run.pid, signal.SIGKILL)  # as a CI timeout would: no fixture, no atexit
        run.wait(timeout=60)
    deadline = time.monotonic() + 120
    while not all(_gone(pid) for pid in pids.values()):
        assert time.monotonic() < deadline, \
            f"still running after the test run was killed: {pids}"
        time.sleep(0.1)
