"""The GSP slider in a real PsychoPy window under Xvfb: driven by keys and by a mouse drag.

Like tests/test_screen.py: the session runs in a subprocess, the test waits for its markers
(`ONSET trial=N ... shift=S start=T`, `SLIDER position=j point=k`, printed after the flip or
the move) and injects keys and mouse events with xdotool.
"""

from __future__ import annotations

import re
import subprocess
import time

from mcmcp.sampling.gsp import point_to_slider, slider_to_point
from mcmcp.store import read_trials
from tests.lab.test_screen import ARTIFACTS, HEIGHT, WIDTH, Session, pytestmark  # noqa: F401

K = 16
# The slider's geometry in a WIDTH x HEIGHT window with face_size 256 (mcmcp/lab/screen.py,
# `_slider_stims`): face centre y = 60, track y = 60 - 128 - 50, OK 80 px below the track.
TRACK_Y, TRACK_W = -118, 800
OK_Y = TRACK_Y - 80


def screen_xy(x: float, y: float) -> tuple[int, int]:
    """PsychoPy pixel units (origin at the centre, y up) -> window pixels."""
    return round(WIDTH / 2 + x), round(HEIGHT / 2 - y)


def slot_x(position: int) -> float:
    return -TRACK_W / 2 + TRACK_W * (position + 0.5) / K


def onset(s: Session, trial: int) -> tuple[int, int]:
    """Wait for trial's onset; its slider (shift, start position)."""
    s.wait_for(f"ONSET trial={trial} ")
    line = [ln for ln in s.log if ln.startswith(f"ONSET trial={trial} ")][-1]
    shift, start = map(int, re.search(r"shift=(\d+) start=(\d+)", line).groups())
    return shift, int(point_to_slider(start, shift, K))


def xdo(s: Session, *args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=10)


def test_slider_by_keys_and_by_mouse_drag(tmp_path):
    shot = ARTIFACTS / "gsp_slider_trial.png"
    shot.unlink(missing_ok=True)
    s = Session(tmp_path, "G001", "--screenshot", str(shot),
                trials={"per_chain": 1, "practice": 1, "catch_rate": 0.0, "break_every": 0},
                config={"paradigm": "gsp", "gsp": {"points": K}})
    s.wait_for("SCREEN instructions")
    s.key("space")
    s.wait_for("SCREEN practice")
    s.key("space")
    expected, devices = [], []

    # trial 1 (practice): two steps with the arrow keys, then SPACE
    shift, pos = onset(s, 1)
    key, step = ("Right", 1) if pos < K - 2 else ("Left", -1)
    for n in (1, 2):
        s.key(key)
        s.wait_for(f"SLIDER position={pos + n * step} ")
    s.key("space")
    expected.append(int(slider_to_point(pos + 2 * step, shift, K)))
    devices.append("keyboard")

    # trials 2 and 3 (the two chains): press on the handle, drag, release; confirm by OK, SPACE
    s.wait_for("SCREEN block")
    s.key("space")
    for trial, confirm in ((2, "ok"), (3, "space")):
        shift, pos = onset(s, trial)
        target = 2 if pos > K // 2 else K - 3
        s.window()
        xdo(s, "mousemove", "--window", s.wid, *map(str, screen_xy(slot_x(pos), TRACK_Y)))
        xdo(s, "mousedown", "1")
        time.sleep(0.1)  # a person holds the button while dragging
        xdo(s, "mousemove", "--window", s.wid, *map(str, screen_xy(slot_x(target), TRACK_Y + 15)))
        s.wait_for(f"SLIDER position={target} ")
        xdo(s, "mouseup", "1")
        if confirm == "ok":
            s.click(*screen_xy(0, OK_Y))
        else:
            s.key("space")
        expected.append(int(slider_to_point(target, shift, K)))
        devices.append("mouse" if confirm == "ok" else "keyboard")
    s.wait_for("SCREEN end")
    s.key("space")
    assert s.finish() == 0, s.text()

    df = read_trials(s.folder / "trials.csv")
    assert df["kind"].tolist() == ["practice", "chain", "chain"]
    assert (df["paradigm"] == "gsp").all() and (df["gsp_points"] == K).all()
    assert df["gsp_choice"].tolist() == expected
    assert df["device"].tolist() == devices
    assert df["response"].isna().all()
    assert (df["rt"] > 0.15).all() and (df["rt"] < 30).all()
    chains = df[df["kind"] == "chain"]
    # the chain moved to the confirmed point (unless it confirmed its own state, point 0)
    assert chains["accepted"].tolist() == [c != 0 for c in expected[1:]]
    assert shot.is_file() and shot.stat().st_size > 1000
