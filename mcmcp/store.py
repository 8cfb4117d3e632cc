"""Participant data on disk: an append-only, fsynced `trials.csv`, its `codebook.csv` and a
`session.json`.

Layout: `<root>/sub-<participant>/ses-<NN>/{trials.csv, codebook.csv, session.json}`. Every row
is one CSV line written with a single unbuffered write and fsynced before `append` returns, so a
crash (even kill -9 or a power cut) loses at most the event in flight; a write that fails (disk
full) raises at once and leaves nothing buffered to be written later. A line torn by a crash is
moved aside to `trials.csv.partial` when the session is resumed (appended there, never deleted).

Nothing here ever overwrites data: a new session is built in a hidden temporary folder and renamed
into place complete (a crash while creating it leaves no half-made session; the next start removes
the leftover), an existing session is refused unless it is resumed, and `session.json` is replaced
atomically (temp file + os.replace). A session is locked (`flock` on its folder) by the one process
that writes it, for as long as it is open; the kernel drops the lock when that process dies, so a
crashed session can be resumed at once and a second process is refused.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from mcmcp import schema
from vae.files import atomic_write

# errno values that mean "no room to write": reported in one line, and resume works once freed.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class SessionBusy(RuntimeError):
    """Another process has the session open (it holds the session's lock)."""


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
        shown = pid if not isinstance(pid, str) or len(pid) <= 40 else pid[:40] + "..."
        raise ValueError(
            f"participant id {shown!r} is not allowed: use 1-32 letters, digits, '-' or '_' "
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


def local_now() -> str:
    """Current local time, ISO 8601 to the second with the UTC offset (the `date` column)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def read_metadata(folder: Path) -> dict:
    """A session's session.json, read only; FileNotFoundError / ValueError naming the file."""
    path = folder / "session.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume: {path} does not exist (start the session without --resume)"
        )
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is damaged ({type(err).__name__}: {str(err)[:200]}); it was "
                         "not written by mcmcp, or was edited; restore it from a backup") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("d"), int):
        raise ValueError(f"{path} lacks the latent size `d`; it is not a session file")
    return meta


def _named(path: Path, err: OSError) -> OSError:
    """`err` with the file it was about (writes through a file object do not say)."""
    return err if err.filename else OSError(err.errno, err.strerror, str(path))


def _write_atomic(path: Path, text: str) -> None:
    try:
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    except OSError as err:
        raise _named(path, err) from None


def _write_json_atomic(path: Path, data: dict) -> None:
    _write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, text: str) -> None:
    try:
        with open(path, "x", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise _named(path, err) from None


def _lock(folder: Path) -> int | None:
    """An exclusive flock on `folder` (fd to keep open), or None if another process holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _holder(folder: Path) -> str:
    """Who has the session open, as recorded in its last run (for the refusal message)."""
    try:
        run = (read_metadata(folder).get("runs") or [{}])[-1]
    except (OSError, ValueError):
        return "another process"
    return f"process {run.get('pid', '?')} on {run.get('host', '?')} (run started {run.get('started')})"


def _clear_leftovers(parent: Path, name: str) -> None:
    """Remove what a crashed creation of session folder `name` left: hidden temporary folders
    (`.ses-01.*.creating`) nobody holds, and an empty-handed `name` (no session.json, no rows)."""
    for tmp in parent.glob(f".{name}.*.creating"):
        fd = _lock(tmp)
        if fd is not None:  # its creator is gone: it never became a session, it holds no rows
            try:
                shutil.rmtree(tmp)
            finally:
                os.close(fd)
    if _abandoned(parent / name):
        shutil.rmtree(parent / name)


def _abandoned(folder: Path) -> bool:
    """True for a session folder an earlier version's crashed start left: no session.json and
    nothing in it but a trials.csv without rows (and temporary files)."""
    if not folder.is_dir() or (folder / "session.json").exists():
        return False
    for entry in folder.iterdir():
        empty_trials = entry.name == "trials.csv" and entry.read_bytes().count(b"\n") <= 1
        if not (empty_trials or entry.name.startswith("session.json.")):
            return False  # something else is in there: leave it to a person
    return True


def session_exists(root: str | os.PathLike, participant: str, session: int) -> bool:
    """True if the session folder exists as a session (an abandoned start does not count)."""
    folder = session_dir(root, participant, session)
    return folder.exists() and not _abandoned(folder)


class SessionStore:
    """One participant-session's files, locked for this process while open.

    Open with `create` (new session), `open` (existing, read only until `begin_run`) or
    `resume` (open + begin_run). `run`: 1-based number of the run this process writes.
    """

    def __init__(self, folder: Path, d: int, metadata: dict, lock_fd: int):
        self.folder = folder
        self.trials_path = folder / "trials.csv"
        self.session_path = folder / "session.json"
        self.d = d
        self.metadata = metadata
        self.names = schema.header(d)
        self._lock_fd: int | None = lock_fd
        self._fd: int | None = None

    @property
    def run(self) -> int:
        return max(1, len(self.metadata.get("runs", [])))

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(
        cls, root: str | os.PathLike, participant: str, session: int, d: int, metadata: dict
    ) -> SessionStore:
        """Make a new session folder, complete or not at all; FileExistsError if it exists."""
        folder = session_dir(root, participant, session)
        parent = folder.parent
        made = [p for p in (parent, *parent.parents) if not p.exists()]  # to undo on failure
        parent.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(parent, folder.name)
        if folder.exists():
            raise FileExistsError(
                f"session folder {folder} already exists; it is never overwritten. Use --resume "
                "to continue that session, or choose another --session number"
            )
        meta = {
            **metadata,
            "participant": participant,
            "session": session,
            "d": d,
            "status": "running",
            "start_time": utc_now(),
            "date": local_now(),
        }
        tmp, lock = None, None
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".creating", dir=parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; data are meant to be shared
            lock = _lock(tmp)  # the lock follows the folder through the rename
            _write_json_atomic(tmp / "session.json", meta)
            _write_new(tmp / "trials.csv", ",".join(schema.header(d)) + "\n")
            _write_new(tmp / "codebook.csv", schema.codebook(d))
            _fsync_dir(tmp)
            try:
                os.rename(tmp, folder)
            except OSError as err:  # another process created it first
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise FileExistsError(
                        f"session folder {folder} was just created by another process"
                    ) from None
                raise
            _fsync_dir(parent)
        except BaseException:
            if lock is not None:
                os.close(lock)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            for made_dir in made:  # innermost first; stops at the first that is not empty
                try:
                    made_dir.rmdir()
                except OSError:
                    break
            raise
        store = cls(folder, d, meta, lock)
        store._open_trials()
        return store

    @classmethod
    def open(cls, root: str | os.PathLike, participant: str, session: int) -> SessionStore:
        """Lock an existing session and read its session.json; nothing is written until
        `begin_run`. SessionBusy if another process has it open; FileNotFoundError /
        ValueError (naming the file) if it is missing or damaged."""
        folder = session_dir(root, participant, session)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"cannot resume: there is no session folder {folder} (start the session "
                "without --resume)"
            )
        lock = _lock(folder)
        if lock is None:
            raise SessionBusy(f"session {folder} is open in {_holder(folder)}; it cannot be run "
                              "twice at once (wait for it to end, or end that process)")
        try:
            meta = read_metadata(folder)
        except BaseException:
            os.close(lock)
            raise
        return cls(folder, int(meta["d"]), meta, lock)

    def begin_run(self, run_info: dict | None = None, **metadata: object) -> None:
        """Start appending to an opened session: set a torn last line aside, restore a torn
        header, record the run (`resumed`, `runs`, status running; `metadata` merged in) and
        open trials.csv."""
        _set_aside_torn_line(self.trials_path)
        if self.trials_path.stat().st_size == 0:  # the crash tore the header itself
            with open(self.trials_path, "a", encoding="utf-8", newline="") as f:
                f.write(",".join(schema.header(self.d)) + "\n")
                f.flush()
                os.fsync(f.fileno())
        codebook = self.folder / "codebook.csv"
        if not codebook.exists():  # sessions started before codebooks were written
            _write_atomic(codebook, schema.codebook(self.d))
        meta = {**self.metadata, **metadata}
        meta["resumed"] = [*meta.get("resumed", []), utc_now()]
        meta["status"] = "running"
        if run_info is not None:
            meta["runs"] = [*meta.get("runs", []), run_info]
        _write_json_atomic(self.session_path, meta)
        self.metadata = meta
        self._open_trials()

    def continue_copy(self) -> None:
        """Open an opened session's trials.csv for appending rows that already exist elsewhere
        (an export from the online database): no run is recorded, session.json is untouched
        until `update`."""
        _set_aside_torn_line(self.trials_path)
        self._open_trials()

    @classmethod
    def resume(cls, root: str | os.PathLike, participant: str, session: int) -> SessionStore:
        """Reopen an existing session to append to it (open + begin_run)."""
        store = cls.open(root, participant, session)
        try:
            store.begin_run()
        except BaseException:
            store.close()
            raise
        return store

    def _open_trials(self) -> None:
        with open(self.trials_path, encoding="utf-8", newline="") as f:
            names = f.readline().rstrip("\r\n").split(",")
        if names != self.names:  # a file of an earlier schema: keep writing its columns
            self.names = names
        self._fd = os.open(self.trials_path, os.O_WRONLY | os.O_APPEND)

    # ------------------------------------------------------------------ writing

    def append(self, row: dict) -> None:
        """Write one row (schema columns) and make it durable before returning."""
        self.append_many([row])

    def append_many(self, rows: list[dict]) -> None:
        """Write rows with one write and one fsync (gate rows + the trial; simulations).

        Raises KeyError for a key that is not a schema column, OSError naming trials.csv if
        the write fails (then nothing stays buffered: a torn line is set aside on resume).
        """
        full = schema.header(self.d)
        for r in rows:
            unknown = set(r) - set(full)
            if unknown:
                raise KeyError(f"not trial-schema columns: {sorted(unknown)}; see "
                               "mcmcp.schema.columns()")
        keep = set(self.names)
        self._write("".join(schema.format_row({k: v for k, v in r.items() if k in keep},
                                              self.names) for r in rows))

    def append_columns(self, columns: dict, n: int) -> None:
        """Write n rows given as columns (`schema.format_columns`) with one fsync at the end:
        how simulations write a whole participant."""
        self._write(schema.format_columns(columns, n, self.names))

    def _write(self, text: str) -> None:
        """Write and fsync; OSError names trials.csv (nothing stays buffered on failure)."""
        try:
            view = memoryview(text.encode("utf-8"))
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(self.trials_path)) from None

    def update(self, **metadata: object) -> None:
        """Merge keys into session.json (atomically), e.g. the measured refresh rate."""
        self.metadata.update(metadata)
        _write_json_atomic(self.session_path, self.metadata)

    def update_run(self, **info: object) -> None:
        """Merge keys into this run's record in session.json `runs`."""
        runs = self.metadata.setdefault("runs", [{}])
        runs[-1] = {**runs[-1], **info}
        _write_json_atomic(self.session_path, self.metadata)

    def finish(self, **end_metadata: object) -> None:
        """Record the end (status defaults to 'complete'), close the file and the lock (also
        when writing session.json fails, e.g. on a full disk)."""
        try:
            self.metadata.update({"status": "complete", "end_time": utc_now(), **end_metadata})
            _write_json_atomic(self.session_path, self.metadata)
        finally:
            self.close()

    def close(self) -> None:
        """Close trials.csv and release the session's lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def read_rows(self) -> pd.DataFrame:
        """The rows of every whole event so far, typed by the schema: a torn last line and the
        gate rows of an event whose trial was never written are left out (as `begin_run` sets
        them aside), so the engine can replay the session before anything is repaired."""
        rows = read_trials(self.trials_path)
        shown = np.flatnonzero((rows["kind"] != "gate").to_numpy())
        return rows.iloc[: shown[-1] + 1 if len(shown) else 0]


def read_trials(path: str | os.PathLike) -> pd.DataFrame:
    """A trials.csv as a typed DataFrame (schema dtypes; d taken from the header).

    Only whole lines are read: a last line torn by a crash (no newline) is left out, so a
    session can be replayed before anything is repaired.
    """
    data = Path(path).read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    names = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r").split(",") if data else []
    d = schema.latent_dim(names)
    if not data:
        return pd.DataFrame({n: pd.Series(dtype=t) for n, t in schema.pandas_dtypes(d).items()})
    dtypes = {n: t for n, t in schema.pandas_dtypes(d).items() if n in names}
    return pd.read_csv(io.BytesIO(data), dtype=dtypes)


def _set_aside_torn_line(path: Path) -> None:
    """Move what a crash left of the last event to `<path>.partial` (appended, never deleted).

    An event's rows (its gate rows, then the shown trial) are written with one write, so a
    crash or a full disk can leave a torn last line, and before it complete gate rows whose
    trial never made it: the engine never writes gate rows on their own, so trailing gate rows
    are that event's start. Left in place they would move the chain on resume past proposals
    the resumed engine draws again.
    """
    with open(path, "rb+") as f:
        data = f.read()
        if not data:
            return
        cut = data.rfind(b"\n") + 1 if not data.endswith(b"\n") else len(data)
        lines = data[:cut].splitlines(keepends=True)
        if lines:
            kind = next(csv.reader([lines[0].decode("utf-8")])).index("kind") \
                if b"kind" in lines[0] else None
            while kind is not None and len(lines) > 1:
                cells = next(csv.reader([lines[-1].decode("utf-8")]))
                if len(cells) <= kind or cells[kind] != "gate":
                    break
                cut -= len(lines.pop())
        if cut == len(data):
            return
        tail = data[cut:]
        with open(str(path) + ".partial", "ab") as aside:
            aside.write(tail if tail.endswith(b"\n") else tail + b"\n")
            aside.flush()
            os.fsync(aside.fileno())
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
