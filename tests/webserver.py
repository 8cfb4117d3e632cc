"""`python -m mcmcp.serve` as a real server process on 127.0.0.1, for tests and benchmarks.

The server runs in its own process group, so `kill9()` takes uvicorn's workers down with it,
as a crash of the machine's server would. `wait_ready` polls until the page is served (or the
process has died, then its output is in the error): no guessed sleeps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"]
CHROMIUM = "/usr/bin/chromium"  # Debian's package; browsers are never downloaded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `python -m mcmcp.serve` process; `with Server(...) as server: server.url`."""

    def __init__(self, config: Path, db_url: str, log: Path, *, port: int | None = None,
                 workers: int = 1, token: str = "experimenter-secret"):
        self.config, self.db_url, self.log_path = config, db_url, log
        self.port = port or free_port()
        self.workers, self.token = workers, token
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> Server:
        cmd = [sys.executable, "-m", "mcmcp.serve", "--config", str(self.config), "--db",
               self.db_url, "--port", str(self.port), "--workers", str(self.workers)]
        env = {**os.environ, "MCMCP_EXPERIMENTER_TOKEN": self.token}
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n"
                                   f"{self.log_path.read_text()}")
            try:
                if httpx2.get(self.url + "/", timeout=30).status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.1)  # connection refused: the port is not bound yet
        raise TimeoutError(f"no server on {self.url} after {timeout} s:\n"
                           f"{self.log_path.read_text()}")

    def kill9(self) -> None:
        """SIGKILL to the whole server (uvicorn and its workers), then reap it."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
