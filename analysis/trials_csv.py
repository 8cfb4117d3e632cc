"""One session's trials.csv -> a typed Arrow table: fast, exact about errors, cacheable as Parquet.

The fast path reads the file with pyarrow's CSV reader and explicit column types (the trial
schema's, `mcmcp.schema.pandas_dtypes`). Whenever pyarrow refuses a file, or a check fails, the
file is read again cell by cell with the csv module, which names the first bad line, column and
cell; a file pyarrow refuses but the careful reader accepts (say, an integer written `3.0`)
loads through the careful reader. Both give the same table.

Columns: every column of the first released schema (`FIRST_COLUMNS`, with the d coordinates of
`current_*` and `proposal_*`) is required, a file without one is damaged. Columns the schema
gained later are optional: a file written before them loads them as empty. d comes from the
header and must match the `d` recorded in the session's session.json, so a header that lost
`current_2` and `proposal_2` is an error rather than a 2-dimensional study.

Cache: `read_session(folder, cache)` keeps each typed session as `<cache>/<key>.parquet`, the
key hashing the file's absolute path, size and modification time (and session.json's), so an
appended or edited file is read again. Nothing is ever written into a participant folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mcmcp import schema

# Columns every trials.csv has had since the first release (plus current_*/proposal_*).
FIRST_COLUMNS = (
    "participant", "session", "block", "emotion", "row", "trial", "kind", "chain", "iteration",
    "kappa_proposal", "log_gate_current", "log_gate_proposal", "gate_gamma", "gate_prob",
    "left_role", "right_role", "response", "chose_proposal", "accepted", "correct",
    "foil_emotion", "repeat_of", "rt", "onset", "gap", "dropped_frames", "agent", "timestamp",
)
CACHE_FORMAT = 1  # bump when the cached table's layout changes
_ARROW = {"string": pa.string(), "Int64": pa.int64(), "Float64": pa.float64(),
          "boolean": pa.bool_()}
_PANDAS = {pa.string(): pd.StringDtype(), pa.int64(): pd.Int64Dtype(),
           pa.float64(): pd.Float64Dtype(), pa.bool_(): pd.BooleanDtype()}
_TRUE = {"true": True, "1": True, "false": False, "0": False}


def arrow_schema(d: int) -> pa.Schema:
    """The trial schema for a latent sphere in R^d as an Arrow schema."""
    return pa.schema([(name, _ARROW[dtype]) for name, dtype in schema.pandas_dtypes(d).items()])


def to_pandas(tables: list[pa.Table]) -> pd.DataFrame:
    """Arrow trial tables (one schema) -> one DataFrame with the schema's nullable pandas dtypes.
    Empties `tables` (their memory is freed as the frame is made)."""
    table = pa.concat_tables(tables)
    tables.clear()
    return table.to_pandas(types_mapper=_PANDAS.get, split_blocks=True, self_destruct=True)


def _malformed(path: Path, line: int, message: str) -> ValueError:
    return ValueError(f"{path}, line {line}: {message}")


def recorded_dim(folder: Path) -> int | None:
    """The latent dimension d recorded in folder/session.json, None without one."""
    path = folder / "session.json"
    if not path.is_file():
        return None
    meta = read_json_object(path)
    return int(meta["d"]) if isinstance(meta.get("d"), int) else None


def read_json_object(path: Path) -> dict:
    """A JSON object from `path`; ValueError naming the file for bad bytes, JSON or type."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); session.json files are UTF-8 JSON "
                         "written by mcmcp: restore this one from a backup") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _check_header(path: Path, names: list[str], d_recorded: int | None) -> int:
    """d from the header; ValueError naming the file for missing columns or a d that disagrees
    with session.json. Warns about columns that are not in the schema (they are ignored)."""
    d = schema.latent_dim(names)
    want = d if d_recorded is None else d_recorded
    required = [c for c in schema.header(max(want, 2))
                if c in FIRST_COLUMNS or c.startswith(("current_", "proposal_"))]
    missing = [c for c in required if c not in names]
    recorded = f" (its session.json records d = {d_recorded})" if d_recorded is not None else ""
    if missing:
        raise _malformed(path, 1, f"missing columns {missing}{recorded}; see "
                                  "mcmcp.schema.columns() for the trial schema")
    if d != want:
        raise _malformed(path, 1, f"{d} current_* columns{recorded}: the header and the "
                                  "session do not belong together")
    unknown = [c for c in names if c not in schema.header(d)]
    if unknown:
        warnings.warn(f"{path}: ignoring columns that are not in the trial schema: {unknown}",
                      stacklevel=4)
    return d


def _complete_rows(path: Path, data: bytes) -> bytes:
    """`data` without a torn last line (warned): every complete row ends with a newline."""
    if data.endswith((b"\n", b"\r")):
        return data
    cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
    if cut < 0:
        return data  # the header alone, torn: the header check says what is missing
    # Rows are written whole, newline last, then fsynced: no newline means a torn write.
    line = data.count(b"\n") + 1
    warnings.warn(f"{path}: dropped the torn last line {line} (the session stopped mid-write)",
                  stacklevel=4)
    return data[: cut + 1]


def read_trials_csv(path: str | Path, d_recorded: int | None = None,
                    columns: list[str] | None = None) -> pa.Table:
    """One trials.csv -> Arrow table with the schema's columns (in order) and types.

    d_recorded: the d of the session's session.json (None: trust the header). columns: the
    columns to read besides the coordinates (None: all). Raises FileNotFoundError, or
    ValueError naming the file, line and cell of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing trials file: {path}")
    data = path.read_bytes()
    if not data:
        raise _malformed(path, 1, "empty file: the header line is missing")
    data = _complete_rows(path, data)
    try:
        names = next(csv.reader([data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")]))
    except UnicodeDecodeError:
        return _read_careful(path, data, d_recorded)  # raises: not UTF-8
    d = _check_header(path, names, d_recorded)
    wanted = set(_selection(d, columns) + ["kind"])  # kind: checked in every file
    types = {n: t for n, t in zip(arrow_schema(d).names, arrow_schema(d).types, strict=True)
             if n in names and n in wanted}
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(types), null_values=[""],
                strings_can_be_null=True, true_values=["True", "true", "TRUE", "1"],
                false_values=["False", "false", "FALSE", "0"]),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return _read_careful(path, data, d_recorded).select(_selection(d, columns))
    kinds = table["kind"]
    if not pc.all(pc.is_in(kinds, value_set=pa.array(schema.KINDS))).as_py() or kinds.null_count:
        return _read_careful(path, data, d_recorded).select(_selection(d, columns))
    return _conform(table, d).select(_selection(d, columns))


def _selection(d: int, columns: list[str] | None) -> list[str]:
    """The schema's names for `columns` (None: all) plus the d coordinates, in schema order."""
    return [n for n in schema.header(d) if columns is None or n in columns
            or n.startswith(("current_", "proposal_"))]


def _conform(table: pa.Table, d: int) -> pa.Table:
    """The table with every schema column, in schema order (absent optional ones all null);
    a number written as 'nan' is missing, as an empty cell is."""
    full = arrow_schema(d)
    columns = []
    for f in full:
        if f.name not in table.column_names:
            columns.append(pa.nulls(len(table), f.type))
            continue
        column = table[f.name]
        if f.type == pa.float64() and pc.any(pc.is_nan(column)).as_py():
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, pa.float64()), column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=full)


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


def _read_careful(path: Path, data: bytes, d_recorded: int | None) -> pa.Table:
    """The csv module's reading of `data` (torn line already dropped), cell by cell: raises
    naming the line and cell of the first problem, or returns the table."""
    try:
        text = data.decode("utf-8")
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
    names = records[0]
    d = _check_header(path, names, d_recorded)
    body, body_lines = records[1:], np.asarray(lines[1:], dtype=int)
    for record, line in zip(body, body_lines, strict=True):
        if len(record) != len(names):
            raise _malformed(path, int(line), f"{len(record)} cells, the header has {len(names)}")
    raw = pd.DataFrame(body, columns=names, dtype=object)
    if raw.empty:
        raw = pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    dtypes = {n: t for n, t in schema.pandas_dtypes(d).items() if n in names}
    out = pd.DataFrame({name: _convert(raw[name].astype(str), dtype, name, body_lines, path)
                        for name, dtype in dtypes.items()})
    bad_kind = ~out["kind"].isin(schema.KINDS).fillna(False)
    if bad_kind.any():
        i = int(np.flatnonzero(bad_kind.to_numpy())[0])
        raise _malformed(path, int(body_lines[i]),
                         f"kind {raw['kind'].iloc[i]!r} is not one of {', '.join(schema.KINDS)}")
    sub = pa.schema([f for f in arrow_schema(d) if f.name in dtypes])
    return _conform(pa.Table.from_pandas(out, schema=sub, preserve_index=False), d)


# ----------------------------------------------------------------------------- Parquet cache


def _cache_key(folder: Path) -> str:
    parts = [f"format {CACHE_FORMAT}", str(folder.resolve())]
    for name in ("trials.csv", "session.json"):
        try:
            st = (folder / name).stat()
            parts.append(f"{name} {st.st_size} {st.st_mtime_ns}")
        except FileNotFoundError:
            parts.append(f"{name} absent")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def read_session(folder: Path, cache: str | Path | None = None,
                 columns: list[str] | None = None) -> pa.Table:
    """The typed trials of one session folder, from `cache` when the files are unchanged.

    cache: a folder for Parquet copies of whole sessions (created when needed; None: no cache).
    A copy is written atomically (temp file, rename), so two readers never see half a file.
    columns: the columns to read besides the coordinates (None: all).
    """
    path = folder / "trials.csv"
    if cache is not None:
        cached = Path(cache).expanduser() / f"{_cache_key(folder)}.parquet"
        if cached.is_file():
            table = pq.read_table(cached)
            return table.select(_selection(schema.latent_dim(table.column_names), columns))
    if not path.is_file():
        raise FileNotFoundError(f"missing trials file: {path}")
    if cache is None:
        return read_trials_csv(path, recorded_dim(folder), columns)
    table = read_trials_csv(path, recorded_dim(folder))
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, cached)
    return table.select(_selection(schema.latent_dim(table.column_names), columns))
