"""`python -m mcmcp.serve` as a real server process on 127.0.0.1, and simulated participants
answering it over HTTP, for tests and benchmarks.

The server runs in its own process group, so `kill9()` takes uvicorn's workers down with it,
as a crash of the machine's server would. `wait_ready` polls until the page is served (or the
process has died, then its output is in the error): no guessed sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
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
                 workers: int = 1, token: str = "experimenter-secret", root: Path = ROOT):
        self.config, self.db_url, self.log_path = config, db_url, log
        self.port = port or free_port()
        self.workers, self.token = workers, token
        self.root = root  # the checkout whose code runs (benchmarks: today's code beside main)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> Server:
        cmd = [sys.executable, "-m", "mcmcp.serve", "--config", str(self.config), "--db",
               self.db_url, "--port", str(self.port), "--workers", str(self.workers)]
        env = {**os.environ, "MCMCP_EXPERIMENTER_TOKEN": self.token}
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_ready(timeout)
        except BaseException:
            if self.proc.poll() is None:
                self.kill9()
            raise
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


def side_for(participant: str, progress: str) -> str:
    """The side a simulated person picks on a trial: fixed by who they are and which trial
    (the progress line names it), so a session answered twice gets the same answers."""
    digest = hashlib.sha256(f"{participant}|{progress}".encode()).digest()
    return "left" if digest[0] % 2 else "right"


def slider_for(participant: str, progress: str, k: int) -> int:
    """The slider position a simulated person confirms on a GSP trial (as `side_for`)."""
    return hashlib.sha256(f"{participant}|{progress}".encode()).digest()[1] % k


class Stopped(Exception):
    """The participant was stopped part-way (`take_part_http(stop=...)`)."""


async def take_part_http(client: httpx2.AsyncClient, participant: str, deadline: float,
                         replay_every: int = 0, think: float = 0.0,
                         servers: tuple[str, ...] = ("",), stop: float | None = None,
                         late: tuple[int, float] | None = None, leave: int | None = None,
                         counter: list[int] | None = None) -> dict:
    """One participant through a whole session over HTTP, as the page does it: start, agree,
    continue, answer `side_for` (a slider: `slider_for`); a lost connection is retried with the
    same request (as the page does) until `deadline` (time.monotonic()); a 409 reloads the
    state. replay_every: resend every n-th answer right after it was accepted (it must be
    refused with 409). think: mean seconds spent looking at each pair before answering (uniform
    0.5-1.5 times it), a person's pace; 0 answers at once. servers: base URLs, one drawn at
    random for every request (a proxy without stickiness); stop: time.monotonic() at which to
    leave part-way; late: (k, seconds): sleep that long before answering the k-th trial
    answered (past its shared chain's lease); leave: close the page when the leave-th trial is
    on show (never answered); counter: a one-item list every accepted answer adds one to
    (shared by a crowd of participants). A `wait` screen (shared chains, none free) is
    polled as the page does, after the `retry` seconds it names.

    Returns answered: [(progress, side or slider position)] accepted with 200; latency: seconds
    from sending an answer to having the next screen; server: seconds the server says it spent
    on each of those answers (its Server-Timing header, where it sends one); refused_replays;
    refused: [(progress, side, message)] of answers refused with 409; waits: wait screens
    seen; status codes seen."""
    out = {"answered": [], "latency": [], "server": [], "refused_replays": 0, "codes": [],
           "refused": [], "waits": 0, "counter": counter if counter is not None else [0]}
    pace = random.Random(participant)

    async def call(method: str, path: str, body: dict | None = None):
        while True:
            if stop is not None and time.monotonic() > stop:
                raise Stopped
            if time.monotonic() > deadline:
                raise TimeoutError(f"{participant}: the study did not finish in time")
            try:
                res = await client.request(method, pace.choice(servers) + path, json=body,
                                           timeout=60)
            except httpx2.TransportError:
                await asyncio.sleep(0.1)  # the server is down or restarting: same request again
                continue
            if res.status_code >= 500:
                raise RuntimeError(f"{participant}: {res.status_code} {res.text}")
            out["codes"].append(res.status_code)
            return res

    try:
        res = await call("POST", "/api/start", {"participant": participant, "client": {
            "viewport": [1280, 800], "dpr": 1, "refresh_hz": 60.0}})
        if res.status_code != 200:
            raise RuntimeError(f"{participant}: {res.status_code} {res.text}")
        await _steps(participant, res.json(), call, out, replay_every, think, pace, late,
                     leave)
    except Stopped:
        pass
    return out


async def _steps(participant, view, call, out, replay_every, think, pace, late,
                 leave=None) -> None:
    while view["screen"]["kind"] != "end":
        screen = view["screen"]
        if screen["kind"] == "wait":
            out["waits"] += 1
            await asyncio.sleep(view["retry"])
            res = await call("GET", "/api/state")
        elif screen["kind"] == "trial":
            if leave is not None and len(out["answered"]) + len(out["refused"]) + 1 == leave:
                return
            side = side_for(participant, screen["progress"])
            if think:
                await asyncio.sleep(think * pace.uniform(0.5, 1.5))
            if late is not None and len(out["answered"]) + len(out["refused"]) + 1 == late[0]:
                await asyncio.sleep(late[1])
            body = {"trial": screen["id"], "side": side, "rt": 0.5, "onset": 1.0, "gap": None,
                    "device": "keyboard"}
            if "slider" in screen:  # a GSP trial: a slider position and the handle's path
                side = slider_for(participant, screen["progress"], screen["slider"]["points"])
                moves = [] if side == screen["slider"]["start"] else [[0.25, side]]
                body = {**{k: v for k, v in body.items() if k != "side"}, "position": side,
                        "moves": moves}
            sent = time.perf_counter()
            res = await call("POST", "/api/answer", body)
            if res.status_code == 200:
                out["latency"].append(time.perf_counter() - sent)
                timing = res.headers.get("server-timing", "")
                if timing.startswith("app;dur="):
                    out["server"].append(float(timing.removeprefix("app;dur=")) / 1e3)
                out["answered"].append((screen["progress"], side))
                out["counter"][0] += 1
                if replay_every and len(out["answered"]) % replay_every == 0:
                    again = await call("POST", "/api/answer", body)
                    assert again.status_code == 409, again.text
                    out["refused_replays"] += 1
            elif res.status_code == 409:
                out["refused"].append((screen["progress"], side, res.json()["error"]))
        else:
            body = {"screen": screen["id"]}
            if screen["kind"] == "consent":
                body["consent"] = True
            res = await call("POST", "/api/ack", body)
        if res.status_code == 409:  # answered before the connection broke: where are we?
            res = await call("GET", "/api/state")
        if res.status_code != 200:
            raise RuntimeError(f"{participant}: {res.status_code} {res.text}")
        view = res.json()


def progress_labels(shown) -> list[str]:
    """The progress line each shown trial (a trials DataFrame without gate rows, in order) had
    on screen: 'practice k of n' or 'k / n'."""
    n_practice = int((shown["kind"] == "practice").sum())
    n_real = len(shown) - n_practice
    return [f"practice {i + 1} of {n_practice}" if i < n_practice
            else f"{i + 1 - n_practice} / {n_real}" for i in range(len(shown))]
