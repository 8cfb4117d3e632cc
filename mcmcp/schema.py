"""The one trial-row schema, written by lab sessions and simulations alike and read by analysis.

A session's `trials.csv` has one row per event, in the order the events happened. Which event a
row is, is said by `kind`:

- ``chain``    an MCMCP trial that was shown; the chain moved to the proposal iff ``accepted``.
- ``gate``     a proposal the gatekeeper screened out: never shown, the chain stayed.
- ``catch``    a clear exemplar of the target emotion (in ``current_*``) against one of another
               emotion (``foil_emotion``, in ``proposal_*``); scored in ``correct``.
- ``repeat``   an earlier chain pair shown again with sides swapped (``repeat_of`` = its ``row``).
- ``practice`` before the real trials; never analysed.
- ``late``     a shared chain's trial (across-participant designs) answered after the
               participant's lease on the chain had ended: shown and answered, but no step of
               any chain (the chain went on without it); ``chain`` and ``lease`` say which it
               was for, and the chain store keeps the answer in its audit table.

Every proposal is one ``iteration`` of its chain, shown or not, so a chain's ``chain`` and ``gate``
rows sorted by ``iteration`` rebuild the exact chain: next state = proposal if accepted else current.
Coordinates are written with full float precision so that the rebuilt states equal the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("chain", "gate", "catch", "repeat", "practice", "late")
ROLES = ("current", "proposal", "target", "foil", "")
RESPONSES = ("left", "right", "")


@dataclass(frozen=True)
class Column:
    """One column: its name, pandas dtype and meaning."""

    name: str
    dtype: str
    doc: str


_BEFORE_LATENT = (
    Column("participant", "string", "participant id without the 'sub-' prefix (simulated: 'sim001')"),
    Column("session", "Int64", "session number (1-based)"),
    Column("block", "Int64", "block number within the session (0-based); one emotion per block"),
    Column("emotion", "string", "target emotion of the block, one of vae.labels.EMOTIONS"),
    Column("row", "Int64", "0-based index of this row in the session's file (order of events)"),
    Column("trial", "Int64", "1-based count of shown trials in the session; empty for gate rows"),
    Column("kind", "string", "chain | gate | catch | repeat | practice | late (see module doc)"),
    Column("chain", "Int64", "chain id within the participant-session; empty for catch/practice"),
    Column("iteration", "Int64", "0-based step of the chain this row is (chain and gate rows)"),
)

_AFTER_LATENT = (
    Column("kappa_proposal", "Float64", "concentration of the vMF proposal used for this step"),
    Column("log_gate_current", "Float64", "log gatekeeper density log g at the current state"),
    Column("log_gate_proposal", "Float64", "log g at the proposal"),
    Column("gate_gamma", "Float64", "gate exponent gamma in force at this step (0 once an annealed "
           "gate is off); empty for unguided chains (no gate, or a control chain)"),
    Column("gate_prob", "Float64", "probability the gate let this proposal through (Barker on "
           "g^gamma; 1 when gamma is 0)"),
    Column("left_role", "string", "what was shown on the left: current | proposal | target | foil"),
    Column("right_role", "string", "what was shown on the right"),
    Column("response", "string", "left | right; empty for gate rows"),
    Column("chose_proposal", "boolean", "the respondent picked the proposal (chain/repeat rows)"),
    Column("accepted", "boolean", "the chain moved to the proposal (chain rows); False for gate rows"),
    Column("correct", "boolean", "catch rows: the respondent picked the target"),
    Column("foil_emotion", "string", "catch rows: the emotion of the foil"),
    Column("repeat_of", "Int64", "repeat rows: the `row` of the trial shown again"),
    Column("rt", "Float64", "response time in seconds from stimulus onset (the flip)"),
    Column("onset", "Float64", "stimulus onset in seconds on the session clock: 0 when the "
                               "session's first run started; a resumed run goes on from the "
                               "wall-clock time elapsed since then (see `run`)"),
    Column("gap", "Float64", "seconds from the previous response to this onset (preparation gap)"),
    Column("dropped_frames", "Int64", "frames dropped while this trial was on screen"),
    Column("agent", "string", "'human' or the synthetic agent's name"),
    Column("timestamp", "string", "wall-clock time the row was written (UTC, ISO 8601)"),
    # Added for lab users (PsychoPy's participant/session/date/expName/frameRate habit); columns
    # are only ever appended here, so files and readers of the earlier schema keep their order.
    Column("run", "Int64", "which run of the session wrote the row (1 = first start, +1 per "
                           "--resume); session.json `runs` has each run's clock and frame rate"),
    Column("key", "string", "the key pressed (e.g. left, f); empty for a click, an agent's answer "
                            "and gate rows"),
    Column("device", "string", "what answered: keyboard | mouse | touch (a touch screen, online) "
                               "| agent; empty for gate rows"),
    Column("experiment", "string", "the experiment's name (config `name`)"),
    Column("date", "string", "local date and time the session started (ISO 8601 with UTC offset)"),
    Column("frame_rate", "Float64", "refresh rate (Hz) measured at the start of the row's run; "
                                    "empty without a window"),
    # Identity models (issue 11): both faces of a pair are one child's (mcmcp.identities).
    Column("identity", "string", "the child both faces show: an identity of the face store (its "
                                 "reference face draws the child; session.json `identity`); "
                                 "empty for a plain model"),
)


# Gibbs Sampling with People (mcmcp.sampling.gsp), appended last. In a GSP chain row `current_*` is the
# state, `proposal_*` the point the respondent confirmed, `accepted` whether the chain moved there
# (False for the state itself or a move the gate refused), `response` is empty.
_PARADIGM = (
    Column("paradigm", "string", "mcmcp (two faces) | gsp (slider along a great circle); empty "
                                 "in files written before GSP: mcmcp"),
    Column("gsp_points", "Int64", "GSP: points K on the circle; point k is at 360*k/K degrees "
                                  "from the current state along direction_*"),
    Column("gsp_shift", "Int64", "GSP: the circle point shown at the slider's left end (position "
                                 "j shows point (j + gsp_shift) mod K)"),
    Column("gsp_start", "Int64", "GSP: the circle point the slider's handle started on (random)"),
    Column("gsp_choice", "Int64", "GSP: the circle point confirmed (its code is proposal_*)"),
)


# Across-participant chains (issue 22, `mcmcp.shared`), appended last. A shared chain belongs to
# the study, not to one session: `chain` is its study-wide id (emotion k of the config's
# emotions: chains k*per_emotion ...), `participant` says who moved it at this step.
_SHARED = (
    Column("lease", "string", "shared chains: the lease under which the participant held the "
                              "chain at this step (one id per hold; every step of a hold has "
                              "it); empty for a participant's own chains"),
    Column("chain_step", "Int64", "shared chains: the chain's step number in the study (0-based, "
                                  "counted over everyone who moved it; = iteration): the rows "
                                  "of a chain sorted by chain_step are one unbroken line, each "
                                  "continuing the state the step before left; empty for a "
                                  "participant's own chains"),
)


def direction_columns(d: int) -> list[str]:
    """Names of the d coordinate columns of a GSP circle's direction."""
    return [f"direction_{i}" for i in range(d)]


def latent_columns(prefix: str, d: int) -> list[str]:
    """Names of the d coordinate columns for `prefix` ('current' or 'proposal')."""
    return [f"{prefix}_{i}" for i in range(d)]


def columns(d: int) -> list[Column]:
    """All columns, in file order, for a latent sphere in R^d."""
    latent = [
        Column(name, "Float64", f"{prefix} state, coordinate {i} (unit vector in R^{d})")
        for prefix in ("current", "proposal")
        for i, name in enumerate(latent_columns(prefix, d))
    ]
    direction = [Column(name, "Float64", f"GSP: the circle's unit tangent direction at the "
                                         f"current state, coordinate {i}")
                 for i, name in enumerate(direction_columns(d))]
    return [*_BEFORE_LATENT, *latent, *_AFTER_LATENT, *_PARADIGM, *direction, *_SHARED]


def header(d: int) -> list[str]:
    """Column names, in file order."""
    return [c.name for c in columns(d)]


def pandas_dtypes(d: int) -> dict[str, str]:
    """dtype mapping for `pandas.read_csv(..., dtype=...)`."""
    return {c.name: c.dtype for c in columns(d)}


def latent_dim(names: list[str]) -> int:
    """d from a file's header: the number of `current_*` columns."""
    return sum(1 for n in names if n.startswith("current_"))


def codebook(d: int) -> str:
    """The data dictionary written next to every trials.csv as codebook.csv: one line per column
    (column, dtype, meaning), dtypes as pandas names (read with mcmcp.store.read_trials)."""
    lines = ["column,dtype,meaning\n"]
    lines += [format_row({"column": c.name, "dtype": c.dtype, "meaning": c.doc},
                         ["column", "dtype", "meaning"]) for c in columns(d)]
    return "".join(lines)


def format_value(value: object) -> str:
    """One CSV cell: floats in full precision (repr round-trips), None/NaN as empty."""
    if value is None:
        return ""
    if hasattr(value, "item"):  # numpy scalars first: repr(np.float64) is "np.float64(...)"
        return format_value(value.item())
    if isinstance(value, float):
        return "" if value != value else repr(value)
    text = str(value)
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def format_row(row: dict[str, object], names: list[str]) -> str:
    """One CSV line (with newline) with the cells of `row` in the order of `names`.

    Raises KeyError for a key that is not a column, so a typo never silently drops data.
    """
    unknown = set(row) - set(names)
    if unknown:
        raise KeyError(f"not trial-schema columns: {sorted(unknown)}; see mcmcp.schema.columns()")
    return ",".join(format_value(row.get(n)) for n in names) + "\n"


def _column_cells(values: object, n: int) -> list[str]:
    """The n cells of one column, each exactly as `format_value` writes it."""
    import numpy as np  # here, not at the top: the schema itself must stay import-light
    import pandas as pd

    if values is None or isinstance(values, (str, int, float, bool)):
        return [format_value(values)] * n
    if isinstance(values, pd.api.extensions.ExtensionArray) and values.dtype.kind in "iub":
        missing = np.asarray(values.isna())
        data = values.to_numpy(dtype=values.dtype.numpy_dtype, na_value=0)
        cells = np.array(_column_cells(data, n), dtype=object)
        cells[missing] = ""
        return cells.tolist()
    if isinstance(values, pd.api.extensions.ExtensionArray) and values.dtype.kind == "f":
        values = values.to_numpy(dtype=float, na_value=np.nan)
    values = np.asarray(values) if not isinstance(values, pd.api.extensions.ExtensionArray) \
        else values.to_numpy(dtype=object, na_value=None)
    if values.dtype.kind == "f":
        return ["" if v != v else repr(v) for v in values.tolist()]
    if values.dtype.kind in "iu":
        return list(map(str, values.tolist()))
    if values.dtype.kind == "b":
        return np.where(values, "True", "False").tolist()
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    text = np.array([format_value(u) for u in uniques] + [""], dtype=object)
    return text[codes].tolist()  # code -1 (missing) picks the trailing ""


def format_columns(columns: dict[str, object], n: int, names: list[str]) -> str:
    """n CSV lines (each ending in a newline) from column arrays: exactly the lines `format_row`
    writes for the same rows, some 20x faster (a simulated study writes millions of rows).

    columns: name -> a length-n numpy array (float NaN = empty), a pandas nullable array
    (Int64, boolean, Float64, string; NA = empty), a list, or one value for every row; names
    absent from `columns` are empty. Raises KeyError for a key that is not a column.
    """
    unknown = set(columns) - set(names)
    if unknown:
        raise KeyError(f"not trial-schema columns: {sorted(unknown)}; see mcmcp.schema.columns()")
    if n == 0:
        return ""
    cells = [_column_cells(columns[name], n) if name in columns else [""] * n for name in names]
    return "\n".join(map(",".join, zip(*cells, strict=True))) + "\n"
