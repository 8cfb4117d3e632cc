"""Online sessions in a database: SQLite (the zero-set-up default) or PostgreSQL (several servers).

Four tables, created by `Database` when missing (SQLAlchemy Core, so no SQL is ever built from a
participant id, token or answer):
- `sessions`: one participant-session: study, participant, session number, the sha256 of its
  token (the token itself is never stored), where it is in the session flow (`screen`: the id
  of the screen on show, `acked`: message screens passed before the pending trial), counts,
  the metadata that becomes its `session.json`, and `resume`: the engine's `resume_point` of
  its rows, written in the same transaction as the rows, so any server process rebuilds the
  session without reading them (null in databases made before it: rebuilt from the rows).
- `trials`: the rows of `mcmcp.schema`, one per event, keyed by (session_id, row) so a row can
  never be written twice; the latent coordinates (and a GSP circle's direction) are JSON lists
  (full float precision); a slider trial's handle path is kept beside its row (`moves`).
- `events`: what happened to a session besides its steps (resumed elsewhere, full-screen exits,
  the experimenter's release, reset or end), append-only.
- `starts`: recent calls to start a session per hashed client address, for the limit on starts
  per minute that all server processes share.

Every step of a participant is one transaction (on PostgreSQL one statement) that first moves the
session's `screen` from the id the participant answered to a new one (compare-and-set) and only
then writes the rows, so a stale, replayed or concurrent answer (another tab, another server
process) changes nothing.
SQLite runs in WAL mode with synchronous=FULL: a committed answer survives kill -9 and power cuts.

Nothing is acknowledged that is not durable: every call checks, before and after its transaction,
that a SQLite database is still the file it opened (same device and inode: not deleted, moved or
replaced) and writable, and connections never create a file; any database error (disk full,
read-only, PostgreSQL unreachable) becomes `Unavailable`, which the web layer answers with 503.
Each change between available and unavailable is logged as one line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from mcmcp import schema
from mcmcp.store import utc_now

LATENT = ("current", "proposal")
VECTORS = (*LATENT, "direction")  # direction_*: a GSP circle's, empty in MCMCP rows
_SQL_TYPES = {"string": Text, "Int64": Integer, "Float64": Double, "boolean": Boolean}
# the trial schema's columns that are not coordinates, in file order (d does not matter)
_SCALARS = [c for c in schema.columns(1)
            if not c.name.startswith(tuple(f"{p}_" for p in VECTORS))]

metadata = MetaData()

sessions = Table(
    "sessions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(32), nullable=False, unique=True),
    Column("study", String(64), nullable=False),
    Column("participant", String(32), nullable=False),
    Column("session", Integer, nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    # consent | running | complete | declined | ended | reset | abandoned (mcmcp.online.limits)
    Column("status", String(16), nullable=False),
    Column("d", Integer, nullable=False),
    Column("screen", String(32), nullable=False),
    Column("acked", Integer, nullable=False, default=0),
    Column("n_rows", Integer, nullable=False, default=0),
    Column("shown", Integer, nullable=False, default=0),
    Column("created", String(32), nullable=False),
    Column("updated", String(32), nullable=False),
    Column("meta", JSON, nullable=False),
    Column("resume", JSON, nullable=True),
    UniqueConstraint("study", "participant", "session"),
)

trials = Table(
    "trials", metadata,
    Column("session_id", Integer, ForeignKey("sessions.id"), primary_key=True),
    *[Column(c.name, _SQL_TYPES[c.dtype], primary_key=c.name == "row", autoincrement=False)
      for c in _SCALARS],
    *[Column(p, JSON, nullable=False) for p in LATENT],
    Column("direction", JSON(none_as_null=True), nullable=True),
    # a GSP slider trial's handle path, [[seconds from onset, slider position], ...]
    # (mcmcp.online.slider); not a trial-schema column: exported as slider_moves.csv
    Column("moves", JSON(none_as_null=True), nullable=True),
)
# the experimenter page counts catch answers per session (`Database.catch_counts`) from this
# index alone, however many rows the study has (a database made before it counts without it)
Index("trials_catch", trials.c.session_id, trials.c.correct,
      postgresql_where=trials.c.kind == "catch", sqlite_where=trials.c.kind == "catch")


# What happened to a session besides its steps (mcmcp.online.study): a participant resuming on
# another browser, leaving full screen; the experimenter releasing, resetting or ending it.
# Append-only, exported into session.json `events`.
event_log = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", Integer, ForeignKey("sessions.id"), nullable=False, index=True),
    Column("time", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", JSON, nullable=False),
)


# Recent calls to start a session per client address (its sha256: no addresses are kept), for
# the limit on starts per minute shared by all server processes (`Database.allow_start`);
# rows older than a minute are deleted as new ones come.
starts = Table(
    "starts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study", String(64), nullable=False),
    Column("address_sha256", String(64), nullable=False, index=True),
    Column("at", Double, nullable=False),  # seconds since the epoch (every process's clock)
)


class _Stale(Exception):
    """The session moved on before this step could be written (rolls the transaction back)."""


class Unavailable(Exception):
    """The database cannot keep a write now (its file is gone, read-only or full, the server
    unreachable): nothing of the request is acknowledged. The message names the cause."""


def _reason(err: DBAPIError | psycopg.Error) -> str:
    """The driver's own first line of a database error (SQLAlchemy's, or one of a statement
    psycopg ran itself), without SQLAlchemy's statement dump."""
    err = getattr(err, "orig", None) or err
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def token_hash(token: str) -> str:
    """What the database keeps of a session token."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class SessionRecord:
    """One row of `sessions` (see the module docstring)."""

    id: int
    uid: str
    study: str
    participant: str
    session: int
    status: str
    d: int
    screen: str
    acked: int
    n_rows: int
    shown: int
    created: str
    updated: str
    meta: dict


@dataclass(frozen=True)
class Progress:
    """How far one session is (the experimenter page's light view of `sessions`)."""

    id: int
    uid: str
    participant: str
    session: int
    status: str
    shown: int
    n_rows: int
    created: str
    updated: str


def _record_columns() -> list:
    """The columns of a SessionRecord: a database made before `resume` existed reads the same
    (`mcmcp.export` opens it without adding columns)."""
    return [sessions.c[name] for name in SessionRecord.__dataclass_fields__]


def _record(row) -> SessionRecord:
    """A SessionRecord from a row of its columns (a SQLAlchemy row or a column -> value map)."""
    mapping = getattr(row, "_mapping", row)
    return SessionRecord(**{k: mapping[k] for k in SessionRecord.__dataclass_fields__})


# The statements of a participant's every request, built once: SQLAlchemy then compiles and
# keys them once per process, not at every call (about a millisecond of CPU per answer)
_BY_TOKEN = select(*_record_columns()).where(sessions.c.token_sha256 == bindparam("token"))
_RESUME = select(sessions.c.resume).where(sessions.c.id == bindparam("id"))
_BY_TOKEN_RESUME = select(*_record_columns(), case(
    (sessions.c.screen == bindparam("known"), None), else_=sessions.c.resume).label("resume")
).where(sessions.c.token_sha256 == bindparam("token"))
_INSERT_TRIALS = insert(trials)


# the columns psycopg is given as JSON (`_advance_one_statement`), by name in either table
_JSON_COLUMNS = frozenset(c.name for c in (*sessions.columns, *trials.columns)
                          if isinstance(c.type, JSON))


@lru_cache(maxsize=64)
def _sql(statement, dialect) -> str:
    """A statement's SQL for the driver itself (psycopg's %(name)s parameters)."""
    return str(statement.compile(dialect=dialect))


@lru_cache(maxsize=32)
def _advance_statement(columns: tuple[str, ...]):
    """UPDATE sessions SET <columns> WHERE id = :id AND screen = :old_screen, built once per
    set of columns an advance writes."""
    return update(sessions).where(
        sessions.c.id == bindparam("id_"), sessions.c.screen == bindparam("old_screen")
    ).values({c: bindparam(f"{c}_", type_=sessions.c[c].type) for c in columns})


@lru_cache(maxsize=32)
def _save_sql(columns: tuple[str, ...], with_rows: bool, dialect) -> str:
    """PostgreSQL: an advance as one statement, built once per set of columns it writes (no
    value is ever part of it): the compare-and-set UPDATE of `_advance_statement` and, with
    rows, an INSERT of the rows (a JSON array of `_to_db` objects, `%(trial_rows)s`, each
    column from its key) that runs only if the UPDATE moved the screen; the count of sessions
    moved (1 or 0). One statement is one transaction: all of it is committed before its result
    comes back, or none of it is kept."""
    moved = f"{_sql(_advance_statement(columns), dialect)} RETURNING sessions.id"
    if not with_rows:
        return f"WITH moved AS ({moved}) SELECT count(*) FROM moved"
    names = ", ".join(f'"{c.name}"' for c in trials.columns)
    return (f"WITH moved AS ({moved}), saved AS (INSERT INTO trials ({names}) SELECT {names} "
            "FROM json_populate_recordset(NULL::trials, %(trial_rows)s::json) "
            "WHERE EXISTS (SELECT FROM moved)) SELECT count(*) FROM moved")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                   "PRAGMA foreign_keys=ON"):
        cursor.execute(pragma)
    cursor.close()


def parse_url(url: str) -> URL:
    """`url` parsed; ValueError naming the problem and the forms allowed if it cannot be."""
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 (a port that is not a number fails only when read)
    except (ArgumentError, ValueError) as err:
        raise ValueError(f"the database URL cannot be read ({err}); use sqlite:///path/to/"
                         "file.sqlite or postgresql+psycopg://user@host:5432/dbname") from None
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:/// URL (None for another backend)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).expanduser().absolute()


def open_engine(url: str, create: bool = True) -> Engine:
    """A SQLAlchemy engine for `url` (sqlite:///path or postgresql+psycopg://...), with the
    tables created if missing (create=False: a database without them is an error). SQLite's
    folder and empty file are created here, once: its connections open the file read-write
    and never create one (a deleted file is an error, not a new empty database); its writers
    wait up to 30 s for each other (several server processes share one file)."""
    parsed = parse_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(f"database URL {shown!r}: give a file, sqlite:///path/to/file.sqlite")
        path = sqlite_path(url)
        if not create and not path.is_file():
            raise ValueError(f"no database file {path} (from {shown!r})")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create the database file {path} (from {shown!r}): "
                             f"{err.strerror}; give a --db path in a folder you can write") from None
        if not os.access(path, os.R_OK | os.W_OK):
            raise ValueError(f"the database file {path} is not readable and writable by this "
                             "user; fix its permissions or give another --db")
        engine = create_engine(URL.create("sqlite", database=f"file:{quote(str(path))}",
                                          query={"mode": "rw", "uri": "true"}),
                               connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif parsed.get_backend_name() == "postgresql":
        # connections kept open for the request threads (anyio runs up to 40 per process):
        # one made and dropped per request beyond them costs PostgreSQL a process start
        engine = create_engine(parsed, pool_size=20, max_overflow=20)
    else:
        raise ValueError(f"database URL {shown!r}: use sqlite:///path/to/file.sqlite or "
                         "postgresql+psycopg://user@host/dbname")
    try:
        if create and engine.dialect.name == "postgresql":
            # server processes starting together on a new database: one creates the tables
            with engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(4242)"))
                metadata.create_all(conn)
                _add_new_columns(conn)
        elif create:
            metadata.create_all(engine)
            _add_new_columns(engine)
        elif not inspect(engine).has_table("sessions"):
            raise ValueError(f"{shown} holds no online sessions (no 'sessions' table)")
    except DBAPIError as err:
        engine.dispose()
        raise ValueError(f"cannot open the database {shown}: {_reason(err)}") from None
    return engine


def _add_new_columns(bind) -> None:
    """Give a database made before a table gained a column (e.g. `identity`, `resume`) that
    column, empty in the rows it holds, so a study goes on after an update. bind: an engine
    (SQLite: several server processes may try at once, a column another one just added is
    fine) or a connection holding PostgreSQL's lock."""
    dialect = bind.dialect
    for table in (sessions, trials):
        for column in table.columns:
            if column.name in {c["name"] for c in inspect(bind).get_columns(table.name)}:
                continue
            name = dialect.identifier_preparer.quote(column.name)  # a schema name
            statement = text(f"ALTER TABLE {table.name} ADD COLUMN {name} "
                             f"{column.type.compile(dialect)}")
            if not isinstance(bind, Engine):
                bind.execute(statement)
                continue
            try:
                with bind.begin() as conn:
                    conn.execute(statement)
            except DBAPIError:
                if column.name not in {c["name"]
                                       for c in inspect(bind).get_columns(table.name)}:
                    raise


class Database:
    """The online store: sessions and their trial rows (see the module docstring)."""

    def __init__(self, url: str, create: bool = True):
        self.url = parse_url(url).render_as_string(hide_password=True)  # for messages
        self.engine = open_engine(url, create)
        # one-statement reads on a participant's request: no BEGIN and ROLLBACK around them
        # (a single statement sees one committed state anyway), a round trip instead of three
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.path = sqlite_path(url)
        self._identity = None if self.path is None else _identity(self.path)
        self._wal: tuple[int, int] | None = None  # the write-ahead log's identity, once seen
        self._down: str | None = None  # the reason while unavailable (logged once)
        self._down_lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    def _check_file(self) -> None:
        """Raise Unavailable unless a SQLite database is still the writable file opened."""
        if self.path is None:
            return
        try:
            same = _identity(self.path) == self._identity
        except FileNotFoundError:
            raise Unavailable(f"the database file {self.path} is gone (deleted or moved)") \
                from None
        if not same:
            raise Unavailable(f"{self.path} is not the database file the server opened "
                              "(replaced)")
        if not os.access(self.path, os.W_OK):
            raise Unavailable(f"the database file {self.path} is read-only")
        self._check_wal()

    def _check_wal(self) -> None:
        """Raise Unavailable if the write-ahead log (`<file>-wal`, where committed answers wait
        for their checkpoint) this process writes to was deleted: its answers would be lost
        at the next restart. Checked by identity first; only when that changed, by the open
        files of this process (Linux: a deleted file shows as '... (deleted)'), since SQLite
        itself removes the log when the last connection to the file closes."""
        wal = Path(f"{self.path}-wal")
        try:
            now = _identity(wal)
        except FileNotFoundError:
            now = None
        if now == self._wal:
            return
        if self._wal is not None and f"{wal} (deleted)" in _open_files():
            raise Unavailable(f"the database's write-ahead log {wal} was deleted; answers "
                              "saved since the last checkpoint would be lost")
        self._wal = now

    @contextmanager
    def _using(self, write: bool = False):
        """Around every call: the file check before and after (after: the write went to the
        file that stays), database errors as Unavailable, one log line per change of state
        (only a write shows the database is back: reads may work on a full disk)."""
        try:
            self._check_file()
            yield
            self._check_file()
        except Unavailable as err:
            self._state(str(err))
            raise
        except DBAPIError as err:
            self._state(_reason(err))
            raise Unavailable(_reason(err)) from None
        if write and self._down is not None:
            self._state(None)

    def _state(self, down: str | None) -> None:
        with self._down_lock:
            if (down is None) == (self._down is None):
                return
            self._down = down
        line = (f"database {self.url} unavailable: {down}; answers get 503 until it is back"
                if down else f"database {self.url} available again")
        print(f"{utc_now()} {line}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ sessions

    def _first(self, statement, params: dict) -> dict | None:
        """The first row (column name -> value) of a one-statement read, None if none.
        PostgreSQL: run by psycopg itself, the statement compiled once per process (half the
        CPU of SQLAlchemy's execution: a participant's every request reads one)."""
        with self._using(), self._reader.connect() as conn:
            if self.engine.dialect.name != "postgresql":
                row = conn.execute(statement, params).first()
                return None if row is None else row._mapping
            try:
                with conn.connection.driver_connection.cursor(row_factory=dict_row) as cur:
                    return cur.execute(_sql(statement, self.engine.dialect), params).fetchone()
            except psycopg.Error as err:
                raise self._driver_error(conn, err) from None

    def _driver_error(self, conn, err: psycopg.Error) -> Unavailable:
        """An error of a statement psycopg ran itself, as `Unavailable`; a lost connection (the
        server went down or restarted) is dropped with all the idle ones, as SQLAlchemy does
        on a disconnect, so the next request connects afresh instead of failing on another."""
        if conn.connection.driver_connection.broken:
            conn.invalidate()
            self.engine.dispose()
        return Unavailable(_reason(err))

    def by_token(self, token: str) -> SessionRecord | None:
        row = self._first(_BY_TOKEN, {"token": token_hash(token)})
        return None if row is None else _record(row)

    def by_token_resume(self, token: str, known: str) -> tuple[SessionRecord | None,
                                                               dict | None]:
        """`by_token` and, in the same query, the session's resume point, unless its screen is
        `known` (the caller has the flow of that screen): then None, as in a database made
        before resume points."""
        row = self._first(_BY_TOKEN_RESUME, {"token": token_hash(token), "known": known})
        return (None, None) if row is None else (_record(row), row["resume"])

    def by_participant(self, study: str, participant: str, session: int) -> SessionRecord | None:
        with self._using(), self.engine.connect() as conn:
            row = conn.execute(select(*_record_columns()).where(
                sessions.c.study == study, sessions.c.participant == participant,
                sessions.c.session == session)).first()
        return None if row is None else _record(row)

    def allow_start(self, study: str, address: str, per_minute: int,
                    now: float | None = None) -> bool:
        """Count a call to start a session from `address`: False (nothing counted) if it has
        made `per_minute` in the last 60 s, in any server process on this database. One
        transaction; PostgreSQL serialises the calls of one address with an advisory lock,
        SQLite all writers with its lock (the first statement writes)."""
        now = time.time() if now is None else now
        key = hashlib.sha256(address.encode("utf-8")).hexdigest()
        with self.transaction() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                             {"k": int(key[:15], 16)})
            conn.execute(starts.delete().where(starts.c.at <= now - 60))
            recent = conn.execute(select(func.count()).select_from(starts).where(
                starts.c.study == study, starts.c.address_sha256 == key)).scalar_one()
            if recent >= per_minute:
                return False
            conn.execute(insert(starts).values(study=study, address_sha256=key, at=now))
        return True

    def create(self, *, uid: str, study: str, participant: str, session: int, token: str, d: int,
               screen: str, meta: dict, now: str, resume: dict | None = None
               ) -> SessionRecord | None:
        """Insert a new session in status 'consent'; None if (study, participant, session)
        already exists (another browser got there first). resume: its resume point (None:
        rebuilt from its rows when first needed)."""
        values = dict(uid=uid, study=study, participant=participant, session=session,
                      token_sha256=token_hash(token), status="consent", d=d, screen=screen,
                      acked=0, n_rows=0, shown=0, created=now, updated=now, meta=meta)
        with self._using(write=True):
            try:
                with self.engine.begin() as conn:
                    new_id = conn.execute(insert(sessions).values(**values, resume=resume)
                                          ).inserted_primary_key[0]
            except IntegrityError:
                return None
        return SessionRecord(id=new_id, **{k: v for k, v in values.items()
                                           if k != "token_sha256"})

    def latest(self, study: str, participant: str) -> SessionRecord | None:
        """The participant's session with the highest number (earlier ones were reset)."""
        with self._using(), self._reader.connect() as conn:
            row = conn.execute(select(*_record_columns()).where(
                sessions.c.study == study, sessions.c.participant == participant)
                .order_by(sessions.c.session.desc()).limit(1)).first()
        return None if row is None else _record(row)

    def by_uid(self, uid: str) -> SessionRecord | None:
        with self._using(), self._reader.connect() as conn:
            row = conn.execute(select(*_record_columns()).where(sessions.c.uid == uid)).first()
        return None if row is None else _record(row)

    def rebind(self, record: SessionRecord, token: str | None, *, now: str, event: str,
               detail: dict, status: str | None = None) -> bool:
        """Give the session a new screen id (a page still open on it gets 409 and reloads), a
        new token (None: keep it), optionally a new status, and record `event`; all in one
        transaction, and only if the session is still as `record` saw it (False, nothing
        written, if it moved on)."""
        values = dict(screen=secrets.token_urlsafe(12), updated=now)
        if token is not None:
            values["token_sha256"] = token_hash(token)
        if status is not None:
            values["status"] = status
        with self._using(write=True):
            try:
                with self.engine.begin() as conn:
                    moved = conn.execute(update(sessions).where(
                        sessions.c.id == record.id, sessions.c.screen == record.screen,
                        sessions.c.status == record.status).values(**values))
                    if moved.rowcount != 1:
                        raise _Stale
                    conn.execute(insert(event_log).values(session_id=record.id, time=now,
                                                          kind=event, detail=detail))
            except _Stale:
                return False
        return True

    def add_event(self, session_id: int, kind: str, detail: dict, now: str,
                  limit: int) -> bool:
        """Record an event of a session; False (nothing written) if it has `limit` already."""
        with self.transaction() as conn:
            n = conn.execute(select(func.count()).select_from(event_log).where(
                event_log.c.session_id == session_id)).scalar_one()
            if n >= limit:
                return False
            conn.execute(insert(event_log).values(session_id=session_id, time=now, kind=kind,
                                               detail=detail))
        return True

    def events(self, session_id: int) -> list[dict]:
        """The session's events, oldest first: {time, kind, **detail}."""
        with self._using(), self.engine.connect() as conn:
            return [{"time": r.time, "kind": r.kind, **r.detail} for r in conn.execute(
                select(event_log).where(event_log.c.session_id == session_id)
                .order_by(event_log.c.id))]

    def event_counts(self, study: str, kind: str) -> dict[int, int]:
        """How many events of `kind` each session of `study` has (sessions with none left out),
        in one query."""
        with self._using(), self.engine.connect() as conn:
            return dict(conn.execute(
                select(event_log.c.session_id, func.count())
                .join(sessions, sessions.c.id == event_log.c.session_id)
                .where(sessions.c.study == study, event_log.c.kind == kind)
                .group_by(event_log.c.session_id)).all())

    def catch_counts(self, study: str) -> dict[int, tuple[int, int]]:
        """session id -> (catch answers scored, of them correct) of `study`'s sessions that
        have catch rows, in one query."""
        with self._using(), self.engine.connect() as conn:
            return {sid: (int(n), int(k or 0)) for sid, n, k in conn.execute(
                select(trials.c.session_id, func.count(trials.c.correct),
                       func.sum(case((trials.c.correct, 1), else_=0)))
                .join(sessions, sessions.c.id == trials.c.session_id)
                .where(sessions.c.study == study, trials.c.kind == "catch")
                .group_by(trials.c.session_id))}

    def clients(self, ids: list[int]) -> dict[int, dict]:
        """What the page measured about each session's device at its start (the metadata's
        `online.client`; {} for a session without one)."""
        if not ids:
            return {}
        with self._using(), self.engine.connect() as conn:
            return {r.id: r.meta.get("online", {}).get("client") or {} for r in conn.execute(
                select(sessions.c.id, sessions.c.meta).where(sessions.c.id.in_(ids)))}

    def studies(self) -> list[tuple[str, str, dict]]:
        """(study, status, meta) of every session: for checks at server start."""
        with self._using(), self.engine.connect() as conn:
            return [(r.study, r.status, r.meta) for r in conn.execute(
                select(sessions.c.study, sessions.c.status, sessions.c.meta))]

    def all_sessions(self, study: str | None = None) -> list[SessionRecord]:
        query = select(*_record_columns()).order_by(sessions.c.id)
        if study is not None:
            query = query.where(sessions.c.study == study)
        with self._using(), self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def abandon_expired(self, study: str, inactive_before: str | None,
                        started_before: str | None) -> int:
        """Mark `study`'s sessions in progress last updated before `inactive_before` or
        created before `started_before` (UTC ISO; None: no such limit) `abandoned`; how many."""
        ended = [c for c, limit in ((sessions.c.updated, inactive_before),
                                    (sessions.c.created, started_before)) if limit is not None]
        if not ended:
            return 0
        conditions = [c < limit for c, limit in zip(
            ended, [x for x in (inactive_before, started_before) if x is not None], strict=True)]
        with self.transaction() as conn:
            return conn.execute(update(sessions).where(
                sessions.c.study == study, sessions.c.status.in_(("consent", "running")),
                or_(*conditions)).values(status="abandoned")).rowcount

    def in_progress(self, study: str) -> int:
        """Sessions of `study` in consent or running."""
        with self._using(), self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(sessions).where(
                sessions.c.study == study,
                sessions.c.status.in_(("consent", "running")))).scalar_one()

    def progress(self, study: str) -> list[Progress]:
        """Every session of `study`, in the order they started, without their metadata."""
        columns = [sessions.c[name] for name in Progress.__dataclass_fields__]
        with self._using(), self.engine.connect() as conn:
            return [Progress(*r) for r in conn.execute(
                select(*columns).where(sessions.c.study == study).order_by(sessions.c.id))]

    @contextmanager
    def transaction(self):
        """A write transaction (a connection): the writes here run in one, and callers' other
        writes may join one (`advance(conn=...)`, the shared chain store's calls): all of it is
        kept, or none. Errors as in every call."""
        with self._using(write=True), self.engine.begin() as conn:
            yield conn

    def advance(self, record: SessionRecord, new_screen: str, *, now: str, acked: int,
                rows: list[dict] = (), status: str | None = None,
                meta: dict | None = None, resume: dict | None = None, conn=None) -> bool:
        """One step of a participant, in one transaction: move `screen` from `record.screen` to
        `new_screen` (False, and nothing written, if it is no longer `record.screen`), then
        append `rows` (schema rows, numbered from `record.n_rows`); resume: the resume point
        after them (None: unchanged). conn: the `transaction` to join (the caller rolls it
        back on False), else one of its own."""
        values = dict(screen=new_screen, acked=acked, updated=now,
                      n_rows=record.n_rows + len(rows),
                      shown=record.shown + sum(r["kind"] != "gate" for r in rows))
        if resume is not None:
            values["resume"] = resume
        if status is not None:
            values["status"] = status
        if meta is not None:
            values["meta"] = meta
        def write(tx) -> bool:
            moved = tx.execute(_advance_statement(tuple(values)), {
                "id_": record.id, "old_screen": record.screen,
                **{f"{c}_": v for c, v in values.items()}})
            if moved.rowcount != 1:
                return False
            if rows:
                tx.execute(_INSERT_TRIALS, [_to_db(record.id, r, record.d) for r in rows])
            return True

        if conn is not None:
            return write(conn)
        if self.engine.dialect.name == "postgresql":
            return self._advance_one_statement(record, values, rows)
        with self._using(write=True):
            try:
                with self.engine.begin() as tx:
                    if not write(tx):
                        raise _Stale
            except _Stale:
                return False
        return True

    def _advance_one_statement(self, record: SessionRecord, values: dict,
                               rows: list[dict]) -> bool:
        """`advance`'s transaction on PostgreSQL as one statement (`_save_sql`), run by psycopg
        itself: one round trip, and PostgreSQL parses one statement instead of a BEGIN, an
        UPDATE, an INSERT per row and a COMMIT. True once it has returned (committed) having
        moved the screen."""
        params = {"id_": record.id, "old_screen": record.screen,
                  **{f"{c}_": Json(v) if c in _JSON_COLUMNS and v is not None else v
                     for c, v in values.items()}}
        if rows:
            params["trial_rows"] = _rows_json([_to_db(record.id, r, record.d) for r in rows])
        statement = _save_sql(tuple(values), bool(rows), self.engine.dialect)
        with self._using(write=True), self._reader.connect() as conn:  # autocommit
            try:
                with conn.connection.driver_connection.cursor() as cur:
                    return cur.execute(statement, params).fetchone()[0] == 1
            except psycopg.Error as err:  # nothing of the statement is kept
                raise self._driver_error(conn, err) from None

    def resume(self, session_id: int) -> dict | None:
        """The session's resume point (None: saved before there were any)."""
        with self._using(), self._reader.connect() as conn:
            return conn.execute(_RESUME, {"id": session_id}).scalar_one()

    # ------------------------------------------------------------------ trials

    def codes(self, session_id: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(current, proposal) codes of one saved row (a repeat trial shows them again)."""
        with self._using(), self._reader.connect() as conn:
            found = conn.execute(select(trials.c.current, trials.c.proposal).where(
                trials.c.session_id == session_id, trials.c.row == row)).one()
        return np.asarray(found.current, dtype=float), np.asarray(found.proposal, dtype=float)

    def rows(self, session_id: int, d: int) -> list[dict]:
        """The session's rows as schema dicts (current_0 ...), in row order."""
        with self._using(), self.engine.connect() as conn:
            result = conn.execute(select(trials).where(trials.c.session_id == session_id)
                                  .order_by(trials.c.row))
            return [_from_db(r._mapping, d) for r in result]

    def rows_after(self, first: dict[int, int], d: int) -> dict[int, list[dict]]:
        """session id -> its rows from row number `first[id]` on (schema dicts, in order),
        in a few queries for all the sessions."""
        out: dict[int, list[dict]] = {}
        items = sorted(first.items())
        with self._using(), self.engine.connect() as conn:
            for i in range(0, len(items), 100):  # SQLite parses at most ~1000 nested terms
                where = or_(*[and_(trials.c.session_id == sid, trials.c.row >= k)
                              for sid, k in items[i:i + 100]])
                for r in conn.execute(select(trials).where(where)
                                      .order_by(trials.c.session_id, trials.c.row)):
                    out.setdefault(r.session_id, []).append(_from_db(r._mapping, d))
        return out

    def frame(self, session_id: int, d: int) -> pd.DataFrame:
        """The session's rows as a DataFrame typed like `store.read_trials` gives."""
        return rows_frame(self.rows(session_id, d), d)

    def moves(self, session_id: int) -> list[tuple[int, list]]:
        """(row, handle path) of the session's slider trials, in row order."""
        with self._using(), self.engine.connect() as conn:
            return [(r.row, r.moves) for r in conn.execute(
                select(trials.c.row, trials.c.moves).where(
                    trials.c.session_id == session_id, trials.c.moves.is_not(None))
                .order_by(trials.c.row))]

    def counts(self) -> dict[int, int]:
        """session id -> rows stored (to check the sessions' own counts)."""
        with self._using(), self.engine.connect() as conn:
            return dict(conn.execute(select(trials.c.session_id, func.count())
                                     .group_by(trials.c.session_id)).all())


def _open_files() -> set[str]:
    """What this process's file descriptors point to (Linux /proc; empty elsewhere)."""
    found = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile
    return found


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _to_db(session_id: int, row: dict, d: int) -> dict:
    out = {c.name: row.get(c.name) for c in _SCALARS}
    out["session_id"] = session_id
    out["moves"] = row.get("moves")
    for p in LATENT:
        out[p] = [float(row[f"{p}_{i}"]) for i in range(d)]
    gsp = row.get("direction_0") is not None
    out["direction"] = [float(row[f"direction_{i}"]) for i in range(d)] if gsp else None
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in out.items()}


def _rows_json(rows: list[dict]) -> str:
    """`_to_db` rows as one JSON array for `_save_sql`. JSON has no NaN or infinity: such a
    value of a scalar column goes as PostgreSQL's spelling of it, a string its float column
    reads back as the same value."""
    try:
        return json.dumps(rows, allow_nan=False)
    except ValueError:
        spelled = {math.inf: "Infinity", -math.inf: "-Infinity"}
        return json.dumps([{k: (spelled.get(v, "NaN") if isinstance(v, float)
                                and not math.isfinite(v) else v) for k, v in r.items()}
                           for r in rows], allow_nan=False)


def _from_db(mapping, d: int) -> dict:
    row = {c.name: mapping[c.name] for c in _SCALARS}
    for p in LATENT:
        row.update(zip(schema.latent_columns(p, d), mapping[p], strict=True))
    if mapping["direction"] is not None:
        row.update(zip(schema.direction_columns(d), mapping["direction"], strict=True))
    return row


def rows_frame(rows: list[dict], d: int) -> pd.DataFrame:
    """Schema dicts -> a DataFrame with the schema's columns, order and dtypes."""
    frame = pd.DataFrame(rows, columns=schema.header(d), dtype=object)
    return frame.astype(schema.pandas_dtypes(d))
