"""The experimenter page's numbers, from the online database: who is in progress or done, trials
answered, catch accuracy and each emotion's split R-hat so far.

It calls `analysis.diagnostics` on purpose, so the live page shows the numbers the report will
show later; like `mcmcp.demo`, the server is an application on top of `mcmcp` and `analysis`
(nothing in the engine, the store or the session imports analysis). It only reads.
"""

from __future__ import annotations

import math
import warnings

from analysis.checks import inference_checks, trial_facts
from analysis.diagnostics import RHAT_BAD, RHAT_GOOD, catch_accuracy, convergence
from analysis.load import chain_states
from analysis.verdicts import PRECISION_DEG
from mcmcp.online.database import Database


def _number(value) -> float | str | None:
    """JSON has no NaN or infinity: NaN (nothing to compute) becomes null, an infinite R-hat
    (chains that never moved, each stuck in its own place: the worst case, not a missing one)
    becomes the string "inf", which the page shows as ∞ in red."""
    value = float(value)
    if math.isnan(value):
        return None
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


# The verdicts of the finished sessions, recomputed only when the set of finished sessions
# changes (a finished session's rows never change): {study: (finished, table)}
_JUDGED: dict = {}


def summary(db: Database, study: str, d: int, n_shown: int,
            precision: float = PRECISION_DEG) -> dict:
    """{"participants": [...], "counts": {...}, "emotions": [...]} for the study.

    participants: one entry per session (participant, status, shown, of, catch_n,
    catch_accuracy, catch_flagged (below the report's minimum), rhat: the worst split R-hat
    over the emotions of that participant's own chains so far, verdicts: for a finished session
    the report's verdict per emotion (`analysis.verdicts`, against `precision` degrees) as
    "emotion: words", started, updated); counts: sessions by status and trials answered;
    emotions: split R-hat of all chains of each emotion over the *finished* sessions (R-hat cuts
    every chain to the shortest, so a participant who has just begun would hide everyone
    else's draws), with the number of chains and draws per chain, the R-hat verdict and the
    group's prototype verdict (`prototype`); rhat_good, rhat_bad: the report's thresholds,
    precision. Burn-in: the first half of every chain, as in the report.
    """
    with warnings.catch_warnings():  # polled every few seconds: the report gives the warnings
        warnings.simplefilter("ignore")
        return _summary(db, study, d, n_shown, precision)


def _judged(study: str, trials, states, done: set, precision: float):
    """The verdicts (`analysis.checks.inference_checks`) of the finished sessions, cached until
    another one finishes."""
    key = (frozenset(done), precision)
    if study not in _JUDGED or _JUDGED[study][0] != key:
        mine = trials["participant"].isin(done)
        _JUDGED[study] = (key, inference_checks(states[states["participant"].isin(done)],
                                                trial_facts(trials[mine]), precision=precision))
    return _JUDGED[study][1]


def _summary(db: Database, study: str, d: int, n_shown: int, precision: float) -> dict:
    records = db.all_sessions(study)
    trials = db.study_frame(study, d)
    catch = catch_accuracy(trials).set_index("participant") if len(trials) else None
    states = chain_states(trials) if (trials["kind"] == "chain").any() else None
    done = {r.participant for r in records if r.status == "complete"}
    judged = None
    if done and states is not None and states["participant"].isin(done).any():
        judged = _judged(study, trials, states, done, precision)
    own = {}
    if states is not None:
        for participant, table in convergence(states, by=["participant"]).groupby("participant"):
            own[participant] = _number(table["rhat_max"].max())
    participants = []
    for r in records:
        row = {"uid": r.uid, "participant": r.participant, "session": r.session,
               "status": r.status, "shown": r.shown,
               "of": n_shown, "catch_n": 0, "catch_accuracy": None, "catch_flagged": False,
               "rhat": own.get(r.participant), "started": r.created, "updated": r.updated,
               "verdicts": [] if judged is None else [
                   f"{v.emotion}: {v.headline_words}"
                   for v in judged[judged["participant"] == r.participant].itertuples()]}
        if catch is not None and r.participant in catch.index:
            row["catch_n"] = int(catch.loc[r.participant, "n_catch"])
            row["catch_accuracy"] = _number(catch.loc[r.participant, "accuracy"])
            row["catch_flagged"] = bool(catch.loc[r.participant, "flagged"])
        participants.append(row)
    emotions = []
    if done and states is not None:
        table = convergence(states[states["participant"].isin(done)], by=[])
        emotions = [{"emotion": e.emotion, "n_chains": int(e.n_chains), "n_draws": int(e.n_draws),
                     "rhat": _number(e.rhat_max),
                     "verdict": "too few draws yet" if e.n_chains > 1 and e.n_draws < 4
                     else e.verdict,
                     "prototype": _group_words(judged, e.emotion)}
                    for e in table.itertuples()]
    by_status = {s: sum(r.status == s for r in records)
                 for s in ("consent", "running", "complete", "declined")}
    return {
        "study": study,
        "counts": {"in_progress": by_status["consent"] + by_status["running"],
                   "done": by_status["complete"], "declined": by_status["declined"],
                   "trials_answered": sum(r.shown for r in records)},
        "participants": participants,
        "emotions": emotions,
        "rhat_good": RHAT_GOOD,
        "rhat_bad": RHAT_BAD,
        "precision": precision,
    }


def _group_words(judged, emotion: str) -> str:
    """The group's verdict on an emotion's prototype, in words ('' when there is none)."""
    if judged is None:
        return ""
    row = judged[(judged["participant"] == "all") & (judged["emotion"] == emotion)]
    return "" if row.empty or not isinstance(row["headline_words"].iloc[0], str) else str(
        row["headline_words"].iloc[0])
