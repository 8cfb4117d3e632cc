"""The experimenter page's numbers, from the online database: who is in progress or done, on what
device and how often they left full screen, trials answered, catch accuracy, each emotion's
split R-hat so far, and the report's prototype verdicts of the finished sessions.

It calls `analysis.diagnostics` on purpose, so the live page shows the numbers the report will
show later; like `mcmcp.demo`, the server is an application on top of `mcmcp` and `analysis`
(nothing in the engine, the store or the session imports analysis). It only reads.

The page must cost participants nothing, so a call's work does not grow with the answers given
since the last one: catch accuracy comes from the catch answers' counts (one query on an index;
the same numbers as `analysis.diagnostics.catch_accuracy`), full-screen exits from one query,
the device (from the session's metadata) once per session; a participant's own R-hat is
recomputed, from the rows added since it last was, within a CPU budget (RHAT_SHARE of a core
however often the page polls; the longest-waiting first, the rest keep their last value and its
age), and once more when it finishes; the group's R-hat and the
verdicts (`analysis.checks.inference_checks`, the report's own) only when a session finishes.

Shared chains (an across-participant study, `mcmcp.chainstore`): `shared` lists each chain's
length, its holder now (a lease that has run out is no one's), its expired leases and late
answers, and per emotion the group prototype's verdict from the chains' steps so far
(`analysis.shared.group_prototypes`: its 95% cone against the target precision, and R-hat),
recomputed when the chains have moved, at most every GROUP_EVERY_S.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import pandas as pd

from analysis.checks import inference_checks, trial_facts
from analysis.diagnostics import MIN_CATCH_ACCURACY, RHAT_BAD, RHAT_GOOD, convergence
from analysis.load import chain_states
from analysis.shared import group_prototypes
from analysis.verdicts import PRECISION_DEG
from mcmcp.online.database import Database, rows_frame

RHAT_SHARE = 0.02  # of one core: the participants' R-hats' CPU time, at most, over time
RHAT_CREDIT_S = 0.2  # CPU seconds they may take at once (the first call, after a pause)
STATUSES = ("consent", "running", "complete", "declined", "abandoned")
KEPT_KINDS = ("chain", "gate", "catch", "repeat")  # what the numbers and the verdicts read
DEVICE = ("device", "browser", "screen", "dpr", "refresh_hz")  # of screening.client_info
GROUP_EVERY_S = 10.0  # shared chains: the group verdicts' recomputation, at most this often


def _number(value) -> float | str | None:
    """JSON has no NaN or infinity: NaN (nothing to compute) becomes null, an infinite R-hat
    (chains that never moved, each stuck in its own place: the worst case, not a missing one)
    becomes the string "inf", which the page shows as ∞ in red."""
    value = float(value)
    if math.isnan(value):
        return None
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


@dataclass
class _Session:
    """What the monitor keeps of one session between calls."""

    n_read: int = 0  # rows read so far
    rows: list[dict] = field(default_factory=list)  # its rows of KEPT_KINDS
    rhat: float | str | None = None
    rhat_rows: int = 0  # n_read when rhat was computed
    rhat_time: str | None = None
    states: pd.DataFrame | None = None  # its chain states, once complete
    device: dict | None = None  # what the page measured at the start (read once)


class Monitor:
    """The numbers of one study (`summary`), kept up to date incrementally; not thread-safe
    (the web layer calls it under a lock)."""

    def __init__(self, db: Database, study: str, d: int, n_shown: int,
                 precision: float = PRECISION_DEG, chains=None):
        self.db, self.study, self.d, self.n_shown = db, study, d, n_shown
        self.precision = precision
        self.chains = chains  # the study's ChainStore (shared chains), or None
        self._shared_groups: tuple[int, float, list] = (-1, -math.inf, [])
        self._sessions: dict[int, _Session] = {}
        self._credit = (time.monotonic(), RHAT_CREDIT_S)  # (when, CPU seconds left for R-hats)
        # finished ids -> (emotions table, each participant's verdicts in words)
        self._group: tuple[frozenset, list, dict[str, list[str]]] = (frozenset(), [], {})

    def summary(self) -> dict:
        """{"participants": [...], "counts": {...}, "emotions": [...]} for the study.

        participants: one entry per session (uid, participant, session, status, shown, of,
        catch_n, catch_accuracy, catch_flagged (below the report's minimum), rhat: the worst split
        R-hat over the emotions of that participant's own chains (rhat_time: when it was
        computed), verdicts: for a finished session the report's verdict per emotion against
        `precision` degrees, as "emotion: words", started, updated, device: the kind of
        device, browser, screen (px), dpr and refresh estimate (Hz) the page measured at the
        start, fullscreen_exits: times the participant left full screen); counts: sessions by status
        and trials answered; emotions: split R-hat of all chains of each emotion over the
        *finished* sessions (R-hat cuts every chain to the shortest, so a participant who has
        just begun would hide everyone else's draws), with the number of chains and draws per
        chain, the R-hat verdict and the group's prototype verdict (`prototype`); rhat_good,
        rhat_bad: the report's thresholds; precision. Burn-in: the first half of every chain,
        as in the report.
        """
        with warnings.catch_warnings():  # polled every few seconds: the report gives the warnings
            warnings.simplefilter("ignore")
            return self._summary()

    def _summary(self) -> dict:
        records = self.db.progress(self.study)
        kept = self._sessions
        for r in records:
            kept.setdefault(r.id, _Session())
        for sid, client in self.db.clients([r.id for r in records
                                            if kept[r.id].device is None]).items():
            kept[sid].device = {k: client.get(k) for k in DEVICE}
        exits = self.db.event_counts(self.study, "fullscreen_exit")
        catches = self.db.catch_counts(self.study)
        when, credit = self._credit
        credit = min(RHAT_CREDIT_S, credit + RHAT_SHARE * (time.monotonic() - when))
        # shared chains: a participant's rows are stretches of the study's chains, judged
        # as the study's chains (`_shared`), not as chains of their own
        waiting = [] if self.chains is not None else sorted(
            (r for r in records if r.n_rows > kept[r.id].rhat_rows),
            key=lambda r: (r.status != "complete", kept[r.id].rhat_time or ""))
        for r in waiting:
            if credit <= 0 and r.status != "complete":  # a finished one: once, for the verdicts
                break
            began = time.thread_time()  # this thread's CPU: waits for the cores do not count
            s = kept[r.id]
            rows = self.db.rows_after({r.id: s.n_read}, self.d).get(r.id, [])
            s.n_read += len(rows)
            s.rows += [row for row in rows if row["kind"] in KEPT_KINDS]
            states = _states(s.rows, self.d)
            s.rhat = None if states is None else _number(
                convergence(states, by=["participant"])["rhat_max"].max())
            s.rhat_rows, s.rhat_time = s.n_read, r.updated
            if r.status == "complete":
                s.states = states
            credit -= time.thread_time() - began
        self._credit = (time.monotonic(), credit)
        finished = frozenset(r.id for r in records if r.status == "complete"
                             and kept[r.id].states is not None)
        if finished != self._group[0]:
            judged = _judged([kept[i] for i in sorted(finished)], self.d, self.precision)
            words: dict[str, list[str]] = {}
            for v in ([] if judged is None else judged.itertuples()):
                words.setdefault(v.participant, []).append(f"{v.emotion}: {v.headline_words}")
            self._group = (finished, _emotions([kept[i].states for i in sorted(finished)],
                                               judged), words)
        verdicts = self._group[2]
        by_status = {s: sum(r.status == s for r in records) for s in STATUSES}
        return {
            "study": self.study,
            "counts": {"in_progress": by_status["consent"] + by_status["running"],
                       "done": by_status["complete"], "declined": by_status["declined"],
                       "abandoned": by_status["abandoned"],
                       "trials_answered": sum(r.shown for r in records)},
            "participants": [
                {"uid": r.uid, "participant": r.participant, "session": r.session,
                 "status": r.status, "shown": r.shown,
                 "of": self.n_shown, **_catch(*catches.get(r.id, (0, 0))),
                 "rhat": kept[r.id].rhat,
                 "rhat_time": kept[r.id].rhat_time, "started": r.created,
                 "updated": r.updated, "device": kept[r.id].device,
                 "fullscreen_exits": exits.get(r.id, 0),
                 "verdicts": verdicts.get(r.participant, []) if r.id in finished else []}
                for r in records],
            "emotions": self._group[1],
            "rhat_good": RHAT_GOOD,
            "rhat_bad": RHAT_BAD,
            "precision": self.precision,
            **({"shared": self._shared()} if self.chains is not None else {}),
        }

    def _shared(self) -> dict:
        """The shared chains now (see the module docstring)."""
        now = time.time()
        chains, leases = self.chains.chains(self.study), self.chains.leases(self.study)
        late = self.chains.late(self.study)
        expired = leases[leases["end_reason"] == "expired"].groupby("chain").size()
        n_late = late.groupby("chain").size() if len(late) else pd.Series(dtype=int)
        rows = []
        for c in chains.itertuples():
            held = pd.notna(c.holder)  # a free chain's holder reads as NaN, not None
            live = held and pd.notna(c.expires) and c.expires >= now
            rows.append({"chain": int(c.chain), "emotion": c.emotion, "shown": int(c.shown),
                         "target": int(c.target), "steps": int(c.version),
                         "holder": c.holder if live else None,
                         "expired_leases": int(expired.get(c.chain, 0)) + int(held and not live),
                         "late": int(n_late.get(c.chain, 0))})
        steps = int(chains["version"].sum()) if len(chains) else 0
        seen, when, groups = self._shared_groups
        if steps != seen and (seen <= 0 or time.monotonic() - when > GROUP_EVERY_S):
            groups = _shared_groups(self.chains.steps(self.study), self.d, self.precision)
            self._shared_groups = (steps, time.monotonic(), groups)
        return {"chains": rows, "groups": groups}


def _shared_groups(steps: list[dict], d: int, precision: float) -> list[dict]:
    """Per emotion (and estimate: as sampled, de-guided): the group prototype of the shared
    chains' steps so far, its 95% cone
    against `precision` degrees, R-hat and who moved the chains (`group_prototypes`)."""
    if not any(r["kind"] == "chain" for r in steps):
        return []
    table = group_prototypes(rows_frame(steps, d), target_deg=precision)
    return [{"emotion": g.emotion, "estimate": g.estimate, "cone95_deg": _number(g.cone95_deg),
             "rhat": _number(g.rhat_max), "rhat_verdict": g.verdict,
             "participants": int(g.n_participants),
             "verdict": (f"within {precision:g}°" if g.within_target
                         else f"not yet within {precision:g}°")}
            for g in table.itertuples()]


def _catch(n: int, correct: int) -> dict:
    """Catch accuracy from `n` scored catch answers, `correct` of them right: the numbers of
    `analysis.diagnostics.catch_accuracy` (flagged below its minimum)."""
    accuracy = correct / n if n else None
    return {"catch_n": n, "catch_accuracy": accuracy,
            "catch_flagged": bool(n and accuracy < MIN_CATCH_ACCURACY)}


def _judged(sessions: list[_Session], d: int, precision: float) -> pd.DataFrame | None:
    """The report's verdicts (`analysis.checks.inference_checks`) of the finished sessions, per
    participant x emotion and for the group (participant 'all')."""
    if not sessions:
        return None
    trials = rows_frame([r for s in sessions for r in s.rows], d)
    states = pd.concat([s.states for s in sessions], ignore_index=True)
    return inference_checks(states, trial_facts(trials), precision=precision)


def _group_words(judged: pd.DataFrame | None, emotion: str) -> str:
    """The group's verdict on an emotion's prototype, in words ('' when there is none)."""
    if judged is None:
        return ""
    row = judged[(judged["participant"] == "all") & (judged["emotion"] == emotion)]
    return "" if row.empty or not isinstance(row["headline_words"].iloc[0], str) else str(
        row["headline_words"].iloc[0])


def _states(rows: list[dict], d: int) -> pd.DataFrame | None:
    moves = [r for r in rows if r["kind"] in ("chain", "gate")]
    return chain_states(rows_frame(moves, d)) if any(r["kind"] == "chain" for r in moves) \
        else None


def _emotions(states: list[pd.DataFrame], judged: pd.DataFrame | None) -> list[dict]:
    if not states:
        return []
    table = convergence(pd.concat(states, ignore_index=True), by=[])
    return [{"emotion": e.emotion, "n_chains": int(e.n_chains), "n_draws": int(e.n_draws),
             "rhat": _number(e.rhat_max),
             "verdict": "too few draws yet" if e.n_chains > 1 and e.n_draws < 4 else e.verdict,
             "prototype": _group_words(judged, e.emotion)}
            for e in table.itertuples()]
