"""The ask/show/tell loop of one lab session; it never imports PsychoPy.

The engine *asks* for a pair, a display *shows* it and collects the answer (a person at the
PsychoPy screen, or a synthetic agent, in a window or headless), the engine is *told* the answer
and the rows are saved at once. While a pair is on screen the display calls `prepare`, which
draws and decodes the next pair, so the next onset follows the response without waiting.

A display implements:
    clock() -> seconds on the session clock;
    message(kind, text, auto) -> False if the participant chose to quit;
    show(trial, images, prompt, progress, prepare, answer) -> Response | None (None: quit).
`HeadlessDisplay` (here) answers with the agent only; `mcmcp.screen.Screen` is the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mcmcp.config import ExperimentConfig, prompt_for
from mcmcp.engine import AGENT_STREAM, Engine, PendingTrial
from mcmcp.render import Renderer
from mcmcp.store import SessionStore, utc_now


@dataclass(frozen=True)
class Answer:
    """A synthetic agent's answer to a trial: side 'left' | 'right', rt seconds."""

    side: str
    rt: float


@dataclass(frozen=True)
class Response:
    """What the display measured. onset: session-clock seconds of the stimulus flip; rt:
    seconds from onset; responded: session-clock seconds of the response (onset + rt for a
    person; when an agent's simulated rt is not waited out, the time it answered);
    dropped_frames: None where not measured (headless); key: the key pressed (None for a click
    or an agent); device: keyboard | mouse | agent."""

    side: str
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
        self.log(f"ONSET trial={trial.trial} kind={trial.kind} left={trial.left_role} "
                 f"right={trial.right_role}")
        prepare()
        if self.delay:
            time.sleep(self.delay)
        return Response(answer.side, answer.rt, onset, self.clock(), device="agent")


def agent_answer(agent, engine: Engine, trial: PendingTrial) -> Answer:
    """The agent's choice for a trial, from the trial's own counter-based stream (exact resume)."""
    rng = engine.stream(AGENT_STREAM, trial.trial)
    choice = agent.choose(trial.emotion, trial.left[None], trial.right[None], rng)
    return Answer("right" if bool(choice.chose_right[0]) else "left", float(choice.rt[0]))


INSTRUCTIONS = (
    "In each trial you will see two faces.\n\n"
    "Choose the face that better answers the question shown above them:\n"
    "press {left} for the left face or {right} for the right face{mouse}.\n\n"
    "There are no right or wrong answers; go with your first impression.\n\n"
    "Press SPACE to begin."
)


def _key_name(key: str) -> str:
    return {"left": "the LEFT arrow", "right": "the RIGHT arrow"}.get(key, f"'{key}'")


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
    keys = cfg.display.keys
    text = INSTRUCTIONS.format(left=_key_name(keys.left), right=_key_name(keys.right),
                               mouse=", or click on it" if cfg.display.mouse else "")
    if not display.message("instructions", text, auto):
        return "aborted"
    pending = engine.ask()
    images = renderer.pair(pending) if pending is not None else None
    last_response = None
    while pending is not None:
        screen = _screen_before(cfg, pending)
        if screen is not None:
            if not display.message(screen[0], screen[1], auto):
                return "aborted"
            last_response = None  # a gap across a message screen measures the reader, not us
        nxt: dict = {}

        def prepare(nxt=nxt) -> None:
            if engine.can_ask():
                nxt["trial"] = engine.ask()
                nxt["images"] = renderer.pair(nxt["trial"]) if nxt["trial"] is not None else None

        answer = agent_answer(agent, engine, pending) if auto else None
        k, n = pending.progress
        progress = f"practice {k} of {n}" if pending.kind == "practice" else f"{k} / {n}"
        response = display.show(pending, images, prompt_for(cfg, pending.emotion), progress,
                                 prepare, answer)
        if response is None:
            return "aborted"
        gap = None if last_response is None else response.onset - last_response
        store.append_many(engine.tell(pending, response.side, response.rt, response.onset, gap,
                                      response.dropped_frames, utc_now(), response.key,
                                      response.device))
        last_response = response.responded
        if "trial" not in nxt:
            prepare()
        pending, images = nxt.get("trial"), nxt.get("images")
    display.message("end", "Thank you! The session is over.\n\nPlease tell the experimenter.",
                    auto)
    return "complete"


def _screen_before(cfg: ExperimentConfig, trial: PendingTrial) -> tuple[str, str] | None:
    """(kind, text) of the message screen due before `trial`, if any."""
    question = prompt_for(cfg, trial.emotion)
    if trial.starts == "practice":
        return "practice", f"First, a few practice trials.\n\n{question}\n\nPress SPACE to start."
    if trial.starts == "block":
        block = trial.slot.block + 1
        return "block", (f"Part {block} of {len(cfg.emotions)}\n\nIn this part the question is:"
                         f"\n\n{question}\n\nPress SPACE to start.")
    if trial.break_before:
        return "break", "Time for a short break.\n\nPress SPACE when you are ready to go on."
    return None
