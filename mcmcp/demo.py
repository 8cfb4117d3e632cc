"""The README's main job: faces -> model -> simulated study -> a demo session -> the report.

Each step is the command a lab member would type, run as a subprocess so the demo exercises the
real command-line tools. Output goes to a fresh run folder so nothing earlier is ever overwritten:
  data/faces.h5                      the default procedural face set (reused when present)
  data/demo/<run>/study/             the simulated study (participants sim001...)
  data/demo/<run>/session/           the demo lab session (participant demo01)
  reports/demo/<run>/                VAE figures, session screenshot, the two analysis reports
The study and the session are analysed apart: an 8-trial session pooled with 250-trial chains
would cut every chain to 8 trials for the convergence diagnostics.
With a display the session window is visible; without one it runs under Xvfb (see the Makefile),
or headless (`--no-window`) when no X server is available at all.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = "vae/checkpoints/default.pt"
FACES = "data/faces.h5"


def _run(title: str, args: list[str]) -> None:
    """Run one step as `python -m ...`, echoing the command; stop the demo if it fails."""
    cmd = [sys.executable, "-m", *args]
    print(f"\n=== {title}\n$ python -m {shlex.join(args)}", flush=True)
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"demo step failed ({title}), exit code {result.returncode}: {shlex.join(cmd)}")
    print(f"--- {title}: done in {time.perf_counter() - t0:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mcmcp.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S"),
                        help="name of this demo run (folder under data/demo and reports/demo)")
    args = parser.parse_args(argv)

    study_dir = Path("data/demo") / args.run / "study"
    session_dir = Path("data/demo") / args.run / "session"
    report_dir = Path("reports/demo") / args.run
    windowed = bool(os.environ.get("DISPLAY"))

    _run("1/6 build the default face set (procedural FACS faces) and its contact sheet",
         ["vae.data", "build", "--source", "synthetic", "--out", FACES, "--reuse",
          "--contact-sheet", str(report_dir / "contact_sheet.png")])
    if not (ROOT / CHECKPOINT).exists():
        _run("2/6 train the default vMF-VAE (the committed checkpoint is missing)",
             ["vae.train", "--config", "experiments/vae_default.yaml", "--data", FACES,
              "--out", CHECKPOINT])
    else:
        print(f"\n=== 2/6 use the committed default model {CHECKPOINT}", flush=True)
    _run("3/6 the VAE's figures (latent space, manifold, gaps)",
         ["vae.figures", CHECKPOINT, "--out", str(report_dir / "vae")])
    _run("4/6 simulate a guided study with synthetic participants",
         ["mcmcp.simulate", "--config", "experiments/simulate_demo.yaml", "--faces", FACES,
          "--participants", "4", "--out", str(study_dir)])
    session = ["mcmcp.run", "--config", "experiments/demo.yaml", "--participant", "demo01",
               "--agent", "latent", "--out", str(session_dir)]
    if windowed:
        session += ["--windowed", "--screenshot", str(report_dir / "session_screenshot.png")]
    else:
        session += ["--no-window"]
    _run("5/6 a demo lab session answered by a synthetic agent"
         + (" in a real window" if windowed else " (no display: headless)"), session)
    for data, name in ((session_dir, "session_report"), (study_dir, "analysis")):
        _run(f"6/6 the analysis report of {data}",
             ["analysis.report", str(data), "--out", str(report_dir / name),
              "--checkpoint", CHECKPOINT, "--faces", FACES])
    print(f"\nDemo finished. Open {report_dir / 'analysis' / 'index.html'} (the simulated study)"
          f" and {report_dir / 'session_report' / 'index.html'} (the demo session)", flush=True)


if __name__ == "__main__":
    main()
