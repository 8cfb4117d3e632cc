"""The session flow and the ask/show/tell loop of one lab session; it never imports PsychoPy.

The engine *asks* for a pair, a display *shows* it and collects the answer (a person at the
PsychoPy screen, or a synthetic agent, in a window or headless), the engine is *told* the answer
and the rows are saved at once. While a pair is on screen the display calls `prepare`, which
draws and decodes the next pair, so the next onset follows the response without waiting.

`SessionFlow` orders the screens (instructions, practice, blocks, breaks, trials, end) one step
at a time; `run_session` drives it with a blocking display, the web server (`mcmcp.serve`)
drives the same flow one HTTP request per step.

A display implements:
    clock() -> seconds on the session clock;
    message(kind, text, auto) -> False if the participant chose to quit;
    show(trial, images, prompt, progress, prepare, answer) -> Response | None (None: quit).
`HeadlessDisplay` (here) answers with the agent only; `mcmcp.lab.screen.Screen` is the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mcmcp.engine import AGENT_STREAM, Engine, PendingTrial
from mcmcp.render import Renderer
from mcmcp.shared import NoChainFree
from mcmcp.specs import ExperimentConfig, prompt_for
from mcmcp.store import SessionStore, utc_now


@dataclass(frozen=True)
class Answer:
    """A synthetic agent's answer to a trial: side 'left' | 'right' (a slider trial: the circle
    point, int), rt seconds."""

    side: str | int
    rt: float


@dataclass(frozen=True)
class Response:
    """What the display measured. onset: session-clock seconds of the stimulus flip; rt:
    seconds from onset; responded: session-clock seconds of the response (onset + rt for a
    person; when an agent's simulated rt is not waited out, the time it answered);
    dropped_frames: None where not measured (headless); key: the key pressed (None for a click
    or an agent); device: keyboard | mouse | agent. A slider trial's side is the circle point
    confirmed (int)."""

    side: str | int
    rt: float
    onset: float
    responded: float
    dropped_frames: int | None = None
    key: str | None = None
    device: str | None = None


class Display(Protocol):
    def clock(self) -> float: ...

    def message(self, kind: str, text: str, auto: bool) -> bool: ...

    def show(
        self,
        trial: PendingTrial,
        images: np.ndarray,
        prompt: str,
        progress: str,
        prepare: Callable[[], None],
        answer: Answer | None,
    ) -> Response | None: ...


class HeadlessDisplay:
    """No window: the agent answers; `delay` seconds per trial paces it (pilots, crash tests).
    origin: epoch seconds (time.time()) the session clock counts from (None: now)."""

    def __init__(self, log: Callable[[str], None] = print, delay: float = 0.0,
                 origin: float | None = None):
        self.log, self.delay = log, delay
        self._t0 = time.perf_counter() - (0.0 if origin is None else time.time() - origin)
        self.refresh_rate = None

    def clock(self) -> float:
        return time.perf_counter() - self._t0

    def message(self, kind: str, text: str, auto: bool) -> bool:
        self.log(f"SCREEN {kind}")
        return True

    def show(self, trial, images, prompt, progress, prepare, answer):
        onset = self.clock()
        self.log(onset_line(trial))
        prepare()
        if self.delay:
            time.sleep(self.delay)
        return Response(answer.side, answer.rt, onset, self.clock(), device="agent")


def onset_line(trial: PendingTrial) -> str:
    """The log line every display writes at a trial's onset (tests and operators follow it)."""
    if trial.is_slider:
        return (f"ONSET trial={trial.trial} kind={trial.kind} slider points="
                f"{len(trial.circle.points)} shift={trial.circle.shift} start={trial.circle.start}")
    return (f"ONSET trial={trial.trial} kind={trial.kind} left={trial.left_role} "
            f"right={trial.right_role}")


def agent_answer(agent, engine: Engine, trial: PendingTrial) -> Answer:
    """The agent's choice for a trial, from the trial's own counter-based stream (exact resume)."""
    rng = engine.stream(AGENT_STREAM, trial.trial)
    if trial.is_slider:
        c = trial.circle
        slide = agent.slide(trial.emotion, c.points[None], np.array([c.start]),
                            np.array([c.shift]), rng, identity=trial.identity)
        return Answer(int(slide.choice[0]), float(slide.rt[0]))
    choice = agent.choose(trial.emotion, trial.left[None], trial.right[None], rng,
                          identity=trial.identity)
    return Answer("right" if bool(choice.chose_right[0]) else "left", float(choice.rt[0]))


INSTRUCTIONS = (
    "In each trial you will see two faces.\n\n"
    "Choose the face that better answers the question shown above them:\n"
    "press {left} for the left face or {right} for the right face{mouse}.\n\n"
    "There are no right or wrong answers; go with your first impression.\n\n"
    "Press SPACE to begin."
)
LAB_END = "Thank you! The session is over.\n\nPlease tell the experimenter."


def _key_name(key: str) -> str:
    return {"left": "the LEFT arrow", "right": "the RIGHT arrow"}.get(key, f"'{key}'")


SLIDER_INSTRUCTIONS = (
    "In each trial you will see one face with a slider below it.\n\n"
    "Move the slider with {left} and {right}{mouse} until the face answers the question shown "
    "above it as well as it can, then press SPACE{ok}.\n\n"
    "There are no right or wrong answers; go with your impression.\n\n"
    "Press SPACE to begin."
)


def instructions(cfg: ExperimentConfig) -> str:
    """The instruction screen's text for the config's keys (and mouse)."""
    keys = cfg.display.keys
    if cfg.paradigm == "gsp":
        return SLIDER_INSTRUCTIONS.format(
            left=_key_name(keys.left), right=_key_name(keys.right),
            mouse=", or drag its handle with the mouse" if cfg.display.mouse else "",
            ok=" or click OK" if cfg.display.mouse else "")
    return INSTRUCTIONS.format(left=_key_name(keys.left), right=_key_name(keys.right),
                               mouse=", or click on it" if cfg.display.mouse else "")


@dataclass(frozen=True)
class Screen:
    """What the participant sees next: a message or a trial.

    kind: a message kind (instructions | practice | block | break | end, or any kind given in
    `SessionFlow(intro=...)`) with its `text`; or "trial" with the pending `trial`, its `images`
    (2, H, W) in [0, 1] (left, right), the `prompt` and the `progress` line.
    """

    kind: str
    text: str = ""
    trial: PendingTrial | None = None
    images: np.ndarray | None = None
    prompt: str = ""
    progress: str = ""


class SessionFlow:
    """The session as a sequence of screens, one step at a time; the one place that orders them.

    intro screens, then for every trial of the engine's schedule the message screens due before
    it (practice, block, break) and the trial itself, then the end screen. A front end looks at
    `screen()`, then calls `acknowledge()` for a message or `tell(...)` for a trial. A blocking
    display (`run_session`) and the web server (`mcmcp.serve`, where each HTTP request does one
    step) drive the same flow, so both show the same screens in the same order.

    While a trial is on screen, `prepare()` asks the engine for the next pair and decodes it, so
    the next onset need not wait for the decoder; `tell` does it if nobody did.
    acked: message screens before the pending trial (intro included) already acknowledged, for a
    front end that resumes exactly where the participant was (the web server).
    wait_text: a shared chain that is not free (`NoChainFree`) shows a `wait` screen with this
    text until `retry` draws the trial (the web server); None: NoChainFree propagates (the lab's
    source waits for a chain itself).
    """

    def __init__(self, cfg: ExperimentConfig, engine: Engine, renderer: Renderer,
                 intro: list[tuple[str, str]], end_text: str, acked: int = 0,
                 wait_text: str | None = None):
        self.cfg, self.engine, self.renderer, self.end_text = cfg, engine, renderer, end_text
        self.wait_text = wait_text
        self.pending = self._ask()
        self.images = renderer.trial(self.pending) if self.pending is not None else None
        self._next: tuple[PendingTrial | None, np.ndarray | None] | None = None
        self._messages = [*intro, *self._before(self.pending)][acked:]

    def screen(self) -> Screen:
        """The screen to show now."""
        if self._messages:
            kind, text = self._messages[0]
            return Screen(kind, text)
        if self.waiting:
            return Screen("wait", self.wait_text)
        if self.pending is None:
            return Screen("end", self.end_text)
        k, n = self.pending.progress
        progress = f"practice {k} of {n}" if self.pending.kind == "practice" else f"{k} / {n}"
        return Screen("trial", trial=self.pending, images=self.images,
                      prompt=prompt_for(self.cfg, self.pending.emotion), progress=progress)

    @property
    def waiting(self) -> bool:
        """No chain is free for the next trial yet (see `wait_text`)."""
        return self.pending is None and not self.engine.done

    def _ask(self) -> PendingTrial | None:
        """The engine's next trial; None while no shared chain is free, with a wait_text."""
        try:
            return self.engine.ask()
        except NoChainFree:
            if self.wait_text is None:
                raise
            return None

    def retry(self) -> None:
        """Ask again for the trial a `wait` screen is waiting for (nothing if none is)."""
        if self.waiting and self.engine.can_ask():
            self.pending = self._ask()
            if self.pending is not None:
                self.images = self.renderer.trial(self.pending)
                self._messages += self._before(self.pending)

    def acknowledge(self) -> None:
        """The participant has read the message screen on show."""
        if not self._messages:
            raise RuntimeError("no message screen to acknowledge: a trial or the end is on show")
        self._messages.pop(0)

    def prepare(self) -> None:
        """Draw and decode the next pair now, if its chain allows (see `Engine.can_ask`; a
        shared chain that is not free yet is asked for again at `tell`)."""
        if self._next is None and self.engine.can_ask():
            try:
                trial = self.engine.ask()
            except NoChainFree:
                return
            self._next = (trial, self.renderer.trial(trial) if trial is not None else None)

    def upcoming(self) -> tuple[PendingTrial | None, np.ndarray | None] | None:
        """The prepared next (trial, images), or None if it could not be drawn yet."""
        return self._next

    def tell(self, side: str, rt: float, onset: float | None, gap: float | None,
             dropped_frames: int | None, timestamp: str, key: str | None = None,
             device: str | None = None) -> list[dict]:
        """Answer the trial on show; returns the rows to save (its gate rows, then the trial).
        key: the key pressed (None for a click or an agent); device: keyboard | mouse | agent.
        A shared chain's answer that came after its lease ended is one row of kind `late`."""
        if self._messages or self.pending is None:
            raise RuntimeError("no trial on show to answer")
        rows = self.engine.tell(self.pending, side, rt, onset, gap, dropped_frames, timestamp,
                                key, device)
        self.prepare()
        if self._next is None and not self.engine.done and self.engine.can_ask():
            trial = self._ask()  # a shared chain the source waits for (NoChainFree)
            self._next = None if trial is None else (trial, self.renderer.trial(trial))
        (self.pending, self.images), self._next = self._next or (None, None), None
        self._messages = self._before(self.pending)
        return rows

    def _before(self, trial: PendingTrial | None) -> list[tuple[str, str]]:
        """The message screens due before `trial`."""
        if trial is None:
            return []
        question = prompt_for(self.cfg, trial.emotion)
        if trial.starts == "practice":
            return [("practice",
                     f"First, a few practice trials.\n\n{question}\n\nPress SPACE to start.")]
        if trial.starts == "block":
            block = trial.slot.block + 1
            return [("block", f"Part {block} of {len(self.cfg.emotions)}\n\nIn this part the "
                              f"question is:\n\n{question}\n\nPress SPACE to start.")]
        if trial.break_before:
            return [("break",
                     "Time for a short break.\n\nPress SPACE when you are ready to go on.")]
        return []


def run_session(
    cfg: ExperimentConfig,
    engine: Engine,
    store: SessionStore,
    display: Display,
    renderer: Renderer,
    agent=None,
    log: Callable[[str], None] = print,
) -> str:
    """Run (or continue) the session to the end or until the participant quits.

    Returns the status: 'complete' or 'aborted'. Rows are saved the moment each response is
    made (gate rows of the trial first, then the trial).
    """
    auto = agent is not None
    flow = SessionFlow(cfg, engine, renderer, [("instructions", instructions(cfg))], LAB_END)
    last_response = None
    while True:
        screen = flow.screen()
        if screen.kind == "end":
            display.message("end", screen.text, auto)
            return "complete"
        if screen.kind != "trial":
            if not display.message(screen.kind, screen.text, auto):
                return "aborted"
            flow.acknowledge()
            last_response = None  # a gap across a message screen measures the reader, not us
            continue
        trial = screen.trial
        answer = agent_answer(agent, engine, trial) if auto else None
        response = display.show(trial, screen.images, screen.prompt, screen.progress,
                                flow.prepare, answer)
        if response is None:
            return "aborted"
        gap = None if last_response is None else response.onset - last_response
        store.append_many(flow.tell(response.side, response.rt, response.onset, gap,
                                    response.dropped_frames, utc_now(), response.key,
                                    response.device))
        last_response = response.responded
