"""The PsychoPy window: the ONLY module that imports PsychoPy.

It shows what the session loop gives it and measures what happened: stimulus onset as the time
`win.flip()` returns, response times as the psychtoolbox key-down time (same clock) minus that
onset, mouse clicks on a face, dropped frames per trial and the measured refresh rate. It does no
maths and makes no decisions about trials. Every onset and every message screen is announced on
the log (`ONSET trial=...`, `SCREEN kind`) after its flip, so a test or an operator can follow the
session: a key pressed after the announcement always counts.

Why keys are read the way they are (psychopy.hardware.keyboard, ptb backend): `getKeys(...,
waitRelease=False)` returns only keys still held down, so a press whose release is read in the
same poll (a quick tap during `prepare`, a slow frame, a message screen) is never returned, and
`clearEvents` on or after the flip throws away taps made between the flip and the clear. So the
buffer is cleared *before* each flip, both held and released presses are read, and a press counts
for a screen iff its key-down time is at or after that screen's flip.

Escape asks for confirmation (y / n); closing the window quits at once. Either way the session
loop saves and exits cleanly (rows are already on disk the moment each response is made).
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from psychopy import core, event, gui, visual
from psychopy import logging as plog
from psychopy.hardware import keyboard

from mcmcp.sampling.gsp import point_to_slider, slider_to_point
from mcmcp.session import Answer, Response, onset_line
from mcmcp.specs import DisplaySpec

AUTO_MESSAGE_SECONDS = 0.3  # how long message screens stay up when an agent answers
CONFIRM_KEY = "space"  # confirms a slider trial, as SPACE goes on from every message screen
END_SECONDS = 5.0  # the end screen closes by itself after this


DIALOG_MARK = "DIALOG "


def _dialog(session: int) -> None:
    """The participant-info dialog itself (id and session number only; no names); prints one
    `DIALOG {json}` line: the typed values as text, or {"cancelled": true}."""
    info = {"participant": "", "session": str(session)}
    dlg = gui.DlgFromDict(info, title="MCMCP session", order=["participant", "session"])
    out = {"cancelled": True} if not dlg.OK else {k: str(v).strip() for k, v in info.items()}
    print(DIALOG_MARK + json.dumps(out), flush=True)


def ask_participant(session: int | None, log: Callable[[str], None] = print
                    ) -> tuple[str, str] | None:
    """Ask for the participant id and session number: (id, session) as typed, None if cancelled.

    The Qt dialog runs in a child process, because Qt aborts the whole process when it cannot
    start (e.g. "xcb-cursor0 or libxcb-cursor0 is needed", exit 134). If the child gives no
    answer, the reason is logged in one line and the values are read from the terminal instead.
    """
    child = subprocess.run([sys.executable, "-m", "mcmcp.lab.screen", "--dialog", str(session or 1)],
                           capture_output=True, text=True)
    for line in child.stdout.splitlines():
        if line.startswith(DIALOG_MARK):
            got = json.loads(line[len(DIALOG_MARK):])
            return None if got.get("cancelled") else (got["participant"], got["session"])
    lines = [ln for ln in child.stderr.splitlines() if ln.strip()]
    qt = [ln for ln in lines if ln.startswith("qt.")]  # Qt names the cause first, then aborts
    why = (qt or lines or ["no output"])[0 if qt else -1][:200]
    code = child.returncode
    ended = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
    log(f"the participant dialog could not open ({ended}: {why}); type the participant id "
        "here instead")
    participant = input("participant id: ").strip()  # EOFError when nobody can type
    typed = input(f"session number [{session or 1}]: ").strip()
    return participant, typed or str(session or 1)


class Screen:
    """A PsychoPy window showing two faces side by side; see the module docstring."""

    def __init__(
        self,
        spec: DisplaySpec,
        image_size: tuple[int, int],
        log: Callable[[str], None] = print,
        screenshot: Path | None = None,
        title: str = "MCMCP",
        origin: float | None = None,
    ):
        """origin: epoch seconds (time.time()) the session clock counts from (None: when the
        window is ready); a resumed run passes the session's, so its onsets go on from there."""
        if not keyboard.havePTB:
            raise RuntimeError(
                "psychtoolbox failed to import, so key presses cannot be timed (and would not be "
                "heard); install the system libraries libasound2 and libjack-jackd2-0"
            )
        self.spec, self.log, self.screenshot = spec, log, screenshot
        self.win = visual.Window(
            size=spec.window_size, fullscr=spec.fullscreen, units="pix", color=(0, 0, 0),
            allowGUI=not spec.fullscreen, title=title, checkTiming=False,
        )
        self.win.recordFrameIntervals = True
        self.refresh_rate = self.win.getActualFrameRate(
            nIdentical=10, nMaxFrames=120, nWarmUpFrames=10, threshold=1
        )
        if self.refresh_rate is None:  # no 10 regular frames in 120: a busy or vsync-less machine
            log("WARNING: the refresh rate could not be measured (frame intervals were irregular); "
                "frame_rate stays empty, session.json frame_timing has the intervals")
        self.closed = False
        self.win.winHandle.push_handlers(on_close=self._on_close)
        self.kb = keyboard.Keyboard(backend="ptb")
        self.mouse = event.Mouse(win=self.win) if spec.mouse else None
        h, w = image_size
        size = (spec.face_size * w / h, spec.face_size)
        blank = np.zeros(image_size)
        self.faces = [
            visual.ImageStim(self.win, image=blank, size=size, pos=(x, 0), interpolate=True)
            for x in (-spec.face_offset, spec.face_offset)
        ]
        width = spec.window_size[0] - 80
        top = spec.face_size / 2 + 50
        self.prompt = visual.TextStim(self.win, "", pos=(0, top), height=32, wrapWidth=width)
        self.progress = visual.TextStim(self.win, "", pos=(0, -top), height=20, wrapWidth=width,
                                        color=(0.4, 0.4, 0.4))
        self.fixation = visual.TextStim(self.win, "+", height=48)
        self.text = visual.TextStim(self.win, "", height=26, wrapWidth=min(width, 1000))
        self._slider_stims(size, width)
        # win.flip() and key-down times are on PsychoPy's logging clock: the session clock too
        self._t0 = plog.defaultClock.getTime() - (0.0 if origin is None else time.time() - origin)

    def _slider_stims(self, size: tuple[float, float], width: float) -> None:
        """A GSP trial's screen: one face, the slider (track, handle) below it, OK under that.
        The K faces of a trial are K ImageStims whose textures are uploaded during fixation,
        so moving the handle only chooses which one to draw."""
        spec = self.spec
        self.face_size = size
        half_h = spec.window_size[1] / 2
        self.slider_face_y = min(half_h - spec.face_size / 2 - 90, 60)
        self.track_y = self.slider_face_y - spec.face_size / 2 - 50
        self.track_width = min(width - 120, 800)
        self.track = visual.Rect(self.win, width=self.track_width, height=6, pos=(0, self.track_y),
                                 fillColor=(0.2, 0.2, 0.2), lineColor=None)
        self.handle = visual.Rect(self.win, width=18, height=40, pos=(0, self.track_y),
                                  fillColor=(0.9, 0.9, 0.9), lineColor=(-1, -1, -1))
        self.ok = visual.Rect(self.win, width=120, height=48, pos=(0, self.track_y - 80),
                              fillColor=(-0.3, -0.3, -0.3), lineColor=(0.6, 0.6, 0.6))
        self.ok_text = visual.TextStim(self.win, "OK", pos=self.ok.pos, height=26)
        self.slider_prompt = visual.TextStim(
            self.win, "", pos=(0, self.slider_face_y + spec.face_size / 2 + 40), height=30,
            wrapWidth=width)
        self.slider_progress = visual.TextStim(self.win, "", pos=(0, -half_h + 30), height=20,
                                               wrapWidth=width, color=(0.4, 0.4, 0.4))
        self.slider_faces: list = []

    def _slider_x(self, position: int, k: int) -> float:
        """Horizontal pixel position of slider position 0..K-1 (centres of K equal cells)."""
        return -self.track_width / 2 + self.track_width * (position + 0.5) / k

    def _slider_position(self, x: float, k: int) -> int:
        """The slider position nearest to pixel x (clamped to the track)."""
        return int(np.clip(np.floor((x + self.track_width / 2) / self.track_width * k), 0, k - 1))

    def _on_close(self) -> bool:
        self.closed = True
        return True  # handled: keep the GL context alive until the loop has saved and exits

    def frame_stats(self) -> dict:
        """Frame timing over the session: median interval (ms) and frames dropped."""
        intervals = np.asarray(self.win.frameIntervals, dtype=float)
        return {
            "frame_interval_median_ms": float(np.median(intervals) * 1e3) if intervals.size
            else None,
            "frames": int(intervals.size),
            "dropped_frames": int(self.win.nDroppedFrames),
        }

    def clock(self) -> float:
        return plog.defaultClock.getTime() - self._t0

    def close(self) -> None:
        self.win.close()

    # ------------------------------------------------------------------ message screens

    def _presses(self, names: list[str], since: float) -> list:
        """Presses of keys `names` whose key-down time (logging clock) is at or after `since`,
        earliest first, whether the key is still held or already released (module doc)."""
        keys = [*self.kb.getKeys(names, waitRelease=False), *self.kb.getKeys(names, waitRelease=True)]
        return sorted((k for k in keys if k.tDown >= since), key=lambda k: k.tDown)

    def _flip_clean(self) -> float:
        """Flip what is drawn, with the key buffer cleared just before; the flip time."""
        self.kb.clearEvents()
        return self.win.flip()

    def message(self, kind: str, text: str, auto: bool) -> bool:
        """Show a text screen until SPACE (or a click); the end screen also closes by itself."""
        self.text.text = text
        self.text.draw()
        if self.mouse is not None:
            self.win.callOnFlip(self.mouse.clickReset)
        shown = self._flip_clean()
        self.log(f"SCREEN {kind}")
        start = core.getTime()
        limit = AUTO_MESSAGE_SECONDS if auto else (END_SECONDS if kind == "end" else None)
        while limit is None or core.getTime() - start < limit:
            if self.closed:
                return False
            names = [k.name for k in self._presses(["space", self.spec.keys.quit], shown)]
            if names and names[0] == self.spec.keys.quit and kind != "end":
                if self._confirm_quit():
                    return False
                self.text.draw()
                shown = self._flip_clean()
                continue
            if "space" in names or (self.mouse is not None and
                                    self.mouse.getPressed(getTime=True)[1][0] > 0):
                return True
            self.text.draw()
            self.win.flip()
        return True

    def _confirm_quit(self) -> bool:
        """Ask 'Quit? (y / n)'; True to quit. The window closing counts as yes."""
        self.text.text, before = "Quit the session?\n\nPress Y to quit, N to go on.", self.text.text
        self.text.draw()
        shown = self._flip_clean()
        self.log("SCREEN confirm")
        try:
            while not self.closed:
                names = [k.name for k in self._presses(["y", "n"], shown)]
                if names:
                    return names[0] == "y"
                self.text.draw()
                self.win.flip()
            return True
        finally:
            self.text.text = before

    # ------------------------------------------------------------------ trials

    def show(
        self,
        trial,
        images: np.ndarray,
        prompt: str,
        progress: str,
        prepare: Callable[[], None],
        answer: Answer | None,
    ) -> Response | None:
        """Fixation, then the pair until a response; None if the participant quit.

        images: (2, H, W) in [0, 1] (left, right), or for a slider trial (`trial.is_slider`)
        the K faces along its circle. The textures are uploaded during fixation; `prepare`
        runs right after the onset flip, while the participant looks at the pair.
        """
        if trial.is_slider:
            return self._show_slider(trial, images, prompt, progress, prepare, answer)
        self.prompt.text, self.progress.text = prompt, progress
        if not self._fixate(images, lambda _: self.faces):
            return None
        shot = self.screenshot if trial.kind == "chain" else None
        prepared = False
        while True:
            onset, dropped0 = self._onset(shot, trial)
            shot = None
            if not prepared:
                prepare()
                prepared = True
            outcome = self._collect(answer, onset)
            if outcome == "quit":
                if self._confirm_quit():
                    return None
                continue  # the participant went on: the pair is shown again with a new onset
            if outcome is None:
                return None
            side, rt, key, device = outcome
            onset -= self._t0
            return Response(side, rt, onset, onset + rt, self.win.nDroppedFrames - dropped0,
                            key, device)

    def _fixate(self, images: np.ndarray, stims: Callable[[np.ndarray], list]) -> bool:
        """The fixation cross for display.fixation seconds; meanwhile the faces' textures are
        uploaded to `stims(images)` (one stimulus per image). False if the window was closed."""
        self.fixation.draw()
        self.win.flip()
        fix_start = core.getTime()
        for stim, image in zip(stims(images), images, strict=True):
            # PsychoPy: float images in [-1, 1], first row at the bottom
            stim.image = np.flipud(image.astype(np.float64) * 2.0 - 1.0)
        while core.getTime() - fix_start < self.spec.fixation:
            if self.closed:
                return False
            self.fixation.draw()
            self.win.flip()
        return True

    def _slider_faces_for(self, images: np.ndarray) -> list:
        """One ImageStim per circle point (made once, reused by later trials)."""
        h, w = images.shape[1:]
        while len(self.slider_faces) < len(images):
            self.slider_faces.append(visual.ImageStim(self.win, image=np.zeros((h, w)),
                                                      size=self.face_size,
                                                      pos=(0, self.slider_face_y),
                                                      interpolate=True))
        return self.slider_faces[:len(images)]

    def _show_slider(self, trial, images, prompt, progress, prepare, answer):
        """A GSP trial: fixation (the K textures uploaded meanwhile), then the face of the
        handle's position, redrawn every frame as LEFT/RIGHT or a mouse drag move the handle,
        until SPACE or a click on OK confirms. Response.side is the circle point confirmed;
        rt from the onset flip to the confirming key-down (or click)."""
        self.slider_prompt.text, self.slider_progress.text = prompt, progress
        if not self._fixate(images, self._slider_faces_for):
            return None
        shot = self.screenshot if trial.kind == "chain" else None
        circle, k = trial.circle, len(images)
        position = int(point_to_slider(circle.start, circle.shift, k))
        prepared = False
        while True:
            onset, dropped0 = self._onset(shot, trial,
                                          functools.partial(self._draw_slider, circle, position, k))
            shot = None
            if not prepared:
                prepare()
                prepared = True
            outcome = self._collect_slider(answer, onset, circle, k, position)
            if outcome == "quit":
                if self._confirm_quit():
                    return None
                continue
            if outcome is None:
                return None
            position, rt, key, device = outcome
            onset -= self._t0
            return Response(int(slider_to_point(position, circle.shift, k)), rt, onset,
                            onset + rt, self.win.nDroppedFrames - dropped0, key, device)

    def _draw_slider(self, circle, position: int, k: int) -> None:
        self.slider_faces[int(slider_to_point(position, circle.shift, k))].draw()
        self.handle.pos = (self._slider_x(position, k), self.track_y)
        for stim in (self.track, self.handle, self.slider_prompt, self.slider_progress):
            stim.draw()
        if self.mouse is not None:
            self.ok.draw()
            self.ok_text.draw()

    def _collect_slider(self, answer: Answer | None, onset: float, circle, k: int,
                        position: int):
        """Poll until the slider is confirmed: (position, rt, key, device) | 'quit' | None.
        Every move of the handle is logged (`SLIDER position=j point=k`)."""
        keys = self.spec.keys
        wanted = [keys.left, keys.right, CONFIRM_KEY, keys.quit]
        last_click, dragging = 0.0, False
        seen: set[tuple[str, float]] = set()
        while not self.closed:
            moved_to = position
            for press in self._presses(wanted, onset):
                # a press read while held comes back once more when released (`_presses`)
                if (press.name, press.tDown) in seen:
                    continue
                seen.add((press.name, press.tDown))
                if press.name == keys.quit:
                    return "quit"
                if press.name == CONFIRM_KEY:
                    return position, float(press.tDown - onset), press.name, "keyboard"
                step = -1 if press.name == keys.left else 1
                moved_to = int(np.clip(moved_to + step, 0, k - 1))
            if self.mouse is not None:
                x, y = self.mouse.getPos()
                if self.mouse.getPressed()[0]:
                    # a drag starts on the track (or the handle) and follows the mouse anywhere
                    dragging = dragging or (abs(y - self.track_y) < 30
                                            and abs(x) < self.track_width / 2 + 20)
                    if dragging:
                        moved_to = self._slider_position(x, k)
                else:
                    dragging = False
                times = self.mouse.getPressed(getTime=True)[1]
                if times[0] > last_click:
                    last_click = times[0]
                    if self.ok.contains(self.mouse):
                        return moved_to, float(times[0]), None, "mouse"
            if moved_to != position:
                position = moved_to
                self.log(f"SLIDER position={position} "
                         f"point={int(slider_to_point(position, circle.shift, k))}")
            if answer is not None and plog.defaultClock.getTime() - onset >= answer.rt:
                return int(point_to_slider(answer.side, circle.shift, k)), answer.rt, None, "agent"
            self._draw_slider(circle, position, k)
            self.win.flip()
        return None

    def _draw_pair(self) -> None:
        for stim in (*self.faces, self.prompt, self.progress):
            stim.draw()

    def _onset(self, shot: Path | None, trial, draw: Callable[[], None] | None = None
               ) -> tuple[float, int]:
        """Flip the pair (or what `draw` draws) on (keys cleared just before; the mouse reset on
        that very flip): (onset on the logging clock, dropped frames so far)."""
        (draw or self._draw_pair)()
        if self.mouse is not None:
            self.win.callOnFlip(self.mouse.clickReset)
        if shot is not None:
            self.win.getMovieFrame(buffer="back")  # the front buffer reads black under Xvfb
            Path(shot).parent.mkdir(parents=True, exist_ok=True)
            self.win.saveMovieFrames(str(shot))
            self.screenshot = None
        dropped0 = self.win.nDroppedFrames
        onset = self._flip_clean()
        self.log(onset_line(trial))
        return onset, dropped0

    def _collect(self, answer: Answer | None, onset: float):
        """Poll until a response to the pair flipped on at `onset` (logging clock):
        (side, rt, key, device) | 'quit' | None (window closed)."""
        keys = self.spec.keys
        wanted = [keys.left, keys.right, keys.quit]
        last_click = 0.0
        while not self.closed:
            for k in self._presses(wanted, onset)[:1]:
                if k.name == keys.quit:
                    return "quit"
                side = "left" if k.name == keys.left else "right"
                return side, float(k.tDown - onset), k.name, "keyboard"
            if self.mouse is not None:
                # a synthetic (and a quick real) click is press + release in one dispatch, so
                # the press time is the reliable signal, not the button state; pyglet stamps it
                # when the event is dispatched (at a flip), so mouse RTs are frame-accurate only
                times = self.mouse.getPressed(getTime=True)[1]
                if times[0] > last_click:
                    last_click = times[0]
                    for side, stim in zip(("left", "right"), self.faces, strict=True):
                        if stim.contains(self.mouse):
                            return side, float(times[0]), None, "mouse"
            if answer is not None and plog.defaultClock.getTime() - onset >= answer.rt:
                return answer.side, answer.rt, None, "agent"
            self._draw_pair()
            self.win.flip()
        return None


if __name__ == "__main__":  # the child of ask_participant: python -m mcmcp.lab.screen --dialog N
    _dialog(int(sys.argv[2]))
