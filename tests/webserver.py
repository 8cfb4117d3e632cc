"""`python -m mcmcp.serve` as a real server process on 127.0.0.1, simulated participants answering
it over HTTP (and kill -9 of it mid-study), and a session walked in-process beside the lab's, for
tests and benchmarks.

The server runs in its own process group, so `kill9()` takes uvicorn's workers down with it,
as a crash of the machine's server would, and it ends when the process that started it ends
(`orphans.popen`), even when that is killed before its fixtures stop it. `wait_ready` polls
until the page is served (or the process has died, then its output is in the error): no
guessed sleeps.
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
from orphans import popen

ROOT = Path(__file__).resolve().parent.parent
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"]
CHROMIUM = "/usr/bin/chromium"  # Debian's package; browsers are never downloaded


# How long a browser waits for a state (a screen, a selector, a redirect) before the test fails:
# on a loaded 2-core machine a screen can take longer than Playwright's default 30 s, and a
# longer bound costs nothing when the state comes early.
BROWSER_WAIT_MS = 180_000


async def patient_context(browser, **options):
    """`browser.new_context(**options)` (Playwright) whose pages wait up to BROWSER_WAIT_MS."""
    context = await browser.new_context(**options)
    context.set_default_timeout(BROWSER_WAIT_MS)
    return context


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
            self.proc = popen(cmd, cwd=self.root, env=env, stdout=log,
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
                         keep_faces: int = 0, late: tuple[int, float] | None = None,
                         leave: int | None = None, counter: list[int] | None = None) -> dict:
    """One participant through a whole session over HTTP, as the page does it: start, agree,
    continue, answer `side_for` (a slider: `slider_for`); a lost connection is retried with the
    same request (as the page does) until `deadline` (time.monotonic()); a 409 reloads the
    state. replay_every: resend every n-th answer right after it was accepted (it must be
    refused with 409). think: mean seconds spent looking at each pair before answering (uniform
    0.5-1.5 times it), a person's pace; 0 answers at once. servers: base URLs, one drawn at
    random for every request (a proxy without stickiness); stop: time.monotonic() at which to
    leave part-way. keep_faces: as web/app.js, hold the faces of the last views (at most this
    many), name them in `have`, and ask for the whole state when a view leaves out a face of
    the trial on show that is not held (0: send no `have`, as pages did before it existed);
    late: (k, seconds): sleep that long before answering the k-th trial answered (past its
    shared chain's lease); leave: close the page when the leave-th trial is on show (never
    answered); counter: a one-item list every accepted answer adds one to (shared by a crowd of
    participants). A `wait` screen (shared chains, none free) is polled as the page does, after
    the `retry` seconds it names.

    Returns answered: [(progress, side or slider position)] accepted with 200; latency: seconds
    from sending an answer to having the next screen; server: seconds the server says it spent
    on each of those answers (its Server-Timing header, where it sends one); refused_replays;
    status codes seen; refetched: views that left out a face not held (keep_faces); faces:
    faces received (keep_faces); refused: [(progress, side, message)] of answers refused with
    409; waits: wait screens seen."""
    out = {"answered": [], "latency": [], "server": [], "refused_replays": 0, "codes": [],
           "refetched": 0, "faces": 0, "refused": [], "waits": 0,
           "counter": counter if counter is not None else [0]}
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
        await _steps(participant, res.json(), call, out, replay_every, think, pace, keep_faces,
                     late, leave)
    except Stopped:
        pass
    return out


async def _steps(participant, view, call, out, replay_every, think, pace, keep_faces,
                 late=None, leave=None) -> None:
    held: dict[str, None] = {}  # face keys, oldest first (web/app.js's `decoded`)
    while view["screen"]["kind"] != "end":
        if keep_faces:
            view = await _hold(view, held, keep_faces, call, out)
        screen = view["screen"]
        have = {"have": list(held)} if keep_faces else {}
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
                    "device": "keyboard", **have}
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
            body = {"screen": screen["id"], **have}
            if screen["kind"] == "consent":
                body["consent"] = True
            res = await call("POST", "/api/ack", body)
        if res.status_code == 409:  # answered before the connection broke: where are we?
            res = await call("GET", "/api/state")
        if res.status_code != 200:
            raise RuntimeError(f"{participant}: {res.status_code} {res.text}")
        view = res.json()


async def _hold(view: dict, held: dict, keep: int, call, out: dict) -> dict:
    """The page's faces after `view` (web/app.js): a view that leaves out a face of the trial
    on show that the page does not hold is replaced by the whole state; the faces received
    and named become the most recent, the oldest beyond `keep` are dropped."""
    out["faces"] += len(view["images"])
    if any(k not in held and k not in view["images"] for k in view["screen"].get("images", [])):
        out["refetched"] += 1
        view = (await call("GET", "/api/state")).json()
        out["faces"] += len(view["images"])
    hold_faces(view, held, keep)
    return view


def hold_faces(view: dict, held: dict, keep: int) -> None:
    """The faces a page holds after `view` (web/app.js's `decoded`, oldest first): those
    received and those named that it holds become the most recent; the oldest beyond `keep`
    are dropped."""
    for key in [*view["images"], *view["screen"].get("images", []), *(view["next"] or [])]:
        if key in held or key in view["images"]:
            held.pop(key, None)
            held[key] = None
    for key in list(held)[:max(0, len(held) - keep)]:
        del held[key]


def progress_labels(shown) -> list[str]:
    """The progress line each shown trial (a trials DataFrame without gate rows, in order) had
    on screen: 'practice k of n' or 'k / n'."""
    n_practice = int((shown["kind"] == "practice").sum())
    n_real = len(shown) - n_practice
    return [f"practice {i + 1} of {n_practice}" if i < n_practice
            else f"{i + 1 - n_practice} / {n_real}" for i in range(len(shown))]


def crash_mid_study(server: Server, db, participants: list[str], n_total: int,
                    replay_every: int) -> tuple[dict[str, dict], int]:
    """`participants` take the study on `server` over HTTP at once (`take_part_http`, every
    n-th answer replayed); when a third of the `n_total` answers are in, the server is killed
    with SIGKILL and started again on the same port. db: the study's `Database`. Returns
    (each participant's `take_part_http` result, answers in at the kill), having checked that
    the kill came mid-study, everyone completed and no row was lost or doubled."""
    kills = []

    def answered() -> int:
        return sum(r.shown for r in db.all_sessions())

    async def study():
        deadline = time.monotonic() + 300
        clients = [httpx2.AsyncClient(base_url=server.url) for _ in participants]
        async with asyncio.TaskGroup() as group:
            tasks = {pid: group.create_task(take_part_http(client, pid, deadline,
                                                           replay_every=replay_every))
                     for pid, client in zip(participants, clients, strict=True)}
            while answered() < n_total // 3:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(server.kill9)
            kills.append(answered())
            await asyncio.to_thread(server.start)
        for client in clients:
            await client.aclose()
        return {pid: task.result() for pid, task in tasks.items()}

    try:
        results = asyncio.run(study())
    finally:
        server.stop()
    assert n_total // 3 <= kills[0] < n_total  # the kill came mid-study
    assert {r.participant: r.status for r in db.all_sessions()} == dict.fromkeys(
        participants, "complete")
    assert db.counts() == {r.id: r.n_rows for r in db.all_sessions()}  # none lost or doubled
    return results, kills[0]


def lab_session(config: Path, folder: Path, capsys) -> tuple[list[str], object]:
    """`python -m mcmcp.run` for participant P1 without a window (the config's agent answers):
    (the kinds of the message screens it showed, in order; its trials DataFrame)."""
    from mcmcp.store import read_trials
    from tests.lab.test_session import run_cli

    assert run_cli("--config", str(config), "--participant", "P1", "--no-window",
                   "--out", str(folder / "lab")) == 0
    screens = [ln.split()[1] for ln in capsys.readouterr().out.splitlines()
               if ln.startswith("SCREEN ")]
    return screens, read_trials(folder / "lab/sub-P1/ses-01/trials.csv")


def walk(client, view: dict, answer) -> tuple[list[str], dict]:
    """A session from `view` to its end screen on an in-process client (Starlette's
    TestClient): message screens continued (consent given), trials answered by
    `answer(view) -> the next view`. Every view must send no face the view before named and
    name only faces it sends or that one named (what the page holds). Returns (the kinds of
    the screens shown, the end view)."""
    screens, given = [], set()
    while True:
        kind = view["screen"]["kind"]
        screens.append(kind)
        assert not given & set(view["images"])
        have = given | set(view["images"])
        given = {*view["screen"].get("images", ()), *(view["next"] or ())}
        assert given <= have
        if kind == "end":
            return screens, view
        if kind == "trial":
            view = answer(view)
            continue
        body = {"screen": view["screen"]["id"], **({"consent": True} if kind == "consent"
                                                    else {})}
        res = client.post("/api/ack", json=body)
        assert res.status_code == 200, res.text
        view = res.json()
