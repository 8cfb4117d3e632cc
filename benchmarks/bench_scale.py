"""Study scale: wall time and peak memory of simulating, loading and reporting a whole study.

For each number of participants N (default 10, 30, 100) it simulates the design of
experiments/simulate_demo.yaml with 7 emotions x 4 chains x 300 shown trials per chain
(`python -m mcmcp.simulate`), loads it (`analysis.load_trials`, cold, then from the Parquet
cache when the code has one) and writes the report (`python -m analysis.report` with the model
and the faces), each command a fresh process timed from outside: wall seconds from start to exit,
and peak memory as the largest total resident set of the command's process tree (sampled every
0.2 s; with --jobs the workers count too). The last column is the growth from the smallest to
the largest N (linear growth: 10x from 10 to 100 participants).

A second table measures the image-based (observer) agent on one thread, in CPU seconds (less
sensitive than wall time to a shared machine): one decode of 256 faces by the model as loaded
and by the agent's own decoder, and chain-trials per second of the observer agent answering
256 chains (its table built during the run; benchmarks/bench_observer.py sets the table agent
beside the exact one, cold and warm, and measures how closely they agree).

    python benchmarks/bench_scale.py [--participants 10 30 100] [--jobs 2] [--code DIR]
        [--timeout 3600] [--max-memory 6]

--code runs another checkout of the project (e.g. the code before a change, from `git archive`)
on the same machine; a command that passes --timeout seconds or --max-memory GB is stopped and
its cell says so (the old report died of MemoryError at 100 participants). Data go to --work
(default artifacts/bench_scale/), reused with --reuse.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import psutil  # comes with dask.distributed

ROOT = Path(__file__).resolve().parent.parent
GB = 1024**3

LOAD = "import sys; from analysis import load_trials; load_trials(sys.argv[1]{cache})"
OBSERVER = """
import time, numpy as np, torch
torch.set_num_threads(1)
from mcmcp.agents import ObserverAgent
from mcmcp.sim.chains import simulate_chains
from mcmcp.sampling.sphere import fibonacci_sphere, sample_uniform
from vae.checkpoint import load_checkpoint
from vae.observer import load_observer
model = load_checkpoint('vae/checkpoints/default.pt').model.eval()
agent = ObserverAgent(model, load_observer('vae/checkpoints/observer.pt'))
z = torch.as_tensor(sample_uniform(256, 3, np.random.default_rng(0)), dtype=torch.float32)
def cpu(f):
    f()
    best = 1e9
    for _ in range(5):
        t0 = time.process_time(); f(); best = min(best, time.process_time() - t0)
    return best
with torch.no_grad():
    plain, agents = cpu(lambda: model.decode(z)), cpu(lambda: agent.model.decode(z))
simulate_chains(fibonacci_sphere(256), 2, 5.0, agent, 'happy', None, np.random.default_rng(1))
t0 = time.process_time()
tr = simulate_chains(fibonacci_sphere(256), {trials}, 5.0, agent, 'happy', None,
                     np.random.default_rng(0))
print(plain, agents, tr.active.sum() / (time.process_time() - t0))
"""


class Run(NamedTuple):
    seconds: float
    peak_bytes: int
    stopped: str  # "" when the command finished by itself with exit 0


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], cwd: Path, env: dict, timeout: float, max_bytes: int) -> Run:
    """Run `cmd` to its end (or stop it at a bound); wall seconds and peak tree RSS."""
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    proc, peak, stopped = psutil.Process(child.pid), 0, ""
    while child.poll() is None:
        peak = max(peak, _tree_rss(proc))
        elapsed = time.perf_counter() - t0
        if elapsed > timeout or peak > max_bytes:
            stopped = (f"stopped after {elapsed / 60:.1f} min" if elapsed > timeout
                       else f"stopped at {peak / GB:.1f} GB")
            os.killpg(child.pid, 9)
            child.wait()
            break
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    err = child.stderr.read().decode(errors="replace")
    if not stopped and child.returncode != 0:
        stopped = f"failed: {err.strip().splitlines()[-1] if err.strip() else child.returncode}"
    return Run(seconds, peak, stopped)


def _cell(run: Run | None) -> str:
    if run is None:
        return "-"
    if run.stopped:
        return f"{run.stopped} ({run.seconds / 60:.1f} min, {run.peak_bytes / GB:.2f} GB)"
    t = f"{run.seconds:.0f} s" if run.seconds < 120 else f"{run.seconds / 60:.1f} min"
    return f"{t}, {run.peak_bytes / GB:.2f} GB"


def _growth(first: Run | None, last: Run | None) -> str:
    if first is None or last is None or first.stopped or last.stopped:
        return "-"
    return (f"time x{last.seconds / first.seconds:.1f}, "
            f"memory x{last.peak_bytes / first.peak_bytes:.1f}")


def study_table(args, env: dict) -> None:
    code, work = args.code.resolve(), args.work.resolve()
    has_jobs = "--jobs" in (code / "mcmcp/simulate.py").read_text()
    has_cache = "cache" in (code / "analysis/load.py").read_text()
    ckpt, faces = code / "vae/checkpoints/default.pt", ROOT / "data/faces.h5"
    if not faces.is_file():
        raise SystemExit(f"{faces} is missing: build it with python -m vae.data build "
                         "--source synthetic --out data/faces.h5")
    py = [sys.executable]
    rows: dict[str, dict[int, Run | None]] = {}
    for n in args.participants:
        data, report, cache = work / f"p{n}" / "data", work / f"p{n}" / "report", work / "cache"
        if not (args.reuse and data.is_dir()):
            shutil.rmtree(work / f"p{n}", ignore_errors=True)
            cmd = py + ["-m", "mcmcp.simulate", "--config", "experiments/simulate_demo.yaml",
                        "--emotion", "all", "--participants", str(n), "--trials", str(args.trials),
                        "--chains", "4", "--checkpoint", str(ckpt), "--faces", str(faces),
                        "--out", str(data)] + (["--jobs", str(args.jobs)] if has_jobs else [])
            run = measure(cmd, code, env, args.timeout, args.max_memory * GB)
            rows.setdefault(f"simulate{f' --jobs {args.jobs}' if has_jobs else ''}", {})[n] = run
            print(f"  {n} participants: simulate {_cell(run)}", flush=True)
            if run.stopped:
                continue
        shutil.rmtree(cache, ignore_errors=True)
        load = LOAD.format(cache=", cache=sys.argv[2]" if has_cache else "")
        cmd = py + ["-c", load, str(data)] + ([str(cache)] if has_cache else [])
        rows.setdefault("load_trials", {})[n] = run = measure(cmd, code, env, args.timeout,
                                                              args.max_memory * GB)
        print(f"  {n} participants: load_trials {_cell(run)}", flush=True)
        if has_cache:
            rows.setdefault("load_trials (Parquet cache)", {})[n] = run = measure(
                cmd, code, env, args.timeout, args.max_memory * GB)
            print(f"  {n} participants: load_trials (cache) {_cell(run)}", flush=True)
        shutil.rmtree(report, ignore_errors=True)
        cmd = py + ["-m", "analysis.report", str(data), "--out", str(report), "--checkpoint",
                    str(ckpt), "--faces", str(faces)]
        rows.setdefault("report", {})[n] = run = measure(cmd, code, env, args.timeout,
                                                         args.max_memory * GB)
        print(f"  {n} participants: report {_cell(run)}", flush=True)
    ps = args.participants
    print(f"\n## Study scale: 7 emotions x 4 chains x {args.trials} trials, code {code}, "
          f"{psutil.cpu_count()} cores")
    print("| work | " + " | ".join(f"{n} participants" for n in ps)
          + f" | growth {ps[0]} -> {ps[-1]} |")
    print("|---" * (len(ps) + 2) + "|")
    for name, runs in rows.items():
        print(f"| {name} | " + " | ".join(_cell(runs.get(n)) for n in ps)
              + f" | {_growth(runs.get(ps[0]), runs.get(ps[-1]))} |")


def observer_table(args, env: dict) -> None:
    code = args.code.resolve()
    out = subprocess.run([sys.executable, "-c", OBSERVER.format(trials=args.observer_trials)],
                         cwd=code, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"observer agent: failed\n{out.stderr[-2000:]}")
        return
    plain, agents, rate = map(float, out.stdout.split())
    print("\n## Observer agent (decoded pixels judged by vae/observer.py): CPU time, one thread")
    print("| one decode of 256 faces: model.decode | the agent's decoder | observer agent, "
          "256 chains |\n|---|---|---|")
    print(f"| {plain * 1000:.0f} ms | {agents * 1000:.0f} ms | {rate:,.0f} chain-trials/s |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, nargs="+", default=[10, 30, 100],
                        help="study sizes to measure (default: 10 30 100)")
    parser.add_argument("--trials", type=int, default=300,
                        help="shown trials per chain (default: 300)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="simulate --jobs, when the code has it (default: 2)")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="checkout of the project to measure (default: this one)")
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench_scale",
                        help="folder for the simulated data and reports "
                             "(default: artifacts/bench_scale)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse simulated data already in --work (default: simulate anew)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="stop a command after this many seconds (default: 3600)")
    parser.add_argument("--max-memory", type=float, default=6.0,
                        help="stop a command above this many GB (default: 6)")
    parser.add_argument("--observer-trials", type=int, default=20,
                        help="trials per chain for the observer agent's rate (default: 20)")
    parser.add_argument("--skip-study", action="store_true",
                        help="only the observer table (default: both tables)")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(args.code.resolve())}
    if not args.skip_study:
        study_table(args, env)
    observer_table(args, env)


if __name__ == "__main__":
    main()
