"""Gap from a response to the next stimulus onset in a real session, with and without prefetch.

Runs `python -m mcmcp.run` with a synthetic agent (in a window when DISPLAY is set, else
headless) on a given config, then prints a table of the `gap` column (response -> next onset)
and of the overhead beyond the fixation cross (gap - fixation), median and worst.
    python benchmarks/bench_session.py [--config experiments/demo.yaml] [--trials 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mcmcp.config import load_config
from mcmcp.store import read_trials

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "experiments/demo.yaml"))
    p.add_argument("--trials", type=int, default=20, help="shown trials per chain")
    args = p.parse_args()
    fixation = load_config(args.config).display.fixation
    mode = ["--windowed"] if os.environ.get("DISPLAY") else ["--no-window"]
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "mcmcp.run", "--config", args.config, "--participant",
               "bench", "--agent", "latent", "--trials", str(args.trials), "--out", out, *mode]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        df = read_trials(Path(out) / "sub-bench/ses-01/trials.csv")
    gaps = df["gap"].dropna().to_numpy(dtype=float)
    extra = gaps - (fixation if mode == ["--windowed"] else 0.0)
    print(f"mode {mode[0]}, config {args.config}, {len(gaps)} gaps, fixation {fixation} s")
    print(f"{'quantity':<28}{'median ms':>12}{'p95 ms':>10}{'worst ms':>10}")
    for name, x in (("gap (response->onset)", gaps), ("overhead beyond fixation", extra)):
        print(f"{name:<28}{np.median(x) * 1e3:>12.1f}{np.quantile(x, 0.95) * 1e3:>10.1f}"
              f"{x.max() * 1e3:>10.1f}")


if __name__ == "__main__":
    main()
