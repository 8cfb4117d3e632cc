"""Load on the online server: many simulated participants answering at once, PostgreSQL vs SQLite.

Starts `python -m mcmcp.serve` with uvicorn workers on 127.0.0.1 (on a throwaway PostgreSQL
cluster, then on a SQLite file), lets N simulated participants take the whole study at the
same time over HTTP (start, consent, messages, every trial; answers fixed by participant and
trial), then checks the database and prints one table: answers per second, p50 / p99 / worst
latency from sending an answer to having the next screen (pair included), and rows lost or
duplicated (every accepted answer must be saved once). Each backend runs twice: participants
answering at once (think 0: the most answers per second the server gives; latency is then
mostly queueing) and at about a person's pace (think 1 s: the latency a participant sees).
The clients run in this process on the same 2 cores as the server, so the figures are a lower
bound for a server machine. Requests only go to 127.0.0.1; each participant's requests are
bounded by the study's length and everything by --timeout.
    python benchmarks/bench_serve.py [--participants 200] [--workers 2] [--config experiments/demo.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's server and PostgreSQL helpers

import httpx2  # noqa: E402
from pgcluster import Cluster  # noqa: E402
from webserver import Server, progress_labels, take_part_http  # noqa: E402

from mcmcp.config import load_config  # noqa: E402
from mcmcp.online.database import Database  # noqa: E402
from mcmcp.online.export import export  # noqa: E402
from mcmcp.store import read_trials  # noqa: E402


def config_with_faces(config: Path, folder: Path) -> Path:
    """The config, with a face store made from the default procedural faces if its own is
    missing (a fresh clone), written to `folder`."""
    cfg = load_config(config)
    if cfg.model.faces.is_file():
        return config
    from vae.procedural.faces import generate_faces
    from vae.store import write_store

    faces = folder / "faces.h5"
    write_store(generate_faces(), faces)
    data = yaml.safe_load(config.read_text())
    data["model"]["faces"] = str(faces)
    data["model"]["checkpoint"] = str(cfg.model.checkpoint)
    path = folder / config.name
    path.write_text(yaml.safe_dump(data))
    return path


async def crowd(url: str, participants: list[str], timeout: float, think: float
                ) -> tuple[list[dict], float]:
    deadline = time.monotonic() + timeout
    limits = httpx2.Limits(max_connections=1)  # one connection per participant, like a tab
    clients = [httpx2.AsyncClient(base_url=url, limits=limits) for _ in participants]
    t0 = time.perf_counter()
    results = await asyncio.gather(*(take_part_http(c, p, deadline, think=think)
                                     for c, p in zip(clients, participants, strict=True)))
    wall = time.perf_counter() - t0
    for c in clients:
        await c.aclose()
    return results, wall


def check(db_url: str, results: list[dict], participants: list[str], out: Path) -> tuple[int, int]:
    """(lost, duplicated): accepted answers missing from the data, rows saved more than once."""
    db = Database(db_url, create=False)
    records = db.all_sessions()
    counts = db.counts()
    duplicated = sum(abs(counts.get(r.id, 0) - r.n_rows) for r in records)
    folders = {f.parent.name: f for f in export(db, out)}
    lost = 0
    for pid, result in zip(participants, results, strict=True):
        df = read_trials(folders[f"sub-{pid}"] / "trials.csv")
        shown = df[df["kind"] != "gate"]
        saved = list(zip(progress_labels(shown), shown["response"], strict=True))
        duplicated += len(saved) - len(set(saved)) + int(df["row"].duplicated().sum())
        lost += len(set(result["answered"]) - set(saved))
    db.close()
    return lost, duplicated


def run(backend: str, db_url: str, config: Path, folder: Path, n: int, workers: int,
        timeout: float, think: float) -> dict:
    participants = [f"{backend[:2]}{think:g}-{i:04d}".replace(".", "_") for i in range(n)]
    with Server(config, db_url, folder / f"{backend}.log", workers=workers) as server:
        results, wall = asyncio.run(crowd(server.url, participants, timeout, think))
    lost, duplicated = check(db_url, results, participants,
                             folder / f"{backend}-{think:g}-export")
    latency = np.concatenate([r["latency"] for r in results]) * 1e3
    answers = sum(len(r["answered"]) for r in results)
    return {"backend": backend, "think": think, "answers": answers, "wall_s": wall,
            "answers_per_s": answers / wall, "p50_ms": float(np.percentile(latency, 50)),
            "p99_ms": float(np.percentile(latency, 99)), "max_ms": float(latency.max()),
            "lost": lost, "duplicated": duplicated}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "experiments/demo.yaml")
    p.add_argument("--participants", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run, at most")
    p.add_argument("--think", type=float, nargs="+", default=[0.0, 1.0],
                   help="seconds each participant looks at a pair before answering: 0 measures "
                        "the most answers/s; about 1 s is a person's pace (RT + fixation)")
    p.add_argument("--backends", nargs="+", default=["postgres", "sqlite"],
                   choices=["postgres", "sqlite"])
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = config_with_faces(args.config, folder)
        for backend in args.backends:
            for think in args.think:
                if backend == "postgres":
                    with Cluster() as pg:
                        rows.append(run(backend, pg.new_database(), config, folder,
                                        args.participants, args.workers, args.timeout, think))
                else:
                    rows.append(run(backend, f"sqlite:///{folder / f'online-{think:g}.sqlite'}",
                                    config, folder, args.participants, args.workers,
                                    args.timeout, think))
    print(f"\n{args.participants} participants at once, uvicorn with {args.workers} workers, "
          f"config {args.config.name}, clients on the same machine")
    head = ("backend", "think s", "answers", "wall s", "answers/s", "p50 ms", "p99 ms",
            "max ms", "lost", "duplicated")
    print(" | ".join(f"{h:>10}" for h in head))
    for r in rows:
        cells = (r["backend"], f"{r['think']:g}", r["answers"], f"{r['wall_s']:.1f}",
                 f"{r['answers_per_s']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                 f"{r['max_ms']:.1f}", r["lost"], r["duplicated"])
        print(" | ".join(f"{c:>10}" for c in cells))


if __name__ == "__main__":
    main()
