"""Participant files -> tidy pandas DataFrames, and chains rebuilt from them.

Reads what lab sessions and simulations write (`mcmcp.schema`): a ``participants_data/`` tree
``sub-<id>/ses-<NN>/{trials.csv, session.json}``, one participant folder or one session folder.
Every file is opened read-only and never modified. Errors name the file (and the line, for
`trials.csv`); a torn last line (the writer crashed mid-line: every complete row ends with a
newline) is dropped with a warning naming the file.

Chains are identified by (participant, session, chain). `chain_states` rebuilds the exact chain
from its `chain` and `gate` rows; `to_draws` turns the states after burn-in into the
(chain, draw, d) arrays ArviZ expects.

Burn-in rule (used by every diagnostic and prototype): `burn_in` is either a fraction in
[0, 1) of each chain's steps (default 0.5: discard the first half, Gelman's classic choice) or a
whole number of steps. Every step counts, shown or screened out by the gate, because every step
is a transition of the chain.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.trials_csv import read_json_object, read_session, to_pandas
from mcmcp import schema

KEYS = ["participant", "session", "chain"]
DEFAULT_BURN_IN = 0.5


# ----------------------------------------------------------------------------- finding files


def session_folders(path: str | Path) -> list[Path]:
    """The session folders under `path`: a session folder itself, a participant folder
    (``ses-*`` inside) or a data tree (``sub-*/ses-*``), sorted. Raises FileNotFoundError."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no such folder: {path}")
    if (path / "trials.csv").is_file() or (path / "session.json").is_file():
        return [path]
    folders = sorted(p for p in path.glob("ses-*") if p.is_dir())
    if not folders:
        folders = sorted(p for p in path.glob("sub-*/ses-*") if p.is_dir())
    if not folders:
        raise FileNotFoundError(
            f"no session folders in {path}; expected sub-<id>/ses-<NN>/trials.csv (a data tree), "
            "ses-<NN>/trials.csv (a participant folder) or trials.csv (a session folder)"
        )
    return folders


# ----------------------------------------------------------------------------- trials.csv


def load_trials(path: str | Path, cache: str | Path | None = None,
                columns: list[str] | None = None) -> pd.DataFrame:
    """All trials under `path` (session folder, participant folder or data tree), one row per event.

    Columns and dtypes are the trial schema's (`mcmcp.schema.pandas_dtypes(d)`); rows keep the
    order of each file, files are taken in folder order. All sessions must share one d.
    cache: a folder where each session is kept as Parquet (see `analysis.trials_csv`), so a
    second load reads only the files that changed; None (default) reads every CSV.
    columns: only these columns besides the current_*/proposal_* coordinates (None: all); a
    large study takes a fraction of the memory when the analysis needs few columns.
    """
    tables, dims = [], {}
    for folder in session_folders(path):
        table = read_session(folder, cache, columns)
        tables.append(table)
        dims.setdefault(schema.latent_dim(table.column_names), folder)
    if len(dims) > 1:
        raise ValueError(f"sessions under {path} mix latent dimensions {sorted(dims)} (e.g. "
                         f"{', '.join(str(f) for f in dims.values())}); analyse studies with "
                         "different models separately")
    return to_pandas(tables)


# ----------------------------------------------------------------------------- session.json


def read_session_json(path: str | Path) -> dict:
    """One session.json as a dict; errors name the file (and line for bad JSON)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing session file: {path}")
    return read_json_object(path)


def load_sessions(path: str | Path) -> pd.DataFrame:
    """session.json metadata under `path`, one row per session.

    Top-level scalar keys become columns as they are; nested ones (config, ground_truth, versions,
    ...) are kept as dicts in object columns. Added: participant and session (from the folder
    name when the file lacks them), folder, gate_kind, gate_gamma, emotions (comma-separated),
    agent_name (the agent's name or kind, 'human' when none).
    """
    rows = []
    for folder in session_folders(path):
        meta = read_session_json(folder / "session.json")
        config = meta.get("config") or {}
        gate = config.get("gate") or {}
        agent = meta.get("agent")
        if isinstance(agent, dict):
            agent = agent.get("name") or agent.get("kind")
        row = dict(meta)
        row.update(
            participant=str(meta.get("participant", folder.parent.name.removeprefix("sub-"))),
            session=int(meta.get("session", folder.name.removeprefix("ses-"))),
            folder=str(folder),
            gate_kind=gate.get("kind", "none"),
            gate_gamma=float(gate["gamma"]) if gate.get("kind", "none") != "none" else math.nan,
            emotions=",".join(config.get("emotions", [])),
            agent_name=agent or "human",
        )
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- chains


def state_columns(d: int) -> list[str]:
    """Coordinate columns of `chain_states`: x_0 .. x_{d-1}."""
    return [f"x_{i}" for i in range(d)]


def chain_states(trials: pd.DataFrame) -> pd.DataFrame:
    """The exact chains rebuilt from their chain and gate rows, one row per state.

    For every (participant, session, chain): step 0 is the start (the first row's current state);
    step t + 1 is the state after iteration t: its proposal if accepted, else its current state.
    Gate rows are steps where the chain stayed. Columns: participant, session, chain, emotion,
    agent, step, n_steps (steps the chain took), x_0..x_{d-1}, accepted (this step moved the
    chain; False at step 0), shown (this step was a shown trial), log_gate (log g at this state,
    NaN without a gate), gate_gamma. Sorted by chain then step.

    Warns when a chain's iterations have gaps or a row's current state is not the state the
    previous row left the chain in (a file edited or rows lost); raises on duplicate iterations.
    """
    d = schema.latent_dim(list(trials.columns))
    # Work on arrays of the step rows in chain order; the table is only read, never copied.
    rows = np.flatnonzero(trials["kind"].isin(["chain", "gate"]).to_numpy())
    participant = pd.factorize(trials["participant"].to_numpy()[rows], sort=True)[0]
    session = trials["session"].to_numpy(np.int64, na_value=-1)[rows]
    chain = trials["chain"].to_numpy(np.int64, na_value=-1)[rows]
    iters = trials["iteration"].to_numpy(np.int64, na_value=-1)[rows]
    order = np.lexsort((iters, chain, session, participant))
    rows, iters = rows[order], iters[order]
    key = np.stack([participant[order], session[order], chain[order]])
    first = np.ones(len(rows), bool)
    first[1:] = (key[:, 1:] != key[:, :-1]).any(axis=0)
    same_chain = ~first[1:]
    repeated = np.flatnonzero(same_chain & (np.diff(iters) == 0))
    if repeated.size:
        dup = trials.iloc[rows[repeated[0] + 1]]
        raise ValueError(f"participant {dup['participant']} session {dup['session']} chain "
                         f"{dup['chain']}: iteration {dup['iteration']} appears twice")
    cur = trials[schema.latent_columns("current", d)].to_numpy(float)[rows]
    prop = trials[schema.latent_columns("proposal", d)].to_numpy(float)[rows]
    accepted = trials["accepted"].to_numpy(bool, na_value=False)[rows]
    log_cur = trials["log_gate_current"].to_numpy(float, na_value=np.nan)[rows]
    log_prop = trials["log_gate_proposal"].to_numpy(float, na_value=np.nan)[rows]
    after = np.where(accepted[:, None], prop, cur)
    jump = np.abs(after[:-1] - cur[1:]).max(axis=1) > 1e-9
    gaps = np.diff(iters) != 1
    for problem, what in ((same_chain & jump, "does not continue from the previous state"),
                          (same_chain & gaps, "leaves a gap in the iterations")):
        if problem.any():
            bad = trials.iloc[rows[int(np.flatnonzero(problem)[0]) + 1]]
            warnings.warn(f"participant {bad['participant']} session {bad['session']} chain "
                          f"{bad['chain']}: iteration {bad['iteration']} {what}; the chain is "
                          "rebuilt from the rows as recorded", stacklevel=2)
    # The states in their final order (chain by chain: the start, then one state per step),
    # placed by position.
    starts_at = np.flatnonzero(first)  # each chain's first step
    moved_to = np.arange(len(rows)) + np.cumsum(first)  # state row of each step's result
    start_to = starts_at + np.arange(len(starts_at))  # state row of each chain's start
    total = len(rows) + len(starts_at)
    source = np.empty(total, dtype=np.int64)  # the trial row whose labels a state carries
    source[moved_to], source[start_to] = rows, rows[starts_at]
    step = np.zeros(total, dtype=np.int64)
    step[moved_to] = iters + 1
    x = np.empty((total, d))
    x[moved_to], x[start_to] = after, cur[first]
    moved, shown = np.zeros(total, bool), np.zeros(total, bool)
    moved[moved_to] = accepted
    shown[moved_to] = (trials["kind"].to_numpy()[rows] == "chain")
    log_gate = np.empty(total)
    log_gate[moved_to] = np.where(accepted, log_prop, log_cur)
    log_gate[start_to] = log_cur[first]
    states = trials[[*KEYS, "emotion", "agent"]].take(source).reset_index(drop=True)
    states["step"] = step
    states["n_steps"] = np.repeat(np.maximum.reduceat(iters + 1, starts_at),
                                  np.diff(np.append(start_to, total)))
    for i, column in enumerate(state_columns(d)):
        states[column] = x[:, i]
    states["accepted"], states["shown"] = moved, shown
    states["log_gate"] = pd.array(log_gate, dtype="Float64")
    states["gate_gamma"] = trials["gate_gamma"].to_numpy(float, na_value=np.nan)[source]
    return states


def burn_in_steps(n_steps: np.ndarray | int, burn_in: float | int = DEFAULT_BURN_IN) -> np.ndarray:
    """Steps discarded as burn-in for chains of `n_steps` steps (see the module doc for the rule).

    burn_in: float in [0, 1) = that fraction of each chain's steps (floored); int >= 0 = that
    many steps (capped at the chain's length).
    """
    n = np.asarray(n_steps)
    if isinstance(burn_in, (int, np.integer)) and not isinstance(burn_in, bool):
        if burn_in < 0:
            raise ValueError(f"burn_in={burn_in}: a step count must be >= 0")
        return np.minimum(n, burn_in)
    if not 0.0 <= float(burn_in) < 1.0:
        raise ValueError(f"burn_in={burn_in}: a fraction must be in [0, 1)")
    return np.floor(n * float(burn_in)).astype(int)


def post_burn_in(states: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN) -> pd.DataFrame:
    """The states kept after burn-in: step > burn-in count of their chain (step 0 never kept
    unless burn_in is 0: then `states` itself is returned, not a copy, so states cut once can
    be passed on with burn_in=0 at no cost)."""
    cut = burn_in_steps(states["n_steps"].to_numpy(int), burn_in)
    if float(burn_in) == 0:
        return states
    return states[states["step"].to_numpy(int) > cut]


def to_draws(data: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN) -> dict[str, np.ndarray]:
    """Post-burn-in states as {emotion: (chain, draw, d) array} for ArviZ.

    data: trials (`load_trials`) or states (`chain_states`). Chains are ordered by
    (participant, session, chain). Chains of unequal length (gate steps vary) are cut to the
    shortest, keeping each chain's LAST draws (the ones furthest from the start).
    """
    states = chain_states(data) if "kind" in data.columns else data
    kept = post_burn_in(states, burn_in)
    xcols = [c for c in kept.columns if c.startswith("x_")]
    out = {}
    for emotion, group in kept.groupby("emotion", sort=True):
        chains = [g[xcols].to_numpy(float) for _, g in group.groupby(KEYS, sort=True)]
        n, longest = min(len(c) for c in chains), max(len(c) for c in chains)
        if n < longest / 2:
            warnings.warn(
                f"emotion {emotion}: chains differ in length (shortest {n}, longest {longest} "
                f"post-burn-in draws); R-hat and ESS use the last {n} draws of every chain. "
                "Analyse designs with different trials per chain separately.", stacklevel=2)
        out[str(emotion)] = np.stack([c[len(c) - n:] for c in chains])
    return out
