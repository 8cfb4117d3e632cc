"""Online sessions in a database: SQLite (the zero-set-up default) or PostgreSQL (several servers).

Three tables, created by `Database` when missing (SQLAlchemy Core, so no SQL is ever built from a
participant id, token or answer):
- `sessions`: one participant-session: study, participant, session number, the sha256 of its
  token (the token itself is never stored), where it is in the session flow (`screen`: the id
  of the screen on show, `acked`: message screens passed before the pending trial), counts, and
  the metadata that becomes its `session.json`.
- `trials`: the rows of `mcmcp.schema`, one per event, keyed by (session_id, row) so a row can
  never be written twice; the latent coordinates (and a GSP circle's direction) are JSON lists
  (full float precision); a slider trial's handle path is kept beside its row (`moves`).

Every step of a participant is one transaction that first moves the session's `screen` from the
id the participant answered to a new one (compare-and-set) and only then writes the rows, so a
stale, replayed or concurrent answer (another tab, another server process) changes nothing.
SQLite runs in WAL mode with synchronous=FULL: a committed answer survives kill -9 and power cuts.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from mcmcp import schema

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
    Column("status", String(16), nullable=False),  # consent | running | complete | declined | ended | reset
    Column("d", Integer, nullable=False),
    Column("screen", String(32), nullable=False),
    Column("acked", Integer, nullable=False, default=0),
    Column("n_rows", Integer, nullable=False, default=0),
    Column("shown", Integer, nullable=False, default=0),
    Column("created", String(32), nullable=False),
    Column("updated", String(32), nullable=False),
    Column("meta", JSON, nullable=False),
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


class _Stale(Exception):
    """The session moved on before this step could be written (rolls the transaction back)."""


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


def _record(row) -> SessionRecord:
    return SessionRecord(**{k: row._mapping[k] for k in SessionRecord.__dataclass_fields__})


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                   "PRAGMA foreign_keys=ON"):
        cursor.execute(pragma)
    cursor.close()


def open_engine(url: str, create: bool = True) -> Engine:
    """A SQLAlchemy engine for `url` (sqlite:///path or postgresql+psycopg://...), with the
    tables created if missing (create=False: a database without them is an error). SQLite's
    folder is created; its writers wait up to 30 s for each other (several server processes
    share one file)."""
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(f"database URL {shown!r}: give a file, sqlite:///path/to/file.sqlite")
        path = Path(parsed.database).expanduser()
        if not create and not path.is_file():
            raise ValueError(f"no database file {path} (from {shown!r})")
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif parsed.get_backend_name() == "postgresql":
        engine = create_engine(parsed, pool_size=8, max_overflow=16, pool_pre_ping=True)
    else:
        raise ValueError(f"database URL {shown!r}: use sqlite:///path/to/file.sqlite or "
                         "postgresql+psycopg://user@host/dbname")
    if create:
        metadata.create_all(engine)
        _add_new_columns(engine)
    elif not inspect(engine).has_table("sessions"):
        raise ValueError(f"{shown} holds no online sessions (no 'sessions' table)")
    return engine


def _add_new_columns(engine: Engine) -> None:
    """Give a database made before the trial schema gained a column (e.g. `identity`) that
    column, empty in the rows it holds, so a study goes on after an update. Several server
    processes may try at once: a column another one just added is fine."""
    for column in trials.columns:
        if column.name in {c["name"] for c in inspect(engine).get_columns("trials")}:
            continue
        name = engine.dialect.identifier_preparer.quote(column.name)  # a schema name
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE trials ADD COLUMN {name} "
                                  f"{column.type.compile(engine.dialect)}"))
        except DBAPIError:
            if column.name not in {c["name"] for c in inspect(engine).get_columns("trials")}:
                raise


class Database:
    """The online store: sessions and their trial rows (see the module docstring)."""

    def __init__(self, url: str, create: bool = True):
        self.url = make_url(url).render_as_string(hide_password=True)  # for messages
        self.engine = open_engine(url, create)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ sessions

    def by_token(self, token: str) -> SessionRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(
                sessions.c.token_sha256 == token_hash(token))).first()
        return None if row is None else _record(row)

    def by_participant(self, study: str, participant: str, session: int) -> SessionRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(
                sessions.c.study == study, sessions.c.participant == participant,
                sessions.c.session == session)).first()
        return None if row is None else _record(row)

    def create(self, *, uid: str, study: str, participant: str, session: int, token: str, d: int,
               screen: str, meta: dict, now: str) -> SessionRecord | None:
        """Insert a new session in status 'consent'; None if (study, participant, session)
        already exists (another browser got there first)."""
        values = dict(uid=uid, study=study, participant=participant, session=session,
                      token_sha256=token_hash(token), status="consent", d=d, screen=screen,
                      acked=0, n_rows=0, shown=0, created=now, updated=now, meta=meta)
        try:
            with self.engine.begin() as conn:
                new_id = conn.execute(insert(sessions).values(**values)).inserted_primary_key[0]
        except IntegrityError:
            return None
        return SessionRecord(id=new_id, **{k: v for k, v in values.items()
                                           if k != "token_sha256"})

    def latest(self, study: str, participant: str) -> SessionRecord | None:
        """The participant's session with the highest number (earlier ones were reset)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(
                sessions.c.study == study, sessions.c.participant == participant)
                .order_by(sessions.c.session.desc()).limit(1)).first()
        return None if row is None else _record(row)

    def by_uid(self, uid: str) -> SessionRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(sessions.c.uid == uid)).first()
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
        with self.engine.begin() as conn:
            n = conn.execute(select(func.count()).select_from(event_log).where(
                event_log.c.session_id == session_id)).scalar_one()
            if n >= limit:
                return False
            conn.execute(insert(event_log).values(session_id=session_id, time=now, kind=kind,
                                               detail=detail))
        return True

    def events(self, session_id: int) -> list[dict]:
        """The session's events, oldest first: {time, kind, **detail}."""
        with self.engine.connect() as conn:
            return [{"time": r.time, "kind": r.kind, **r.detail} for r in conn.execute(
                select(event_log).where(event_log.c.session_id == session_id)
                .order_by(event_log.c.id))]

    def studies(self) -> list[tuple[str, str, dict]]:
        """(study, status, meta) of every session: for checks at server start."""
        with self.engine.connect() as conn:
            return [(r.study, r.status, r.meta) for r in conn.execute(
                select(sessions.c.study, sessions.c.status, sessions.c.meta))]

    def all_sessions(self, study: str | None = None) -> list[SessionRecord]:
        query = select(sessions).order_by(sessions.c.id)
        if study is not None:
            query = query.where(sessions.c.study == study)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def advance(self, record: SessionRecord, new_screen: str, *, now: str, acked: int,
                rows: list[dict] = (), status: str | None = None,
                meta: dict | None = None) -> bool:
        """One step of a participant, in one transaction: move `screen` from `record.screen` to
        `new_screen` (False, and nothing written, if it is no longer `record.screen`), then
        append `rows` (schema rows, numbered from `record.n_rows`)."""
        values = dict(screen=new_screen, acked=acked, updated=now,
                      n_rows=record.n_rows + len(rows),
                      shown=record.shown + sum(r["kind"] != "gate" for r in rows))
        if status is not None:
            values["status"] = status
        if meta is not None:
            values["meta"] = meta
        try:
            with self.engine.begin() as conn:
                moved = conn.execute(update(sessions).where(
                    sessions.c.id == record.id, sessions.c.screen == record.screen)
                    .values(**values))
                if moved.rowcount != 1:
                    raise _Stale
                if rows:
                    conn.execute(insert(trials), [_to_db(record.id, r, record.d) for r in rows])
        except _Stale:
            return False
        return True

    # ------------------------------------------------------------------ trials

    def rows(self, session_id: int, d: int) -> list[dict]:
        """The session's rows as schema dicts (current_0 ...), in row order."""
        with self.engine.connect() as conn:
            result = conn.execute(select(trials).where(trials.c.session_id == session_id)
                                  .order_by(trials.c.row))
            return [_from_db(r._mapping, d) for r in result]

    def frame(self, session_id: int, d: int) -> pd.DataFrame:
        """The session's rows as a DataFrame typed like `store.read_trials` gives."""
        return rows_frame(self.rows(session_id, d), d)

    def study_frame(self, study: str, d: int) -> pd.DataFrame:
        """Every row of a study's sessions (all participants), typed like `analysis.load_trials`."""
        with self.engine.connect() as conn:
            result = conn.execute(
                select(trials).join(sessions, sessions.c.id == trials.c.session_id)
                .where(sessions.c.study == study).order_by(trials.c.session_id, trials.c.row))
            return rows_frame([_from_db(r._mapping, d) for r in result], d)

    def moves(self, session_id: int) -> list[tuple[int, list]]:
        """(row, handle path) of the session's slider trials, in row order."""
        with self.engine.connect() as conn:
            return [(r.row, r.moves) for r in conn.execute(
                select(trials.c.row, trials.c.moves).where(
                    trials.c.session_id == session_id, trials.c.moves.is_not(None))
                .order_by(trials.c.row))]

    def counts(self) -> dict[int, int]:
        """session id -> rows stored (to check the sessions' own counts)."""
        with self.engine.connect() as conn:
            return dict(conn.execute(select(trials.c.session_id, func.count())
                                     .group_by(trials.c.session_id)).all())


def _to_db(session_id: int, row: dict, d: int) -> dict:
    out = {c.name: row.get(c.name) for c in _SCALARS}
    out["session_id"] = session_id
    out["moves"] = row.get("moves")
    for p in LATENT:
        out[p] = [float(row[f"{p}_{i}"]) for i in range(d)]
    gsp = row.get("direction_0") is not None
    out["direction"] = [float(row[f"direction_{i}"]) for i in range(d)] if gsp else None
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in out.items()}


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
