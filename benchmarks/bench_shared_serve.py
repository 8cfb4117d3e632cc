"""Issue 22's "done when", through the real server: an across-participant study taken over HTTP
by --participants simulated people (20% leaving part-way, 5% answering one trial after their
lease ran out), served by --processes `python -m mcmcp.serve` processes on a throwaway
PostgreSQL cluster with every request routed to one of them at random, one process killed with
SIGKILL part-way and started again; then checked from the database (tests/sharedload.py):
every chain one unbroken line, never held by two leases at once, no late answer inside it,
no accepted answer lost, the chains' steps and the sessions' rows the same.

The design is experiments/shared_demo.yaml (the committed model, seven emotions, 8 shared
chains each) with a short lease (--lease seconds) and short sessions (--per-participant trials
in holds of --per-hold), so the run takes minutes; clients run in this process on the same
cores as the servers and the database.
    python benchmarks/bench_shared_serve.py [--participants 200] [--processes 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout; the tests' server helpers

from bench_serve import resolved_config  # noqa: E402
from pgcluster import Cluster  # noqa: E402
from sharedload import run_load  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "experiments/shared_demo.yaml")
    p.add_argument("--participants", type=int, default=200)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--lease", type=float, default=3.0, help="lease_seconds for the run")
    p.add_argument("--per-hold", type=int, default=3)
    p.add_argument("--per-participant", type=int, default=6)
    p.add_argument("--think", type=float, default=0.3,
                   help="mean seconds each participant looks at a pair before answering")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Cluster() as pg:
        folder = Path(tmp)
        source = folder / args.config.name  # the demo names no model (the default) and has no online keys
        source.write_text(yaml.safe_dump({"model": {}, "online": {}, **yaml.safe_load(
            args.config.read_text())}))
        config = resolved_config(source, folder, {
            "consent": "Do you agree?", "completion_code": "DONE", "starts_per_minute": None})
        data = yaml.safe_load(config.read_text())
        data["chains"]["lease_seconds"] = args.lease
        data["trials"].update(per_chain=100_000, per_hold=args.per_hold,
                              per_participant=args.per_participant, practice=0,
                              catch_rate=0.0)
        config.write_text(yaml.safe_dump(data))
        out = run_load(config, pg.new_database(), folder, args.participants, args.seed,
                       think=args.think, processes=args.processes)
    lengths = out.pop("chain_lengths")
    print(json.dumps(out, indent=1, default=str))
    print(f"\n{args.participants} participants ({out['left']} leaving part-way, "
          f"{out['planned_late']} answering once past a {args.lease:g} s lease), "
          f"{args.processes} server processes on PostgreSQL behind random routing, one killed "
          f"with SIGKILL after {out['killed'].get('at_answers')} answers and back after "
          f"{out['killed'].get('down_s', float('nan')):.1f} s")
    print("| accepted | refused late | wait screens | chains | shown per chain (min-max) | "
          "leases | expired | problems | lost | late not kept | steps not in rows | "
          "answers/s | wall s |")
    print("|" + "---|" * 13)
    print(f"| {out['accepted']} | {out['refused_late']} | {out['waits']} | {out['chains']} | "
          f"{min(lengths)}-{max(lengths)} | {out['leases']} | {out['leases_expired']} | "
          f"{len(out['problems'])} | {len(out['lost'])} | {len(out['late_missing'])} | "
          f"{out['steps_not_in_sessions'] + out['session_steps_not_in_store']} | "
          f"{out['answers_per_s']:.1f} | {out['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
