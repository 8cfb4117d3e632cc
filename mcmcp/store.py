"""Participant data on disk: an append-only, fsynced `trials.csv` plus a `session.json`.

Layout: `<root>/sub-<participant>/ses-<NN>/{trials.csv, session.json}`. Every row is one CSV
line written with a single write, flushed and fsynced before `append` returns, so a crash
(even kill -9 or a power cut) loses at most the event in flight. A line torn by a crash is
moved aside to `trials.csv.partial` on resume (appended there, never deleted). Nothing here
ever overwrites data: an existing session folder is refused unless it is resumed, and
`session.json` is replaced atomically (temp file + os.replace).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from mcmcp import schema
from vae.files import atomic_write


def validate_participant_id(pid: str) -> str:
    """Return `pid` if it is 1-32 letters, digits, '-' or '_'; raise ValueError otherwise.

    Ids are pseudonyms: no names, no path separators, no '..'.
    """
    ok = (
        isinstance(pid, str)
        and 1 <= len(pid) <= 32
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in pid)
    )
    if not ok:
        raise ValueError(
            f"participant id {pid!r} is not allowed: use 1-32 letters, digits, '-' or '_' "
            "(a pseudonym such as P001; never a name, no spaces, '/', '\\' or '..')"
        )
    return pid


def validate_session(session: int) -> int:
    """Return `session` if it is an int in 1..99; raise ValueError otherwise."""
    if isinstance(session, bool) or not isinstance(session, int) or not 1 <= session <= 99:
        raise ValueError(f"session number {session!r} is not allowed: use an integer 1..99")
    return session


def session_dir(root: str | os.PathLike, participant: str, session: int) -> Path:
    """`<root>/sub-<participant>/ses-<NN>` (validated)."""
    validate_participant_id(participant)
    validate_session(session)
    return Path(root) / f"sub-{participant}" / f"ses-{session:02d}"


def versions() -> dict[str, str | None]:
    """Versions recorded in every session.json, lab and simulated alike: this package, Python
    and the numerical stack, and PsychoPy when the session imported it (a --no-window run
    never does)."""
    names = ["mcmcp-sphere", "numpy", "scipy", "torch"]
    if "psychopy" in sys.modules:
        names.append("psychopy")
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def utc_now() -> str:
    """Current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _write_json_atomic(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, default=str) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SessionStore:
    """One participant-session's files. Open with `create` (new) or `resume` (existing)."""

    def __init__(self, folder: Path, d: int, metadata: dict):
        self.folder = folder
        self.trials_path = folder / "trials.csv"
        self.session_path = folder / "session.json"
        self.d = d
        self.metadata = metadata
        self.names = schema.header(d)
        self._file = open(self.trials_path, "a", encoding="utf-8", newline="")

    @classmethod
    def create(
        cls, root: str | os.PathLike, participant: str, session: int, d: int, metadata: dict
    ) -> SessionStore:
        """Make a new session folder; FileExistsError if it exists (data is never overwritten)."""
        folder = session_dir(root, participant, session)
        if folder.exists():
            raise FileExistsError(
                f"session folder {folder} already exists; it is never overwritten. Use --resume "
                "to continue that session, or choose another --session number"
            )
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()
        meta = {
            **metadata,
            "participant": participant,
            "session": session,
            "d": d,
            "status": "running",
            "start_time": utc_now(),
        }
        _write_json_atomic(folder / "session.json", meta)
        with open(folder / "trials.csv", "x", encoding="utf-8", newline="") as f:
            f.write(",".join(schema.header(d)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(folder)
        return cls(folder, d, meta)

    @classmethod
    def resume(cls, root: str | os.PathLike, participant: str, session: int) -> SessionStore:
        """Reopen an existing session to append to it; a torn last line goes to `.partial`."""
        folder = session_dir(root, participant, session)
        meta_path = folder / "session.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"cannot resume: {meta_path} does not exist (start the session without --resume)"
            )
        meta = json.loads(meta_path.read_text())
        d = int(meta["d"])
        trials = folder / "trials.csv"
        _set_aside_torn_line(trials)
        if trials.stat().st_size == 0:  # the crash tore the header itself
            with open(trials, "a", encoding="utf-8", newline="") as f:
                f.write(",".join(schema.header(d)) + "\n")
                f.flush()
                os.fsync(f.fileno())
        meta.setdefault("resumed", []).append(utc_now())
        meta["status"] = "running"
        _write_json_atomic(meta_path, meta)
        return cls(folder, d, meta)

    def append(self, row: dict) -> None:
        """Write one row (schema columns) and make it durable before returning."""
        self._file.write(schema.format_row(row, self.names))
        self._file.flush()
        os.fsync(self._file.fileno())

    def append_many(self, rows: list[dict]) -> None:
        """Write several rows with one fsync at the end (simulations, gate rows + trial)."""
        self._file.write("".join(schema.format_row(r, self.names) for r in rows))
        self._file.flush()
        os.fsync(self._file.fileno())

    def append_columns(self, columns: dict, n: int) -> None:
        """Write n rows given as columns (`schema.format_columns`) with one fsync at the end:
        how simulations write a whole participant."""
        self._file.write(schema.format_columns(columns, n, self.names))
        self._file.flush()
        os.fsync(self._file.fileno())

    def update(self, **metadata: object) -> None:
        """Merge keys into session.json (atomically), e.g. the measured refresh rate."""
        self.metadata.update(metadata)
        _write_json_atomic(self.session_path, self.metadata)

    def finish(self, **end_metadata: object) -> None:
        """Record the end (status defaults to 'complete') and close the trial file."""
        self.metadata.update({"status": "complete", "end_time": utc_now(), **end_metadata})
        _write_json_atomic(self.session_path, self.metadata)
        self.close()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def read_rows(self) -> pd.DataFrame:
        """All rows so far, typed by the schema."""
        return read_trials(self.trials_path)


def read_trials(path: str | os.PathLike) -> pd.DataFrame:
    """A trials.csv as a typed DataFrame (schema dtypes; d taken from the header)."""
    names = pd.read_csv(path, nrows=0).columns.tolist()
    return pd.read_csv(path, dtype=schema.pandas_dtypes(schema.latent_dim(names)))


def _set_aside_torn_line(path: Path) -> None:
    """If the file does not end with a newline, move the torn tail to `<path>.partial`."""
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with open(str(path) + ".partial", "ab") as aside:
            aside.write(data[cut:] + b"\n")
            aside.flush()
            os.fsync(aside.fileno())
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
