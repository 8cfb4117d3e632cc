"""The PsychoPy window: the ONLY module that imports PsychoPy.

It shows what the session loop gives it and measures what happened: stimulus onset on the flip
(`win.callOnFlip(kb.clock.reset)`), response times from the psychtoolbox keyboard relative to that
onset, mouse clicks on a face, dropped frames per trial and the measured refresh rate. It does no
maths and makes no decisions about trials. Every onset and every message screen is announced on
the log (`ONSET trial=...`, `SCREEN kind`) so a test or an operator can follow the session.

Escape asks for confirmation (y / n); closing the window quits at once. Either way the session
loop saves and exits cleanly (rows are already on disk the moment each response is made).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from psychopy import core, event, gui, visual
from psychopy import logging as plog
from psychopy.hardware import keyboard

from mcmcp.config import DisplaySpec
from mcmcp.session import Answer, Response

AUTO_MESSAGE_SECONDS = 0.3  # how long message screens stay up when an agent answers
END_SECONDS = 5.0  # the end screen closes by itself after this


def ask_participant(participant: str | None, session: int | None) -> tuple[str, int] | None:
    """Participant-info dialog (id and session number only; no names). None if cancelled."""
    info = {"participant": participant or "", "session": session or 1}
    dlg = gui.DlgFromDict(info, title="MCMCP session", order=["participant", "session"])
    if not dlg.OK:
        return None
    return str(info["participant"]).strip(), int(info["session"])


class Screen:
    """A PsychoPy window showing two faces side by side; see the module docstring."""

    def __init__(
        self,
        spec: DisplaySpec,
        image_size: tuple[int, int],
        log: Callable[[str], None] = print,
        screenshot: Path | None = None,
        title: str = "MCMCP",
    ):
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
        # win.flip() returns times on PsychoPy's logging clock: the session clock uses it too
        self._t0 = plog.defaultClock.getTime()

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

    def message(self, kind: str, text: str, auto: bool) -> bool:
        """Show a text screen until SPACE (or a click); the end screen also closes by itself."""
        self.text.text = text
        self.text.draw()
        self.win.flip()
        self.log(f"SCREEN {kind}")
        self.kb.clearEvents()
        if self.mouse is not None:
            self.mouse.clickReset()
        start = core.getTime()
        limit = AUTO_MESSAGE_SECONDS if auto else (END_SECONDS if kind == "end" else None)
        while limit is None or core.getTime() - start < limit:
            if self.closed:
                return False
            names = [k.name for k in self.kb.getKeys(["space", self.spec.keys.quit],
                                                     waitRelease=False)]
            if self.spec.keys.quit in names and kind != "end":
                if self._confirm_quit():
                    return False
                self.text.draw()
                self.win.flip()
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
        self.log("SCREEN confirm")
        self.kb.clearEvents()
        try:
            while not self.closed:
                self.text.draw()
                self.win.flip()
                names = [k.name for k in self.kb.getKeys(["y", "n"], waitRelease=False)]
                if "y" in names:
                    return True
                if "n" in names:
                    return False
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

        images: (2, H, W) in [0, 1] (left, right). The textures are uploaded during fixation;
        `prepare` runs right after the onset flip, while the participant looks at the pair.
        """
        self.fixation.draw()
        self.win.flip()
        fix_start = core.getTime()
        for stim, image in zip(self.faces, images, strict=True):
            # PsychoPy: float images in [-1, 1], first row at the bottom
            stim.image = np.flipud(image.astype(np.float64) * 2.0 - 1.0)
        self.prompt.text, self.progress.text = prompt, progress
        while core.getTime() - fix_start < self.spec.fixation:
            if self.closed:
                return None
            self.fixation.draw()
            self.win.flip()
        shot = self.screenshot if trial.kind == "chain" else None
        prepared = False
        while True:
            onset, dropped0 = self._onset(shot, trial)
            shot = None
            if not prepared:
                prepare()
                prepared = True
            outcome = self._collect(answer)
            if outcome == "quit":
                if self._confirm_quit():
                    return None
                continue  # the participant went on: the pair is shown again with a new onset
            if outcome is None:
                return None
            side, rt = outcome
            onset -= self._t0
            return Response(side, rt, onset, onset + rt, self.win.nDroppedFrames - dropped0)

    def _draw_pair(self) -> None:
        for stim in (*self.faces, self.prompt, self.progress):
            stim.draw()

    def _onset(self, shot: Path | None, trial) -> tuple[float, int]:
        """Flip the pair on; reset the keyboard clock and the mouse on that very flip."""
        self._draw_pair()
        self.win.callOnFlip(self.kb.clock.reset)
        self.win.callOnFlip(self.kb.clearEvents, eventType="keyboard")
        if self.mouse is not None:
            self.win.callOnFlip(self.mouse.clickReset)
        if shot is not None:
            self.win.getMovieFrame(buffer="back")  # the front buffer reads black under Xvfb
            Path(shot).parent.mkdir(parents=True, exist_ok=True)
            self.win.saveMovieFrames(str(shot))
            self.screenshot = None
        dropped0 = self.win.nDroppedFrames
        onset = self.win.flip()
        self.log(f"ONSET trial={trial.trial} kind={trial.kind} left={trial.left_role} "
                 f"right={trial.right_role}")
        return onset, dropped0

    def _collect(self, answer: Answer | None):
        """Poll until a response: (side, rt) | 'quit' | None (window closed)."""
        keys = self.spec.keys
        wanted = [keys.left, keys.right, keys.quit]
        last_click = 0.0
        while not self.closed:
            for k in self.kb.getKeys(wanted, waitRelease=False):
                if k.name == keys.quit:
                    return "quit"
                return ("left" if k.name == keys.left else "right"), float(k.rt)
            if self.mouse is not None:
                # a synthetic (and a quick real) click is press + release in one dispatch, so
                # the press time is the reliable signal, not the button state
                times = self.mouse.getPressed(getTime=True)[1]
                if times[0] > last_click:
                    last_click = times[0]
                    for side, stim in zip(("left", "right"), self.faces, strict=True):
                        if stim.contains(self.mouse):
                            return side, float(times[0])
            if answer is not None and self.kb.clock.getTime() >= answer.rt:
                return answer.side, answer.rt
            self._draw_pair()
            self.win.flip()
        return None
