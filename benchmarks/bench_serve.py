"""Load on the online server: many simulated participants at a person's pace, requests spread at
random over several server processes, with and without the experimenter page open; this code
side by side with another checkout (today's main) in one run.

For each code (this checkout, and --baseline, e.g. `git worktree add --detach /tmp/old-online
main`) and each state of the experimenter page (closed; open: polled every 3 s as the page
does), starts --processes `python -m mcmcp.serve` processes on 127.0.0.1 on one database (a throwaway
PostgreSQL cluster, or a SQLite file), lets N participants take the study at once over HTTP,
every request sent to one of the processes at random (a proxy without stickiness, the worst
case for a process that keeps sessions in memory), each looking at a pair --think seconds on
average before answering, for --duration seconds; like the page, participants hold the faces
they were sent and name them in `have` (--baseline-without-have: not the baseline's, a
checkout from before `have`, a34595d and older). Then it
checks the database and prints one table: answers per second, p50 / p99 / worst time from
sending an answer to having the next screen (pair included), the same for the time the server
spent on each answer (its Server-Timing header; a34595d and older send none), the experimenter
page's p50, rows lost or duplicated (every accepted answer must be saved once), the CPU time per
answer of the server processes, of PostgreSQL and of the clients, and the machine's load
average at the end of the run. The clients run in this process, on the same cores as the
servers, each a light HTTP/1.1 client (`LightClient`) so they take little of them. Requests only
go to 127.0.0.1 and stop after --duration.
--faces: who draws this checkout's faces (`online.faces`), one run each (default: as the config
says): server (PNGs in the views) or browser (each face's child and code; a participant's page
decodes it on their own device, so these clients, which stand for the pages' requests, decode
nothing). The baseline runs its own copy of the config (the same path in its checkout, when
the config is in this one and there).
    python benchmarks/bench_serve.py --baseline /tmp/old-online [--participants 200]
        [--processes 2] [--config experiments/happy.yaml] [--duration 120] [--think 1]
        [--faces server browser]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout; the tests' server helpers

import httpx2  # noqa: E402
from pgcluster import Cluster  # noqa: E402
from webserver import Server, take_part_http  # noqa: E402

from mcmcp.config import load_config  # noqa: E402
from mcmcp.online.database import Database  # noqa: E402
from mcmcp.online.export import export  # noqa: E402
from mcmcp.store import read_trials  # noqa: E402

TOKEN = "bench-experimenter"
POLL_S = 3.0  # the experimenter page's refresh (web/experimenter.js)
KEEP_FACES = 64  # faces a page holds and names in `have` (web/app.js)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`, its live descendants and the
    children they reaped (uvicorn's workers, PostgreSQL's backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
    return total


def resolved_config(config: Path, folder: Path, online: dict, root: Path = ROOT,
                    tag: str = "") -> Path:
    """The config with absolute model paths (every checkout reads the same faces, and the
    checkpoint at the config's path in its own checkout `root`: an older checkout may not read
    today's model), a face store made from the default procedural faces if its own is missing,
    and `online` keys added. tag: in the written file's name (configs that differ only in a
    key's value)."""
    cfg = load_config(config)
    data = yaml.safe_load(config.read_text())
    faces = cfg.model.faces
    if not faces.is_file():
        from vae.procedural.faces import generate_faces
        from vae.store import write_store

        faces = folder / "faces.h5"
        write_store(generate_faces(), faces)
    checkpoint = Path(data["model"]["checkpoint"])
    data["model"] = {**data["model"], "faces": str(faces),
                     "checkpoint": str(checkpoint if checkpoint.is_absolute()
                                       else root / checkpoint)}
    data["online"] = {**data["online"], **online}
    path = folder / f"{root.name}-{'-'.join(online) or 'plain'}{tag}-{config.name}"
    path.write_text(yaml.safe_dump(data))
    return path


class Reply:
    """What `take_part_http` reads of a reply (httpx2's names)."""

    def __init__(self, status_code: int, headers: dict[str, str], body: bytes):
        self.status_code, self.headers, self.content = status_code, headers, body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


class LightClient:
    """A participant's browser tab, cheaply: HTTP/1.1 on one kept-alive connection per server,
    the study's cookie sent back, bodies of known length (uvicorn's replies). It shares the
    cores with the servers, so it spends a fraction of a general client's CPU per request;
    lost connections are httpx2.TransportError, as `take_part_http` expects."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self._streams: dict[tuple[str, int], tuple] = {}

    async def request(self, method: str, url: str, json: dict | None = None,
                      timeout: float = 60.0, headers: dict[str, str] | None = None) -> Reply:
        parts = urlsplit(url)
        where = (parts.hostname, parts.port)
        for fresh in (where not in self._streams, True):
            try:
                return await asyncio.wait_for(self._request(method, url, json, headers or {}),
                                              timeout)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                    ValueError) as err:
                self._drop(where)
                if fresh:  # a kept-alive connection the server had closed: once more, anew
                    raise httpx2.TransportError(f"{method} {url}: {err!r}") from None

    async def get(self, url: str, headers: dict[str, str] | None = None,
                  timeout: float = 60.0) -> Reply:
        return await self.request("GET", url, timeout=timeout, headers=headers)

    async def _request(self, method, url, body, headers) -> Reply:
        parts = urlsplit(url)
        where = (parts.hostname, parts.port)
        if where not in self._streams:
            self._streams[where] = await asyncio.open_connection(*where)
        reader, writer = self._streams[where]
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {parts.path or '/'} HTTP/1.1", f"host: {parts.netloc}",
                f"content-length: {len(data)}", *(f"{k}: {v}" for k, v in headers.items())]
        if body is not None:
            head.append("content-type: application/json")
        if self.cookies:
            head.append("cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status, got = int(lines[0].split()[1]), {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                got[name.strip().lower()] = value.strip()
                if name.strip().lower() == "set-cookie":
                    key, _, rest = value.strip().partition("=")
                    self.cookies[key] = rest.split(";")[0]
        content = await reader.readexactly(int(got.get("content-length", 0)))
        if got.get("connection", "").lower() == "close":
            self._drop(where)
        return Reply(status, got, content)

    def _drop(self, where) -> None:
        if where in self._streams:
            self._streams.pop(where)[1].close()

    async def aclose(self) -> None:
        for where in list(self._streams):
            self._drop(where)


async def crowd(urls: list[str], participants: list[str], duration: float, think: float,
                page: bool, keep_faces: int) -> tuple[list[dict], float, list[float]]:
    stop = time.monotonic() + duration
    clients = [LightClient() for _ in participants]
    page_times: list[float] = []

    async def experimenter():
        client = LightClient()
        while time.monotonic() < stop:
            sent = time.perf_counter()
            res = await client.get(urls[len(page_times) % len(urls)] + "/api/experimenter",
                                   headers={"authorization": f"Bearer {TOKEN}"}, timeout=120)
            if res.status_code != 200:
                raise RuntimeError(f"experimenter page: {res.status_code} {res.text}")
            page_times.append(time.perf_counter() - sent)
            await asyncio.sleep(POLL_S)
        await client.aclose()

    t0 = time.perf_counter()
    watcher = asyncio.create_task(experimenter()) if page else None
    results = await asyncio.gather(*(
        take_part_http(c, p, stop + 600, think=think, servers=tuple(urls), stop=stop,
                       keep_faces=keep_faces)
        for c, p in zip(clients, participants, strict=True)))
    wall = time.perf_counter() - t0
    if watcher is not None:
        await watcher
    for c in clients:
        await c.aclose()
    return results, wall, page_times


def position(progress: str, n_practice: int) -> int:
    """The index among shown trials of the trial whose progress line was `progress`."""
    if progress.startswith("practice "):
        return int(progress.split()[1]) - 1
    return n_practice + int(progress.split(" / ")[0]) - 1


def check(db_url: str, results: list[dict], participants: list[str], out: Path,
          n_practice: int) -> tuple[int, int]:
    """(lost, duplicated): accepted answers missing from the data, rows saved more than once."""
    db = Database(db_url, create=False)
    records = db.all_sessions()
    counts = db.counts()
    duplicated = sum(abs(counts.get(r.id, 0) - r.n_rows) for r in records)
    folders = {f.parent.name: f for f in export(db, out)}
    lost = 0
    for pid, result in zip(participants, results, strict=True):
        if not result["answered"]:
            continue
        df = read_trials(folders[f"sub-{pid}"] / "trials.csv")
        duplicated += int(df["row"].duplicated().sum())
        shown = df[df["kind"] != "gate"]["response"].tolist()
        for progress, side in result["answered"]:
            i = position(progress, n_practice)
            lost += i >= len(shown) or shown[i] != side
    db.close()
    return lost, duplicated


def run(code: str, root: Path, db_url: str, config: Path, folder: Path, args, page: bool,
        db_pid: int | None) -> dict:
    tag = f"{code.replace('/', '-')}-{'page' if page else 'nopage'}"
    participants = [f"{tag}-{i:04d}".replace("_", "-") for i in range(args.participants)]
    servers = [Server(config, db_url, folder / f"{tag}-{i}.log", token=TOKEN, root=root)
               for i in range(args.processes)]
    try:
        servers[0].start()  # older checkouts race on creating the tables of a new database
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(Server.start, servers[1:]))
        pids = [s.proc.pid for s in servers]
        cpu0 = ([cpu_seconds(p) for p in pids], cpu_seconds(db_pid) if db_pid else 0.0,
                time.process_time())
        results, wall, page_times = asyncio.run(crowd(
            [s.url for s in servers], participants, args.duration, args.think, page,
            0 if code == "baseline" and args.baseline_without_have else KEEP_FACES))
        cpu = (sum(cpu_seconds(p) for p in pids) - sum(cpu0[0]),
               (cpu_seconds(db_pid) - cpu0[1]) if db_pid else 0.0, time.process_time() - cpu0[2])
        load = os.getloadavg()[0]
    finally:
        for s in servers:
            s.stop()
    lost, duplicated = check(db_url, results, participants, folder / f"{tag}-export",
                             load_config(config).trials.practice)
    latency = np.concatenate([r["latency"] for r in results]) * 1e3
    server = np.concatenate([r["server"] for r in results]) * 1e3
    answers = sum(len(r["answered"]) for r in results)
    per = 1e3 / max(answers, 1)
    return {"code": code, "page": "open" if page else "closed", "answers": answers,
            "cpu_server_ms": cpu[0] * per, "cpu_db_ms": cpu[1] * per,
            "cpu_clients_ms": cpu[2] * per, "load": load,
            "faces_per_answer": sum(r["faces"] for r in results) / max(answers, 1),
            "refetched": sum(r["refetched"] for r in results),
            "answers_per_s": answers / wall, "p50_ms": float(np.percentile(latency, 50)),
            "p99_ms": float(np.percentile(latency, 99)), "max_ms": float(latency.max()),
            "server_p50_ms": float(np.percentile(server, 50)) if len(server) else None,
            "server_p99_ms": float(np.percentile(server, 99)) if len(server) else None,
            "page_ms": float(np.median(page_times) * 1e3) if page_times else None,
            "lost": lost, "duplicated": duplicated}


def own_copy(config: Path, root: Path) -> Path:
    """The checkout `root`'s copy of `config` (a file of this checkout), if it has one."""
    config = config.resolve()
    if not config.is_relative_to(ROOT):
        return config
    theirs = root / config.relative_to(ROOT)
    return theirs if theirs.is_file() else config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "experiments/happy.yaml")
    p.add_argument("--participants", type=int, default=200)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--duration", type=float, default=120.0, help="seconds per run")
    p.add_argument("--think", type=float, default=1.0,
                   help="mean seconds each participant looks at a pair before answering")
    p.add_argument("--baseline", type=Path,
                   help="another checkout to measure in the same run, e.g. a worktree of main")
    p.add_argument("--baseline-without-have", action="store_true",
                   help="the baseline's participants name no faces they hold (before `have`)")
    p.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    p.add_argument("--page", nargs="+", default=["closed", "open"], choices=["closed", "open"])
    p.add_argument("--faces", nargs="+", choices=["server", "browser"],
                   help="who draws this checkout's faces (online.faces), one run each")
    args = p.parse_args()
    # every participant comes from 127.0.0.1: the limit on starts per address is lifted
    codes = [(f"this/{faces}" if faces else "this", ROOT,
              {"starts_per_minute": None, **({"faces": faces} if faces else {})})
             for faces in args.faces or [None]]
    if args.baseline:
        codes.append(("baseline", args.baseline.resolve(), {"starts_per_minute": None}))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        configs = {code: resolved_config(own_copy(args.config, root), folder, online, root,
                                         code.replace("/", "-"))
                   for code, root, online in codes}
        for page in args.page:
            for code, root, _ in codes:
                if args.backend == "postgres":
                    with Cluster() as pg:
                        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
                        rows.append(run(code, root, pg.new_database(), configs[code], folder, args,
                                        page == "open", postmaster))
                else:
                    url = f"sqlite:///{folder / f'{code}-{page}.sqlite'}"
                    rows.append(run(code, root, url, configs[code], folder, args, page == "open",
                                    None))
                print(rows[-1], flush=True)
    print(f"\n{args.participants} participants, think {args.think:g} s, {args.processes} server "
          f"processes on {args.backend}, requests routed at random, {args.duration:g} s per "
          f"run, config {args.config.name}, clients on the same machine")
    head = ("code", "page", "answers", "answers/s", "p50 ms", "p99 ms", "max ms",
            "server p50 ms", "server p99 ms", "page ms", "lost", "duplicated",
            "CPU ms/answer: server + db + clients", "load")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = (r["code"], r["page"], r["answers"], f"{r['answers_per_s']:.1f}",
                 f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['max_ms']:.0f}",
                 *("-" if r[k] is None else f"{r[k]:.0f}"
                   for k in ("server_p50_ms", "server_p99_ms", "page_ms")), r["lost"],
                 r["duplicated"], f"{r['cpu_server_ms']:.1f} + {r['cpu_db_ms']:.1f} + "
                                  f"{r['cpu_clients_ms']:.1f}", f"{r['load']:.1f}")
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
