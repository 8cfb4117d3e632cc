"""The real PsychoPy window under Xvfb: keys and a click injected with xdotool.

Each test starts `python -m mcmcp.run ... --windowed` in a subprocess, waits for the session's
own markers on its stdout (`SCREEN kind`, `ONSET trial=N`, printed after the screen's flip, so
the window is ready and any key pressed from then on must count), then presses keys into it.
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

import pandas as pd
import pytest

from mcmcp.store import read_trials
from tests.lab.test_session import write_config

ROOT = Path(__file__).resolve().parents[2]
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
    """A windowed session subprocess whose stdout lines arrive on a queue.

    participant None: no --participant (the dialog asks); trials: the config's `trials:`;
    env: extra environment; stdin: text typed on the terminal; config: more config sections.
    """

    def __init__(self, tmp_path: Path, participant: str | None, *extra: str,
                 trials: dict | None = None, env: dict | None = None, stdin: str | None = None,
                 config: dict | None = None):
        ckpt = ROOT / "vae/checkpoints/default.pt"  # the committed model: real decoded faces
        cfg = write_config(
            tmp_path, name="window", emotions=["happy"],
            model={"checkpoint": str(ckpt), "faces": str(tmp_path / "unused.h5")},
            chains={"per_emotion": 2},
            trials=trials or {"per_chain": 2, "practice": 1, "catch_rate": 0.0,
                              "break_every": 0},
            gate={"kind": "none"}, agent=None,
            display={"fixation": 0.05, "window_size": [WIDTH, HEIGHT], "face_size": 256,
                     "face_offset": OFFSET},
            **(config or {}),  # more top-level sections (e.g. paradigm: gsp)
        )
        self.out = tmp_path / "out"
        self.folder = self.out / f"sub-{participant}" / "ses-01"
        who = [] if participant is None else ["--participant", participant]
        cmd = [sys.executable, "-m", "mcmcp.run", "--config", str(cfg), *who, "--windowed",
               "--out", str(self.out), *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                     env={**os.environ, **(env or {})})
        if stdin is not None:
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
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
        time.sleep(0.2)  # a human-like RT, so the test can check RTs
        self.window()
        subprocess.run(["xdotool", "key", name], check=True, timeout=10)

    def tap(self, name: str) -> None:
        """Press and release at once (no delay between the two): the hardest press to hear."""
        self.window()
        subprocess.run(["xdotool", "key", "--delay", "0", name], check=True, timeout=10)

    def click(self, x: int, y: int) -> None:
        time.sleep(0.2)
        subprocess.run(["xdotool", "mousemove", "--window", self.window(), str(x), str(y),
                        "click", "1"], check=True, timeout=10)

    def text(self) -> str:
        return "".join(self.log)

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
    # what a PsychoPy user expects in every row: key, device, date, experiment, frame rate
    assert df["key"].tolist() == ["left", "right", pd.NA, "right", "left"]
    assert df["device"].tolist() == ["keyboard", "keyboard", "mouse", "keyboard", "keyboard"]
    assert (df["experiment"] == "window").all() and df["date"].notna().all()
    assert (df["run"] == 1).all()
    assert (s.folder / "codebook.csv").is_file()
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
    # None when the loaded machine gave no 10 regular frames; then it says so
    rate = meta["refresh_rate"]
    assert meta["runs"][0]["refresh_rate"] == rate
    if rate is None:
        assert df["frame_rate"].isna().all() and "refresh rate could not be measured" in s.text()
    else:
        assert rate > 0 and (df["frame_rate"] == rate).all()
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


def test_taps_at_the_worst_moments_all_count(tmp_path):
    """Stress: every key is tapped (down and up at once) the moment its screen is announced,
    i.e. right after the flip, while the next pair is being prepared, or at a message screen's
    first frames. PsychoPy's getKeys(waitRelease=False) never returns such a tap (its release is
    read in the same poll), which left participants waiting; each one must count, once."""
    n_practice, per_chain = 2, 6
    s = Session(tmp_path, "W003", trials={"per_chain": per_chain, "practice": n_practice,
                                          "catch_rate": 0.0, "break_every": 0})
    sides = ["Left", "Right", "Right", "Left"]
    s.wait_for("SCREEN instructions")
    s.tap("space")
    s.wait_for("SCREEN practice")
    s.tap("space")
    n = n_practice + 2 * per_chain
    for t in range(1, n + 1):
        if t == n_practice + 1:
            s.wait_for("SCREEN block")
            s.tap("space")
        s.wait_for(f"ONSET trial={t} ")
        s.tap(sides[t % 4])
    s.wait_for("SCREEN end")
    s.tap("space")
    assert s.finish() == 0, "".join(s.log)
    df = read_trials(s.folder / "trials.csv")
    assert df["trial"].tolist() == list(range(1, n + 1))
    assert df["response"].tolist() == [sides[t % 4].lower() for t in range(1, n + 1)]
    assert (df["device"] == "keyboard").all()
    assert (df["rt"] >= 0).all() and (df["rt"] < 10).all()


def test_participant_dialog_takes_typed_input(tmp_path):
    """Without --participant a windowed session asks in a Qt dialog (it used to abort in Qt)."""
    s = Session(tmp_path, None)
    found = subprocess.run(["xdotool", "search", "--sync", "--name", "^MCMCP session$"],
                           capture_output=True, text=True, timeout=120)
    wid = found.stdout.split()[0]
    subprocess.run(["xdotool", "windowfocus", "--sync", wid], timeout=10)
    subprocess.run(["xdotool", "type", "--delay", "30", "P042"], check=True, timeout=10)
    subprocess.run(["xdotool", "key", "Return"], check=True, timeout=10)
    s.wait_for("SCREEN instructions", timeout=120)
    s.key("Escape")
    s.wait_for("SCREEN confirm")
    s.key("y")
    assert s.finish() == 0, "".join(s.log)
    meta = json.loads((s.out / "sub-P042/ses-01/session.json").read_text())
    assert meta["participant"] == "P042" and meta["status"] == "aborted"


def test_participant_prompt_falls_back_to_the_terminal(tmp_path):
    """When Qt cannot start (here: a platform plugin that does not exist), the session says so
    in one line and reads the id and session from the terminal instead of dying."""
    s = Session(tmp_path, None, env={"QT_QPA_PLATFORM": "nowhere"}, stdin="P043\n2\n")
    s.wait_for("the participant dialog could not open", timeout=120)
    s.wait_for("SCREEN instructions", timeout=120)
    s.key("Escape")
    s.wait_for("SCREEN confirm")
    s.key("y")
    assert s.finish() == 0, "".join(s.log)
    meta = json.loads((s.out / "sub-P043/ses-02/session.json").read_text())
    assert meta["participant"] == "P043" and meta["session"] == 2
