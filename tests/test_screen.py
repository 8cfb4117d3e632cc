"""The real PsychoPy window under Xvfb: keys and a click injected with xdotool.

Each test starts `python -m mcmcp.run ... --windowed` in a subprocess, waits for the session's
own markers on its stdout (`SCREEN kind`, `ONSET trial=N`), then presses keys into the window.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_session import write_config

from mcmcp.store import read_trials

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"

pytestmark = [
    pytest.mark.window,
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("DISPLAY"),
                       reason="no X display (DISPLAY unset): run under `xvfb-run -a`"),
    pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool is not installed"),
]

WIDTH, HEIGHT, OFFSET = 1024, 700, 200


class Session:
    """A windowed session subprocess whose stdout lines arrive on a queue."""

    def __init__(self, tmp_path: Path, participant: str, *extra: str):
        ckpt = ROOT / "vae/checkpoints/default.pt"  # the committed model: real decoded faces
        cfg = write_config(
            tmp_path, name="window", emotions=["happy"],
            model={"checkpoint": str(ckpt), "faces": str(tmp_path / "unused.h5")},
            chains={"per_emotion": 2},
            trials={"per_chain": 2, "practice": 1, "catch_rate": 0.0, "break_every": 0},
            gate={"kind": "none"}, agent=None,
            display={"fixation": 0.05, "window_size": [WIDTH, HEIGHT], "face_size": 256,
                     "face_offset": OFFSET},
        )
        self.out = tmp_path / "out"
        self.folder = self.out / f"sub-{participant}" / "ses-01"
        cmd = [sys.executable, "-m", "mcmcp.run", "--config", str(cfg), "--participant",
               participant, "--windowed", "--out", str(self.out), *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wid = None

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line)
            self.lines.put(line.strip())

    def wait_for(self, prefix: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.lines.get(timeout=0.5).startswith(prefix):
                    return
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
        raise AssertionError(f"no {prefix!r} from the session:\n{''.join(self.log)[-3000:]}")

    def window(self) -> str:
        if self.wid is None:
            found = subprocess.run(["xdotool", "search", "--sync", "--name", "^MCMCP$"],
                                   capture_output=True, text=True, timeout=30)
            self.wid = found.stdout.split()[0]
            # XTEST events reach the focused window (PsychHID hears those, not XSendEvent)
            subprocess.run(["xdotool", "windowfocus", "--sync", self.wid], timeout=10)
        return self.wid

    def key(self, name: str) -> None:
        time.sleep(0.2)  # a human-like RT, well above the poll interval
        self.window()
        subprocess.run(["xdotool", "key", name], check=True, timeout=10)

    def click(self, x: int, y: int) -> None:
        time.sleep(0.2)
        subprocess.run(["xdotool", "mousemove", "--window", self.window(), str(x), str(y),
                        "click", "1"], check=True, timeout=10)

    def finish(self) -> int:
        return self.proc.wait(timeout=60)


def test_keys_and_click_drive_the_chains(tmp_path):
    shot = ARTIFACTS / "session_trial.png"
    shot.unlink(missing_ok=True)
    s = Session(tmp_path, "W001", "--screenshot", str(shot))
    s.wait_for("SCREEN instructions")
    s.key("space")
    s.wait_for("SCREEN practice")
    s.key("space")
    s.wait_for("ONSET trial=1 ")
    s.key("Left")
    s.wait_for("SCREEN block")
    s.key("space")
    s.wait_for("ONSET trial=2 ")
    s.key("Right")
    s.wait_for("ONSET trial=3 ")
    s.click(WIDTH // 2 - OFFSET, HEIGHT // 2)  # on the left face
    s.wait_for("ONSET trial=4 ")
    s.key("Escape")
    s.wait_for("SCREEN confirm")
    s.key("n")  # go on: the pair comes back with a fresh onset
    s.wait_for("ONSET trial=4 ")
    s.key("Right")
    s.wait_for("ONSET trial=5 ")
    s.key("Left")
    s.wait_for("SCREEN end")
    s.key("space")
    assert s.finish() == 0, "".join(s.log)

    df = read_trials(s.folder / "trials.csv")
    assert df["kind"].tolist() == ["practice", "chain", "chain", "chain", "chain"]
    assert df["response"].tolist() == ["left", "right", "left", "right", "left"]
    assert (df["rt"] > 0.15).all() and (df["rt"] < 20).all()
    assert (df["agent"] == "human").all()
    chains = df[df["kind"] == "chain"]
    # the chosen role is what was on the chosen side; the chain moved iff it was the proposal
    chosen = [r[f"{r['response']}_role"] for _, r in chains.iterrows()]
    assert chains["accepted"].tolist() == [c == "proposal" for c in chosen]
    for _, group in chains.groupby("chain"):
        first, second = group.iloc[0], group.iloc[1]
        expect = "proposal" if first["accepted"] else "current"
        for i in range(3):
            assert second[f"current_{i}"] == first[f"{expect}_{i}"]
    assert chains["dropped_frames"].notna().all()
    assert chains["gap"].notna().any()
    meta = json.loads((s.folder / "session.json").read_text())
    assert meta["status"] == "complete" and "psychopy" in meta["versions"]
    assert "frame_timing" in meta and "refresh_rate" in meta
    assert shot.is_file() and shot.stat().st_size > 1000


def test_escape_then_yes_saves_and_exits(tmp_path):
    s = Session(tmp_path, "W002")
    s.wait_for("SCREEN instructions")
    s.key("space")
    s.wait_for("SCREEN practice")
    s.key("space")
    s.wait_for("ONSET trial=1 ")
    s.key("Right")
    s.wait_for("SCREEN block")
    s.key("Escape")
    s.wait_for("SCREEN confirm")
    s.key("y")
    assert s.finish() == 0, "".join(s.log)
    df = read_trials(s.folder / "trials.csv")
    assert df["response"].tolist() == ["right"]
    meta = json.loads((s.folder / "session.json").read_text())
    assert meta["status"] == "aborted" and "end_time" in meta
