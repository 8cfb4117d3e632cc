"""Convergence and data-quality diagnostics: acceptance, autocorrelation, R-hat/ESS, catch trials,
response times. Tables in, tables out (pandas); no files, no plots.

Rules used (the report states them in plain words):
- Burn-in: `analysis.load.burn_in_steps` (default: the first 50% of each chain's steps).
- R-hat and ESS (ArviZ `rhat` rank-normalised split R-hat, `ess` bulk and tail) are computed
  across the chains of one emotion (per participant, and for the group across all participants)
  on each of the d coordinates of the unit-vector states; a sphere point has no single scalar,
  so we report the WORST coordinate: max R-hat and min ESS. Rule of thumb: R-hat < 1.05 is
  good, > 1.1 means the chains disagree (not converged: run longer); ESS >= 100 is enough for a
  stable prototype.
- Inattentive participant: catch-trial accuracy below `min_catch_accuracy` (default 0.8; pure
  guessing gives 0.5). The one-sided binomial p-value against guessing is reported alongside.
- Too-fast responses: the fraction of shown trials answered in under 0.2 s (faster than a face
  can be compared); a participant is flagged when it exceeds `max_fast_fraction` (default 0.1).
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
from scipy.stats import binomtest

from analysis.load import DEFAULT_BURN_IN, KEYS, post_burn_in, to_draws

RHAT_GOOD = 1.05
RHAT_BAD = 1.1
ESS_MIN = 100
MIN_CATCH_ACCURACY = 0.8
FAST_RT = 0.2
MAX_FAST_FRACTION = 0.1
SHOWN_KINDS = ["chain", "catch", "repeat"]


def acceptance(trials: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Acceptance per chain (default) or per `by` groups, e.g. ["participant", "emotion"].

    Columns: n_steps (chain + gate rows), n_shown, n_accepted, acceptance (accepted / shown: how
    often the person picked the proposal), gate_pass (shown / steps: 1 without a gate).
    """
    by = by or [*KEYS, "emotion"]
    steps = trials.loc[trials["kind"].isin(["chain", "gate"]).to_numpy(),
                       list(dict.fromkeys([*by, "kind", "accepted"]))]  # only what is counted
    shown = steps["kind"] == "chain"
    table = steps[by].assign(shown=shown, acc=steps["accepted"].fillna(False) & shown).groupby(
        by, sort=True).agg(n_steps=("shown", "size"), n_shown=("shown", "sum"),
                           n_accepted=("acc", "sum"))
    table["acceptance"] = table["n_accepted"] / table["n_shown"].where(table["n_shown"] > 0)
    table["gate_pass"] = table["n_shown"] / table["n_steps"]
    return table.reset_index()


def autocorrelation(states: pd.DataFrame, max_lag: int = 20,
                    burn_in: float | int = DEFAULT_BURN_IN) -> pd.DataFrame:
    """Autocorrelation of each coordinate of each chain after burn-in, lags 0..max_lag.

    Long format: participant, session, chain, emotion, coordinate, lag, acf. Computed with the FFT
    on the mean-centred series (biased estimator, as ArviZ's `autocorr`).
    """
    kept = post_burn_in(states, burn_in)
    xcols = [c for c in kept.columns if c.startswith("x_")]
    rows = []
    for key, group in kept.groupby([*KEYS, "emotion"], sort=True):
        x = group[xcols].to_numpy(float).T  # (d, n)
        acf = az.autocorr(x, axis=1)[:, : max_lag + 1]
        for i, col in enumerate(xcols):
            for lag in range(acf.shape[1]):
                rows.append((*key, col, lag, float(acf[i, lag])))
    return pd.DataFrame(rows, columns=[*KEYS, "emotion", "coordinate", "lag", "acf"])


def rhat_ess(draws: np.ndarray) -> dict[str, float]:
    """Worst-coordinate split R-hat and ESS of (chain, draw, d) unit-vector draws (ArviZ).

    Coordinates that never move in any chain (e.g. all chains stuck) give NaN R-hat; the max
    ignores NaN unless all are NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant coordinates -> 0/0
        rhat = [float(az.rhat(draws[:, :, i])) for i in range(draws.shape[2])]
        bulk = [float(az.ess(draws[:, :, i], method="bulk")) for i in range(draws.shape[2])]
        tail = [float(az.ess(draws[:, :, i], method="tail")) for i in range(draws.shape[2])]
    nan = np.isnan(rhat).all()
    return {
        "rhat_max": float("nan") if nan else float(np.nanmax(rhat)),
        "ess_bulk_min": float(np.nanmin(bulk)) if not np.isnan(bulk).all() else float("nan"),
        "ess_tail_min": float(np.nanmin(tail)) if not np.isnan(tail).all() else float("nan"),
    }


def convergence(states: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN,
                by: list[str] | None = None) -> pd.DataFrame:
    """R-hat and ESS across the chains of each emotion within each `by` group.

    by: ["participant"] (default; one row per participant x emotion) or [] for the whole group
    (all chains of an emotion, across participants). Columns: *by, emotion, n_chains, n_draws
    (per chain after burn-in), rhat_max, ess_bulk_min, ess_tail_min, verdict ('converged' if
    R-hat < 1.05, 'not converged' if > 1.1, else 'borderline'; 'too few chains' with one chain;
    '(few effective samples)' appended when ESS < 100).
    """
    by = ["participant"] if by is None else by
    rows = []
    groups = states.groupby(by, sort=True) if by else [((), states)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        for emotion, draws in to_draws(group, burn_in).items():
            n_chains, n_draws = draws.shape[:2]
            stats = (rhat_ess(draws) if n_chains > 1 and n_draws >= 4 else
                     {"rhat_max": float("nan"), "ess_bulk_min": float("nan"),
                      "ess_tail_min": float("nan")})
            rows.append({**dict(zip(by, key, strict=True)), "emotion": emotion,
                         "n_chains": n_chains, "n_draws": n_draws, **stats,
                         "verdict": _verdict(stats["rhat_max"], stats["ess_bulk_min"], n_chains)})
    return pd.DataFrame(rows)


def _verdict(rhat: float, ess: float, n_chains: int) -> str:
    if n_chains < 2 or np.isnan(rhat):
        return "too few chains"
    verdict = ("converged" if rhat < RHAT_GOOD else
               "not converged" if rhat > RHAT_BAD else "borderline")
    return verdict + (" (few effective samples)" if ess < ESS_MIN else "")


def catch_accuracy(trials: pd.DataFrame, min_accuracy: float = MIN_CATCH_ACCURACY) -> pd.DataFrame:
    """Catch-trial accuracy per participant: n_catch, n_correct, accuracy, p_value (one-sided
    binomial test against guessing, 0.5), flagged (accuracy < min_accuracy). Participants
    without catch trials get NaN accuracy and are not flagged."""
    catch = trials[trials["kind"] == "catch"]
    rows = []
    for participant in sorted(trials["participant"].dropna().unique()):
        scored = catch.loc[catch["participant"] == participant, "correct"].dropna()
        n, k = len(scored), int(scored.sum())
        accuracy = k / n if n else float("nan")
        p = binomtest(k, n, 0.5, alternative="greater").pvalue if n else float("nan")
        rows.append({"participant": participant, "n_catch": n, "n_correct": k,
                     "accuracy": accuracy, "p_value": p, "flagged": bool(n and accuracy < min_accuracy)})
    return pd.DataFrame(rows)


def response_times(trials: pd.DataFrame, fast: float = FAST_RT) -> pd.DataFrame:
    """RT summaries (seconds) of shown trials per participant: n, median, q25, q75, iqr,
    frac_fast (fraction under `fast` seconds)."""
    shown = trials[trials["kind"].isin(SHOWN_KINDS) & trials["rt"].notna()]
    rt = shown.assign(rt=shown["rt"].astype(float), fast=shown["rt"].astype(float) < fast)
    table = rt.groupby("participant", sort=True).agg(
        n=("rt", "size"), median=("rt", "median"), q25=("rt", lambda r: r.quantile(0.25)),
        q75=("rt", lambda r: r.quantile(0.75)), frac_fast=("fast", "mean"))
    table.insert(4, "iqr", table["q75"] - table["q25"])
    return table.reset_index()


def participant_flags(trials: pd.DataFrame, min_catch_accuracy: float = MIN_CATCH_ACCURACY,
                      max_fast_fraction: float = MAX_FAST_FRACTION) -> pd.DataFrame:
    """One row per participant: catch accuracy, RT summary, flagged and the reasons in words."""
    table = catch_accuracy(trials, min_catch_accuracy).merge(
        response_times(trials), on="participant", how="outer")
    reasons = []
    for row in table.itertuples():
        why = []
        if row.n_catch and row.accuracy < min_catch_accuracy:
            why.append(f"catch accuracy {row.accuracy:.0%} < {min_catch_accuracy:.0%}")
        if row.frac_fast > max_fast_fraction:
            why.append(f"{row.frac_fast:.0%} of answers faster than {FAST_RT} s")
        reasons.append("; ".join(why))
    table["reasons"] = reasons
    table["flagged"] = table["reasons"] != ""
    return table
