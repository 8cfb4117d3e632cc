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

import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mcmcp import schema

KEYS = ["participant", "session", "chain"]
DEFAULT_BURN_IN = 0.5
_TRUE = {"true": True, "1": True, "false": False, "0": False}


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


def _malformed(path: Path, line: int, message: str) -> ValueError:
    return ValueError(f"{path}, line {line}: {message}")


def _convert(cells: pd.Series, dtype: str, name: str, lines: np.ndarray, path: Path) -> pd.Series:
    """Text cells of one column -> the schema dtype; raise naming the first bad cell."""
    empty = cells == ""
    if dtype == "string":
        return cells.where(~empty, None).astype("string")
    if dtype == "boolean":
        lowered = cells.str.lower()
        bad = ~empty & ~lowered.isin(list(_TRUE))
        values = lowered.map(_TRUE)
    else:
        values = pd.to_numeric(cells.where(~empty, None), errors="coerce")
        bad = ~empty & values.isna()
        if dtype == "Int64":
            bad |= values.notna() & (values % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        kind = {"boolean": "True/False", "Int64": "an integer"}.get(dtype, "a number")
        raise _malformed(path, int(lines[i]), f"column {name!r} must be {kind}, got {cells.iloc[i]!r}")
    return values.astype(dtype)


def read_trials_csv(path: str | Path) -> pd.DataFrame:
    """One session's trials.csv -> DataFrame with the schema's columns and dtypes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing trials file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    records, lines = [], []
    try:
        for record in reader:
            records.append(record)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise _malformed(path, reader.line_num, f"unreadable CSV ({err})") from None
    if not records:
        raise _malformed(path, 1, "empty file: the header line is missing")
    if not text.endswith(("\n", "\r")) and len(records) > 1:
        # Rows are written whole, newline last, then fsynced: no newline means a torn write.
        warnings.warn(
            f"{path}: dropped the torn last line {lines[-1]} (the session stopped mid-write)",
            stacklevel=2,
        )
        records, lines = records[:-1], lines[:-1]
    names = records[0]
    d = schema.latent_dim(names)
    expected = schema.header(d)
    missing = [c for c in expected if c not in names]
    if d < 2 or missing:
        raise _malformed(path, 1, f"missing columns {missing or ['current_0', 'current_1']}; "
                                  "see mcmcp.schema.columns() for the trial schema")
    unknown = [c for c in names if c not in expected]
    if unknown:
        warnings.warn(f"{path}: ignoring columns that are not in the trial schema: {unknown}",
                      stacklevel=2)
    body, body_lines = records[1:], np.asarray(lines[1:], dtype=int)
    for record, line in zip(body, body_lines, strict=True):
        if len(record) != len(names):
            raise _malformed(path, int(line), f"{len(record)} cells, the header has {len(names)}")
    raw = pd.DataFrame(body, columns=names, dtype=object)
    if raw.empty:
        raw = pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    out = pd.DataFrame({
        name: _convert(raw[name].astype(str), dtype, name, body_lines, path)
        for name, dtype in schema.pandas_dtypes(d).items()
    })
    bad_kind = ~out["kind"].isin(schema.KINDS).fillna(False)
    if bad_kind.any():
        i = int(np.flatnonzero(bad_kind.to_numpy())[0])
        raise _malformed(path, int(body_lines[i]),
                         f"kind {raw['kind'].iloc[i]!r} is not one of {', '.join(schema.KINDS)}")
    return out


def load_trials(path: str | Path) -> pd.DataFrame:
    """All trials under `path` (session folder, participant folder or data tree), one row per event.

    Columns and dtypes are the trial schema's (`mcmcp.schema.pandas_dtypes(d)`); rows keep the
    order of each file, files are taken in folder order. All sessions must share one d.
    """
    frames = []
    for folder in session_folders(path):
        frames.append(read_trials_csv(folder / "trials.csv"))
    dims = {schema.latent_dim(list(f.columns)) for f in frames}
    if len(dims) > 1:
        raise ValueError(f"sessions under {path} mix latent dimensions {sorted(dims)}; "
                         "analyse studies with different models separately")
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- session.json


def read_session_json(path: str | Path) -> dict:
    """One session.json as a dict; errors name the file (and line for bad JSON)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing session file: {path}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


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
    steps = trials[trials["kind"].isin(["chain", "gate"])]
    steps = steps.sort_values([*KEYS, "iteration"], kind="stable").reset_index(drop=True)
    if steps[[*KEYS, "iteration"]].duplicated().any():
        dup = steps[steps[[*KEYS, "iteration"]].duplicated()].iloc[0]
        raise ValueError(f"participant {dup['participant']} session {dup['session']} chain "
                         f"{dup['chain']}: iteration {dup['iteration']} appears twice")
    cur = steps[schema.latent_columns("current", d)].to_numpy(float)
    prop = steps[schema.latent_columns("proposal", d)].to_numpy(float)
    accepted = steps["accepted"].fillna(False).to_numpy(bool)
    log_cur = steps["log_gate_current"].to_numpy(float, na_value=np.nan)
    log_prop = steps["log_gate_proposal"].to_numpy(float, na_value=np.nan)
    after = np.where(accepted[:, None], prop, cur)
    first = ~steps[KEYS].duplicated().to_numpy()
    same_chain = ~first[1:]
    jump = np.abs(after[:-1] - cur[1:]).max(axis=1) > 1e-9
    iters = steps["iteration"].to_numpy(int)
    gaps = np.diff(iters) != 1
    for problem, what in ((same_chain & jump, "does not continue from the previous state"),
                          (same_chain & gaps, "leaves a gap in the iterations")):
        if problem.any():
            bad = steps.iloc[int(np.flatnonzero(problem)[0]) + 1]
            warnings.warn(f"participant {bad['participant']} session {bad['session']} chain "
                          f"{bad['chain']}: iteration {bad['iteration']} {what}; the chain is "
                          "rebuilt from the rows as recorded", stacklevel=2)
    meta = steps[[*KEYS, "emotion", "agent", "gate_gamma"]]
    starts = meta[first].assign(step=0, accepted=False, shown=False,
                                log_gate=log_cur[first])
    starts[state_columns(d)] = cur[first]
    moved = meta.assign(step=iters + 1, accepted=accepted,
                        shown=(steps["kind"] == "chain").to_numpy(),
                        log_gate=np.where(accepted, log_prop, log_cur))
    moved[state_columns(d)] = after
    states = pd.concat([starts, moved], ignore_index=True)
    states = states.sort_values([*KEYS, "step"], kind="stable").reset_index(drop=True)
    states["n_steps"] = states.groupby(KEYS)["step"].transform("max")
    states["log_gate"] = states["log_gate"].astype("Float64")
    order = [*KEYS, "emotion", "agent", "step", "n_steps", *state_columns(d), "accepted", "shown",
             "log_gate", "gate_gamma"]
    return states[order]


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
    unless burn_in is 0)."""
    cut = burn_in_steps(states["n_steps"].to_numpy(int), burn_in)
    if float(burn_in) == 0:
        return states.copy()
    return states[states["step"].to_numpy(int) > cut].copy()


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
