"""The README's main job end to end: `python -m mcmcp.demo` (faces, model, simulated study,
a windowed session answered by an agent, both reports). Runs in the repo like a user's run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="the demo's window needs an X server")
def test_demo_writes_both_reports_and_a_screenshot():
    run = f"pytest-{uuid.uuid4().hex[:8]}"
    data, reports = ROOT / "data/demo" / run, ROOT / "reports/demo" / run
    try:
        result = subprocess.run([sys.executable, "-m", "mcmcp.demo", "--run", run], cwd=ROOT,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "Demo finished" in result.stdout
        for name in ("analysis", "session_report"):
            assert (reports / name / "index.html").stat().st_size > 10_000
        assert (reports / "session_screenshot.png").stat().st_size > 10_000
        assert (reports / "contact_sheet.png").is_file()
        trials = pd.read_csv(data / "session/sub-demo01/ses-01/trials.csv")
        assert set(trials["kind"]) >= {"practice", "chain", "catch"}
        participants = pd.read_csv(reports / "analysis/tables/participants.csv")
        assert sorted(participants["participant"]) == ["sim001", "sim002", "sim003", "sim004"]
        # the demo's design converges by its own criterion (experiments/simulate_demo.yaml)
        convergence = pd.read_csv(reports / "analysis/tables/convergence.csv")
        group = convergence[convergence["participant"] == "group"]
        assert len(group) == 7 and (group["rhat_max"] < 1.1).all(), group
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(reports, ignore_errors=True)
