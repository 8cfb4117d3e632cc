"""CPU time of one online answer, by part: where a server process spends it, without HTTP.

Two `OnlineStudy` objects on one throwaway PostgreSQL database stand for two server processes;
--participants simulated participants answer in turn, each request sent to either study at
random (as bench_serve.py's proxy without stickiness does), each page naming the faces it holds
(`have`, the 64 latest, as web/app.js does). After a warm-up, --answers answers are timed: the
CPU time of the whole process per answer, and of each part that exists in the code measured
(reading the session, rebuilding a flow where the other study had it, the engine's set-up and
draws, decoding, PNGs, the saving transaction, ...; parts nest: a rebuild includes the engine's
set-up), and the faces decoded per answer (the renderers' misses: one new face an answer, but
for a session's first pairs). PostgreSQL's own CPU is not counted (bench_serve.py counts it).
--code measures another checkout's mcmcp (e.g. a worktree of main) with this script, for a
before/after table.
--page-every K: the experimenter page open, its numbers (`Monitor.summary`) computed once every
K answers (the page polls every 3 s: at 200 participants answering about 190 times a second,
K = 570), their CPU per answer a part of its own.
    python benchmarks/bench_answer.py [--code /tmp/old-online] [--participants 20]
        [--answers 1000] [--config experiments/happy.yaml] [--page-every 570]
"""

from __future__ import annotations

import argparse
import collections
import functools
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = [  # (module, object, attribute, label): timed wherever the code measured has them
    ("mcmcp.online.study", "OnlineStudy", "_session", "read the session (+ resume point)"),
    ("mcmcp.online.study", "OnlineStudy", "_record", "read the session"),
    ("mcmcp.online.database", "Database", "resume", "read the resume point"),
    ("mcmcp.online.study", "OnlineStudy", "_flow", "flow: kept, or rebuilt"),
    ("mcmcp.engine", "Engine", "__init__", "  engine set-up (rebuilds)"),
    ("mcmcp.online.study", "OnlineStudy", "_sent", "faces the page was sent"),
    ("mcmcp.session", "SessionFlow", "tell", "the answer's chain step"),
    ("mcmcp.online.study", None, "resume_point", "the new resume point"),
    ("mcmcp.online.database", "Database", "advance", "the saving transaction"),
    ("mcmcp.online.study", "OnlineStudy", "_render", "the view"),
    ("mcmcp.render", "Renderer", "images", "  decoding"),
    ("mcmcp.online.study", None, "png_data_url", "  PNGs"),
    ("mcmcp.engine", "Engine", "ask", "engine draws (all of them)"),
    ("mcmcp.online.monitor", "Monitor", "summary", "the experimenter page (--page-every)"),
]
KEEP_FACES = 64  # faces a page holds and names in `have` (web/app.js)


def timed(parts: collections.Counter) -> None:
    """Wrap every part that exists in the imported code so it adds its CPU time to `parts`."""
    import importlib

    for module, owner, name, label in PARTS:
        target = importlib.import_module(module)
        target = getattr(target, owner) if owner else target
        if not hasattr(target, name):
            continue
        fn = getattr(target, name)

        def wrapper(*args, __fn=fn, __label=label, **kwargs):
            began = time.process_time()
            try:
                return __fn(*args, **kwargs)
            finally:
                parts[__label] += time.process_time() - began

        setattr(target, name, functools.wraps(fn)(wrapper))


def faces_decoded(studies) -> int:
    """Faces the studies' renderers decoded so far (none where the page draws them)."""
    return sum(s.renderer.misses for s in studies if s.renderer is not None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--code", type=Path, default=ROOT, help="the checkout whose mcmcp to measure")
    p.add_argument("--config", type=Path, default=ROOT / "experiments/happy.yaml")
    p.add_argument("--participants", type=int, default=20)
    p.add_argument("--answers", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="who answers and which study serves")
    p.add_argument("--page-every", type=int, default=0,
                   help="answers between two calls of the experimenter page (0: page closed)")
    args = p.parse_args()
    sys.path[:0] = [str(args.code.resolve()), str(ROOT / "tests")]
    import torch
    from pgcluster import Cluster
    from webserver import hold_faces, side_for

    from mcmcp.config import load_config
    from mcmcp.online.database import Database
    from mcmcp.online.links import Link
    from mcmcp.online.monitor import Monitor
    from mcmcp.online.screening import client_info
    from mcmcp.online.study import OnlineStudy

    torch.set_num_threads(1)  # as python -m mcmcp.serve
    cfg = load_config(args.config)
    rng = random.Random(args.seed)
    client = client_info({"viewport": [1280, 800], "dpr": 1, "refresh_hz": 60.0},
                         "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0")  # as the app does
    with Cluster() as pg:
        url = pg.new_database()
        studies = [OnlineStudy.open(cfg, Database(url), str(args.config)) for _ in range(2)]

        def step(person: dict) -> int:
            """One request of `person` to a study drawn at random; 1 if it answered a trial."""
            study, screen = rng.choice(studies), person["view"]["screen"]
            have = frozenset(person["held"])
            if screen["kind"] == "trial":
                view = study.answer(person["token"], screen["id"],
                                    side_for(person["id"], screen["progress"]), 0.5, 1.0, None,
                                    "2026-01-01T00:00:00Z", "keyboard", None, have)
            else:
                view = study.acknowledge(person["token"], screen["id"],
                                         True if screen["kind"] == "consent" else None, have)
            hold_faces(view, person["held"], KEEP_FACES)
            person["view"] = view
            return screen["kind"] == "trial"

        people = []
        for i in range(args.participants):
            token, view = rng.choice(studies).start(Link(f"B{i:03d}"), client, None)
            people.append({"id": f"B{i:03d}", "token": token, "view": view, "held": {}})
        for _ in range(5 * args.participants):  # warm-up: past consent, first faces decoded
            step(rng.choice(people))
        page = Monitor(studies[0].db, cfg.name, studies[0].d, studies[0].n_shown) \
            if args.page_every else None
        if page:
            page.summary()  # as the page's first call, before the answers timed
        parts: collections.Counter = collections.Counter()
        timed(parts)
        decoded = faces_decoded(studies)
        answers, began = 0, time.process_time()
        while answers < args.answers:
            answered = step(rng.choice([q for q in people
                                        if q["view"]["screen"]["kind"] != "end"]))
            answers += answered
            if answered and page and answers % args.page_every == 0:
                page.summary()
        total = time.process_time() - began
        decoded = faces_decoded(studies) - decoded
    print(f"{answers} answers of {args.participants} participants, two studies on one "
          f"PostgreSQL database, requests at random, code {args.code}, config "
          f"{args.config.name}; CPU ms per answer (parts nest):")
    print("| part | ms |\n|---|---|")
    for _, _, _, label in PARTS:
        if label in parts:
            print(f"| {label} | {parts[label] / answers * 1e3:.2f} |")
    print(f"| whole process | {total / answers * 1e3:.2f} |")
    print(f"faces decoded per answer: {decoded / answers:.2f}")


if __name__ == "__main__":
    main()
