"""Online sessions from the database to the lab's files, for analysis (`python -m mcmcp.export`).

Writes `<out>/sub-<participant>/ses-<NN>/trials.csv` and `session.json` in the format of
`mcmcp.store` (the same rows, columns and float precision a lab session writes), so
`analysis.load_trials` and `python -m analysis.report` read online data unchanged. Exporting
again appends the rows answered since (a folder holds `online.uid` in its session.json, so it
is only ever continued from the same database session); a folder of another session with the
same participant id is an error, checked before anything is written. Sessions without a single
answered trial (not yet consented, declined) are skipped.

A GSP session's handle paths go to `slider_moves.csv` beside `trials.csv` (one line per move:
the trial's `row` and `trial`, the move's number, seconds from onset, the slider position and the
circle point it shows), written whole from the database at every export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mcmcp.online.database import Database, SessionRecord
from mcmcp.store import SessionStore, read_trials, session_dir


def _plan(db: Database, out: Path, study: str | None) -> list[tuple[SessionRecord, int]]:
    """(session, rows already in its folder) for every session to write; raises before any
    write if a folder belongs to another session or has rows the database does not."""
    plan, seen = [], {}
    for record in db.all_sessions(study):
        if record.n_rows == 0:
            continue
        key = (record.participant, record.session)
        if key in seen:
            raise ValueError(
                f"studies {seen[key]!r} and {record.study!r} both have participant "
                f"{record.participant} session {record.session}; export one with --study")
        seen[key] = record.study
        folder = session_dir(out, record.participant, record.session)
        have = 0
        if folder.exists():
            meta_path = folder / "session.json"
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            if (meta.get("online") or {}).get("uid") != record.uid:
                raise ValueError(
                    f"{folder} holds another session (a lab session, or another database's); "
                    "it is never overwritten: export to another --out folder")
            have = len(read_trials(folder / "trials.csv"))
            if have > record.n_rows:
                raise ValueError(f"{folder} has {have} rows, the database only {record.n_rows}; "
                                 "was it exported from another copy of the database?")
        plan.append((record, have))
    return plan


def export(db: Database, out: str | Path, study: str | None = None) -> list[Path]:
    """Write (or continue) the session folders of `db` under `out`; returns the folders."""
    out = Path(out)
    folders = []
    for record, have in _plan(db, out, study):
        rows = db.rows(record.id, record.d)
        end = {"status": record.status, "rows": record.n_rows, "shown_trials": record.shown,
               "events": db.events(record.id)}
        if have == 0:
            store = SessionStore.create(out, record.participant, record.session, record.d,
                                        record.meta)
        else:
            store = SessionStore.open(out, record.participant, record.session)
            store.continue_copy()
        try:
            _write_moves(store.folder, rows, db.moves(record.id))
            store.append_many(rows[have:])
            store.update(**{**record.meta, **end})
        finally:
            store.close()
        folders.append(store.folder)
    return folders


MOVES_HEADER = "row,trial,move,t,position,point\n"


def _write_moves(folder: Path, rows: list[dict], moves: list[tuple[int, list]]) -> None:
    """The folder's slider_moves.csv, all of it from the database, replaced in one rename
    (written before the trial rows are appended, so it never lacks a row's path)."""
    if not moves:
        return
    out = [MOVES_HEADER]
    for row, path in moves:
        r = rows[row]
        k, shift = int(r["gsp_points"]), int(r["gsp_shift"])
        out += [f"{row},{r['trial']},{i + 1},{t!r},{pos},{(pos + shift) % k}\n"
                for i, (t, pos) in enumerate(path)]
    target = folder / "slider_moves.csv"
    tmp = target.with_suffix(".csv.tmp")
    tmp.write_text("".join(out))
    os.replace(tmp, target)
