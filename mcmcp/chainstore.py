"""Chains that outlive a participant: the shared chain store, with leases (SQLite or PostgreSQL).

Across-participant designs (config `chains.across_participants`) run a study's chains in a
database shared by every process that serves its participants: the lab computers of one study
(PostgreSQL, or one lab computer over days on SQLite) and the online servers alike. SQLAlchemy
Core, so no SQL is ever built from a participant id.

Tables (created when missing):
- `shared_chains`: one row per chain of a study: its emotion, `version` (committed steps: the
  iteration of the chain's next step), shown trials, the target length, the current state
  (position, accepted count, proposal kappa), and who holds it: `holder`, `lease`, `expires`
  (unix seconds), with `n_leases` (leases granted so far).
- `shared_leases`: every lease ever granted: chain, participant, the participant's session and
  hold it serves, `seq` (the chain's n-th lease; unique per chain, so a chain's leases are one
  sequence), started, ended and why (released | complete | expired), the version it started
  from and the steps committed under it, the chain's state as that lease last left it (`state`:
  position, n_accepted, kappa, version, shown) and `given_up` (unix seconds: the participant's
  session let it go without an answer: late, or not needed any more).
- `shared_steps`: every committed step (schema rows: gate rows and shown trials), keyed by
  (study, chain, chain_step): a step can never be written twice.
- `shared_late`: answers that arrived when their lease was no longer the chain's (expired,
  taken over or the chain moved on): kept for audit, never part of a chain.

The rules: a chain is held by at most one lease at a time. `lease` grants a free chain (never
held, released, or its lease expired) by compare-and-set on its `n_leases`; `advance` commits
a participant's answer (its rows and the chain's new state) by compare-and-set on the lease id
and the version it was drawn from, and only before the lease expires, in the same transaction
as the rows; anything else raises `LeaseLost` after recording the answer in `shared_late`.
Every answer that commits extends the lease. Each call takes an optional `conn`: a connection
whose transaction it joins (the online server commits a chain step and the session's rows in one
transaction when both live in one database). Time is the processes' clock (unix seconds, given
as `now`): the hosts sharing a store must keep their clocks in step (NTP).
This module never imports a wing: lab, online and simulation use it alike.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import (
    JSON,
    Column,
    Double,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError

from mcmcp.sampling.chain import ChainState

# How many free chains `lease` tries in one call before it says none is free: several
# processes racing for the same least-advanced chain each move on to the next one.
CANDIDATES = 16

metadata = MetaData()

chains_table = Table(
    "shared_chains", metadata,
    Column("study", String(64), nullable=False),
    Column("chain", Integer, nullable=False),
    Column("emotion", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("shown", Integer, nullable=False),
    Column("target", Integer, nullable=False),
    Column("position", JSON, nullable=False),
    Column("n_accepted", Integer, nullable=False),
    Column("kappa", Double, nullable=True),
    Column("holder", String(64), nullable=True),
    Column("lease", String(32), nullable=True),
    Column("expires", Double, nullable=True),
    Column("n_leases", Integer, nullable=False),
    PrimaryKeyConstraint("study", "chain"),
)

leases_table = Table(
    "shared_leases", metadata,
    Column("lease", String(32), primary_key=True),
    Column("study", String(64), nullable=False),
    Column("chain", Integer, nullable=False),
    Column("participant", String(64), nullable=False),
    Column("session", Integer, nullable=False),
    Column("hold", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("started", Double, nullable=False),
    Column("version_start", Integer, nullable=False),
    Column("ended", Double, nullable=True),
    Column("end_reason", String(16), nullable=True),
    Column("steps", Integer, nullable=False),
    Column("state", JSON, nullable=True),
    Column("given_up", Double, nullable=True),
    UniqueConstraint("study", "chain", "seq"),
)

steps_table = Table(
    "shared_steps", metadata,
    Column("study", String(64), nullable=False),
    Column("chain", Integer, nullable=False),
    Column("chain_step", Integer, nullable=False),
    Column("lease", String(32), nullable=False),
    Column("participant", String(64), nullable=False),
    Column("committed", Double, nullable=False),
    Column("row", JSON, nullable=False),
    PrimaryKeyConstraint("study", "chain", "chain_step"),
)

late_table = Table(
    "shared_late", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study", String(64), nullable=False),
    Column("chain", Integer, nullable=False),
    Column("lease", String(32), nullable=False),
    Column("participant", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("reason", String(16), nullable=False),
    Column("received", Double, nullable=False),
    Column("rows", JSON, nullable=False),
)


@dataclass(frozen=True)
class Lease:
    """A participant's hold of one chain, as last committed: `version` and `state` are the
    chain's (state.iteration == version), `shown` its shown trials, `expires` unix seconds."""

    id: str
    study: str
    chain: int
    emotion: str
    participant: str
    version: int
    shown: int
    target: int
    state: ChainState
    expires: float


class LeaseLost(RuntimeError):
    """An answer whose lease is no longer the chain's (reason: expired | taken | stale): the
    answer is in `shared_late`, never in the chain. Online it is a 409."""

    def __init__(self, lease: Lease, reason: str):
        self.lease, self.reason = lease, reason
        super().__init__(f"chain {lease.chain} of study {lease.study!r}: lease {lease.id} of "
                         f"participant {lease.participant!r} is no longer the chain's "
                         f"({reason}); the answer was kept for audit, not added to the chain")


def _state(cells) -> ChainState:
    """A chain's state from its cells: a `shared_chains` row's mapping, or what a lease row
    keeps of it (`_kept`); the version is the iteration."""
    return ChainState(position=np.asarray(cells["position"], dtype=float),
                      iteration=np.asarray(cells["version"], dtype=np.int64),
                      n_accepted=np.asarray(cells["n_accepted"], dtype=np.int64),
                      kappa=np.asarray(np.nan if cells["kappa"] is None else cells["kappa"]))


def _plain(value):
    """A JSON-able cell: numpy scalars and arrays as Python numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value


def _kept(version: int, shown: int, state: ChainState) -> dict:
    """What a lease row keeps of its chain as the lease last left it (`ChainStore.holds`)."""
    return {"position": _plain(np.asarray(state.position, dtype=float)),
            "n_accepted": int(state.n_accepted), "kappa": _plain(float(state.kappa)),
            "version": int(version), "shown": int(shown)}


@contextmanager
def _joined(engine, conn: Connection | None):
    """`conn` when given (the caller's transaction), else a transaction of its own."""
    if conn is not None:
        yield conn
    else:
        with engine.begin() as own:
            yield own


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"):
        cursor.execute(pragma)
    cursor.close()


class ChainStore:
    """The shared chains of one database (see the module docstring). url: sqlite:///path or
    postgresql+psycopg://...; the tables are created when missing."""

    def __init__(self, url: str):
        parsed = make_url(url)
        self.url = parsed.render_as_string(hide_password=True)  # for messages and records
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise ValueError(f"chain store {url!r}: give a file, sqlite:///path/to/file")
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(parsed, connect_args={"timeout": 60})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif parsed.get_backend_name() == "postgresql":
            self.engine = create_engine(parsed, pool_size=4, max_overflow=8, pool_pre_ping=True)
        else:
            raise ValueError(f"chain store {parsed.render_as_string(hide_password=True)!r}: use "
                             "sqlite:///path/to/file.sqlite or postgresql+psycopg://user@host/db")
        metadata.create_all(self.engine)

    @classmethod
    def on(cls, engine: Engine) -> ChainStore:
        """The chain store in the database of an open SQLAlchemy `engine` (the online server's
        own database: a chain step and the session's rows commit in one transaction); the
        tables are created when missing (on PostgreSQL under a lock, as servers start
        together)."""
        store = cls.__new__(cls)
        store.url = engine.url.render_as_string(hide_password=True)
        store.engine = engine
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(4243)"))
                metadata.create_all(conn)
        else:
            metadata.create_all(engine)
        return store

    def close(self) -> None:
        self.engine.dispose()

    def ensure_chains(self, study: str, starts: dict[int, tuple[str, ChainState]],
                      target: int) -> None:
        """Create the study's chains that do not exist yet: chain id -> (emotion, start state);
        target: shown trials at which a chain is complete. Chains that exist are left alone
        (whoever created them first, with the same seed, made the same starts)."""
        with self.engine.connect() as conn:
            have = set(conn.execute(select(chains_table.c.chain).where(
                chains_table.c.study == study)).scalars())
        for cid, (emotion, state) in starts.items():
            if cid in have:
                continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(chains_table).values(
                        study=study, chain=int(cid), emotion=emotion,
                        version=int(state.iteration), shown=0, target=int(target),
                        position=_plain(state.position), n_accepted=int(state.n_accepted),
                        kappa=_plain(float(state.kappa)), holder=None, lease=None,
                        expires=None, n_leases=0))
            except IntegrityError:  # another process created it first
                pass

    def unfinished(self, study: str, emotion: str | None = None,
                   conn: Connection | None = None) -> set[int] | None:
        """The study's chains (of `emotion`; None: of every emotion) that have not reached
        their target length, held or not; None when the study has no chains yet. An empty set:
        no chain is left to move, nor will be (chains never shrink)."""
        c = chains_table.c
        where = [c.study == study] + ([c.emotion == emotion] if emotion is not None else [])
        with _joined(self.engine, conn) as tx:
            rows = tx.execute(select(c.chain, c.shown, c.target).where(*where)).all()
        return {r.chain for r in rows if r.shown < r.target} if rows else None

    # ------------------------------------------------------------------ leases

    def lease(self, study: str, emotion: str, participant: str, now: float, seconds: float,
              avoid: frozenset[int] | set[int] = frozenset(), session: int = 1,
              hold: int = 0, conn: Connection | None = None) -> Lease | None:
        """Grant `participant` a free chain of `emotion` for `seconds` from `now`: the least
        advanced one (fewest shown trials, then lowest id) that is not complete, not held
        (never leased, released, or its lease expired before `now`) and not in `avoid`.
        session, hold: which of the participant's sessions and holds the lease serves (what
        `held` gives back to a resumed or rebuilt session). None when no chain is free."""
        c = chains_table.c
        free = and_(c.study == study, c.emotion == emotion, c.shown < c.target,
                    or_(c.holder.is_(None), c.expires < now))
        with _joined(self.engine, conn) as tx:
            candidates = tx.execute(select(chains_table).where(free).order_by(
                c.shown, c.chain).limit(CANDIDATES + len(avoid))).all()
        for cand in (r for r in candidates if r.chain not in avoid):
            lease_id = uuid.uuid4().hex
            with _joined(self.engine, conn) as tx:
                # PostgreSQL: a chain another transaction is changing is skipped, never waited
                # for (a lease inside an answer's transaction would otherwise deadlock with
                # one inside another's); SQLite has one writer at a time anyway
                if tx.execute(select(c.chain).where(c.study == study, c.chain == cand.chain)
                              .with_for_update(skip_locked=True)).first() is None:
                    continue
                # n_leases and version pin the row as read: a chain leased, or moved and
                # released, since then is someone else's now
                won = tx.execute(update(chains_table).where(
                    free, c.chain == cand.chain, c.n_leases == cand.n_leases,
                    c.version == cand.version).values(
                    holder=participant, lease=lease_id, expires=now + seconds,
                    n_leases=c.n_leases + 1))
                if won.rowcount != 1:
                    continue  # another process took it first
                if cand.lease is not None:  # the previous holder's lease ran out
                    tx.execute(update(leases_table).where(
                        leases_table.c.lease == cand.lease, leases_table.c.ended.is_(None))
                        .values(ended=cand.expires, end_reason="expired"))
                state = _state(cand._mapping)
                tx.execute(insert(leases_table).values(
                    lease=lease_id, study=study, chain=cand.chain, participant=participant,
                    session=session, hold=hold, seq=cand.n_leases + 1, started=now,
                    version_start=cand.version, ended=None, end_reason=None, steps=0,
                    state=_kept(cand.version, cand.shown, state), given_up=None))
            return Lease(lease_id, study, cand.chain, cand.emotion, participant, cand.version,
                         cand.shown, cand.target, state, now + seconds)
        return None

    def advance(self, lease: Lease, rows: list[dict], state: ChainState, n_shown: int,
                now: float, seconds: float, release: bool = False,
                conn: Connection | None = None) -> Lease:
        """Commit one answer: the chain moves from `lease.version` to `state` (its iteration
        is the new version: one step per row of `rows`, which are the schema rows of the step,
        gate rows first, with `chain_step` lease.version, lease.version + 1, ...) and gains
        `n_shown` shown trials, all in one transaction, if `lease` is still the chain's, at
        that version, and unexpired at `now`. The lease is extended to now + seconds, or ends
        with this answer when `release` is true or the chain reached its target.
        Returns the lease as committed; raises LeaseLost (answer kept in `shared_late`)."""
        steps = [int(r["chain_step"]) for r in rows]
        if steps != list(range(lease.version, lease.version + len(rows))) \
                or int(state.iteration) != lease.version + len(rows):
            raise ValueError(f"chain {lease.chain}: rows with chain_step {steps} and a new "
                             f"iteration {int(state.iteration)} do not continue version "
                             f"{lease.version}")
        c = chains_table.c
        shown = lease.shown + n_shown
        ends = release or shown >= lease.target
        values = dict(version=lease.version + len(rows), shown=shown,
                      position=_plain(state.position), n_accepted=int(state.n_accepted),
                      kappa=_plain(float(state.kappa)),
                      expires=None if ends else now + seconds)
        if ends:
            values.update(holder=None, lease=None)
        with _joined(self.engine, conn) as tx:
            moved = tx.execute(update(chains_table).where(
                c.study == lease.study, c.chain == lease.chain, c.lease == lease.id,
                c.version == lease.version, c.expires >= now).values(**values))
            if moved.rowcount == 1:
                tx.execute(insert(steps_table), [
                    dict(study=lease.study, chain=lease.chain, chain_step=step, lease=lease.id,
                         participant=lease.participant, committed=now,
                         row={k: _plain(v) for k, v in r.items()})
                    for step, r in zip(steps, rows, strict=True)])
                tx.execute(update(leases_table).where(leases_table.c.lease == lease.id).values(
                    steps=leases_table.c.steps + len(rows),
                    state=_kept(lease.version + len(rows), shown, state),
                    **({"ended": now, "end_reason": "complete" if shown >= lease.target
                        else "released"} if ends else {})))
        if moved.rowcount != 1:
            reason = self._why_lost(lease, now, conn)
            with _joined(self.engine, conn) as tx:
                tx.execute(insert(late_table).values(
                    study=lease.study, chain=lease.chain, lease=lease.id,
                    participant=lease.participant, version=lease.version, reason=reason,
                    received=now, rows=[{k: _plain(v) for k, v in r.items()} for r in rows]))
            raise LeaseLost(lease, reason)
        return replace(lease, version=lease.version + len(rows), shown=shown, state=state,
                       expires=now if ends else now + seconds)

    def _why_lost(self, lease: Lease, now: float, conn: Connection | None = None) -> str:
        with _joined(self.engine, conn) as tx:
            row = tx.execute(select(chains_table).where(
                chains_table.c.study == lease.study, chains_table.c.chain == lease.chain)).one()
        if row.lease != lease.id:
            return "taken" if row.lease is not None or row.version != lease.version \
                else "expired"
        return "stale" if row.version != lease.version else "expired"

    def held(self, study: str, participant: str, session: int, now: float
             ) -> dict[int, Lease]:
        """The participant-session's leases that still hold their chains at `now`, by hold:
        what a resumed lab session, or a server process rebuilding an online session, takes
        over (state and version as last committed)."""
        c, lc = chains_table.c, leases_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(chains_table, lc.hold).join(
                leases_table, lc.lease == c.lease).where(
                c.study == study, lc.participant == participant, lc.session == session,
                lc.ended.is_(None), c.expires >= now)).all()
        return {r.hold: Lease(r.lease, study, r.chain, r.emotion, participant, r.version,
                              r.shown, r.target, _state(r._mapping), r.expires) for r in rows}

    def holds(self, study: str, participant: str, session: int) -> dict[int, Lease]:
        """The participant-session's latest lease of each hold that was neither handed back
        (released, complete) nor given up, by hold, with the chain as that lease last left it,
        even when it has expired or another participant holds the chain now: what an online
        session rebuilt by any server process goes on with, so that the trial drawn under a
        lease is drawn again the same, and an answer to it after the lease ran out is late
        (`advance` raises LeaseLost), never applied to another chain's pair."""
        lc = leases_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(leases_table, chains_table.c.emotion,
                                       chains_table.c.target,
                                       chains_table.c.lease.label("chain_lease"),
                                       chains_table.c.expires).join(
                chains_table, and_(chains_table.c.study == lc.study,
                                   chains_table.c.chain == lc.chain)).where(
                lc.study == study, lc.participant == participant, lc.session == session)
                .order_by(lc.started, lc.lease)).all()
        latest = {}
        for r in rows:
            latest[r.hold] = r
        out = {}
        for hold, r in latest.items():
            if r.end_reason in ("released", "complete") or r.given_up is not None:
                continue
            kept = r.state
            expires = r.expires if r.chain_lease == r.lease else -np.inf  # taken: lost
            out[hold] = Lease(r.lease, study, r.chain, r.emotion, participant, kept["version"],
                              kept["shown"], r.target, _state(kept), expires)
        return out

    def give_up(self, lease: Lease, now: float, conn: Connection | None = None) -> None:
        """The participant's session lets `lease` go without answering under it again (its
        answer was late, or its lease ran out before its trial was shown): marked given up, and
        if it still holds its chain, now expired, the chain is free again (the lease ends as
        expired, at its expiry)."""
        c, lc = chains_table.c, leases_table.c
        with _joined(self.engine, conn) as tx:  # the chain's row first, as `lease` does
            row = tx.execute(select(c.expires).where(
                c.study == lease.study, c.chain == lease.chain, c.lease == lease.id,
                c.expires < now)).first()
            freed = row is not None and tx.execute(update(chains_table).where(
                c.study == lease.study, c.chain == lease.chain, c.lease == lease.id,
                c.expires < now).values(holder=None, lease=None, expires=None)).rowcount
            tx.execute(update(leases_table).where(lc.lease == lease.id).values(
                given_up=now, **({"ended": row.expires, "end_reason": "expired"} if freed
                                 else {})))

    def release_sessions(self, study: str, sessions: list[tuple[str, int]], now: float) -> int:
        """Hand back every chain held by the given (participant, session)s (sessions that
        ended without finishing: abandoned online), from its last committed state; how many.
        Their leases end as expired at `now`, and are given up."""
        c, lc = chains_table.c, leases_table.c
        n = 0
        for participant, session in sessions:
            with self.engine.begin() as conn:
                live = conn.execute(select(lc.lease, lc.chain).where(
                    lc.study == study, lc.participant == participant, lc.session == session,
                    lc.ended.is_(None))).all()
                for r in live:  # the chain's row first, as `lease` does
                    n += conn.execute(update(chains_table).where(
                        c.study == study, c.chain == r.chain, c.lease == r.lease).values(
                        holder=None, lease=None, expires=None)).rowcount
                    conn.execute(update(leases_table).where(lc.lease == r.lease).values(
                        ended=now, end_reason="expired", given_up=now))
        return n

    def expire(self, study: str, now: float) -> int:
        """End every lease of the study that expired before `now` (the chain goes back to the
        study from its last committed state); returns how many. `lease` takes over expired
        chains by itself: this is housekeeping, so the tables say which chains are free."""
        c = chains_table.c
        with self.engine.begin() as conn:
            gone = conn.execute(select(c.chain, c.lease, c.expires).where(
                c.study == study, c.lease.is_not(None), c.expires < now)).all()
            n = 0
            for row in gone:
                n += conn.execute(update(chains_table).where(
                    c.study == study, c.chain == row.chain, c.lease == row.lease).values(
                    holder=None, lease=None, expires=None)).rowcount
                conn.execute(update(leases_table).where(
                    leases_table.c.lease == row.lease, leases_table.c.ended.is_(None))
                    .values(ended=row.expires, end_reason="expired"))
        return n

    # ------------------------------------------------------------------ reading

    def _frame(self, table: Table, study: str, order: list) -> pd.DataFrame:
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.study == study).order_by(*order))
            return pd.DataFrame(rows.mappings().all(), columns=[c.name for c in table.columns])

    def chains(self, study: str) -> pd.DataFrame:
        """One row per chain: emotion, version, shown, target, holder, lease, expires, ..."""
        return self._frame(chains_table, study, [chains_table.c.chain])

    def leases(self, study: str) -> pd.DataFrame:
        """Every lease granted: chain, participant, seq, started, ended, end_reason, steps."""
        return self._frame(leases_table, study, [leases_table.c.chain, leases_table.c.seq])

    def late(self, study: str) -> pd.DataFrame:
        """The answers that arrived after their lease (reason, received, rows)."""
        return self._frame(late_table, study, [late_table.c.id])

    def _step_frame(self, study: str) -> pd.DataFrame:
        """The steps as a DataFrame: the table's chain, chain_step, lease, participant and
        committed, and the rows' other cells (latent coordinates, accepted, ...)."""
        c = steps_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(steps_table).where(c.study == study).order_by(
                c.chain, c.chain_step)).mappings().all()
        return pd.DataFrame([{**r["row"], **{k: r[k] for k in ("chain", "chain_step", "lease",
                                                                 "participant", "committed")}}
                             for r in rows])

    def session_rows(self, study: str, participant: str, session: int, from_row: int
                     ) -> list[dict]:
        """The committed rows of one participant-session numbered `from_row` or later, in row
        order: what a session whose files lost their last rows in a crash (the answer was
        committed here, the file write did not happen) must append before it goes on."""
        c = steps_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.row).where(
                c.study == study, c.participant == participant)).scalars().all()
        return sorted((r for r in rows if r["session"] == session and r["row"] >= from_row),
                      key=lambda r: r["row"])

    def steps(self, study: str) -> list[dict]:
        """Every committed step of the study's chains as schema rows, by chain and chain_step."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(steps_table.c.row).where(
                steps_table.c.study == study).order_by(
                steps_table.c.chain, steps_table.c.chain_step)).scalars())

    def check(self, study: str) -> list[str]:
        """What is wrong with the study's chains, read from the database alone (empty: nothing).

        Every chain is one unbroken line: its steps are chain_step 0, 1, ... with no gap, each
        step starts from the state the step before left (its proposal if accepted, else its
        current state) and the chain's row ends where its last step does. No chain was ever
        held by two leases at once: a chain's leases (by seq) each ended before the next one
        began (the next one starts from the version the last one left, and after the expiry
        of one that expired), each lease's steps are one stretch in lease order, committed
        while it held the chain; and no answer kept as late is in a chain.

        Released leases are ordered by versions, not times: a process reads its clock before
        its transaction, so a grant's time can precede the release it waited for."""
        problems = []
        chains, leases = self.chains(study), self.leases(study)
        steps = self._step_frame(study)
        late = self.late(study)
        for row in chains.itertuples():
            mine = steps[steps["chain"] == row.chain] if len(steps) else steps
            held = leases[leases["chain"] == row.chain].sort_values("seq")
            problems += _check_line(row, mine)
            problems += _check_leases(row.chain, held, mine)
        for row in late.itertuples():
            bad = [r["chain_step"] for r in row.rows
                   if len(steps) and ((steps["chain"] == row.chain)
                                      & (steps["lease"] == row.lease)
                                      & (steps["chain_step"] == r["chain_step"])).any()]
            if bad:
                problems.append(f"chain {row.chain}: late answer of lease {row.lease} is in "
                                f"the chain at steps {bad}")
        return problems


def _check_line(row, steps: pd.DataFrame) -> list[str]:
    """One chain's steps against the unbroken-line rule (see ChainStore.check)."""
    out = []
    n = len(steps)
    if n == 0:
        return [] if row.version == 0 else [f"chain {row.chain}: version {row.version} but "
                                            "no steps"]
    got = steps["chain_step"].tolist()
    first = got[0]
    if got != list(range(first, first + n)):
        out.append(f"chain {row.chain}: steps {got[:5]}... are not one run without gaps")
    if first + n != row.version:
        out.append(f"chain {row.chain}: version {row.version} but {n} steps from {first}")
    d = sum(1 for k in steps.columns if k.startswith("current_"))
    cur = steps[[f"current_{i}" for i in range(d)]].to_numpy(float)
    prop = steps[[f"proposal_{i}" for i in range(d)]].to_numpy(float)
    acc = steps["accepted"].fillna(False).astype(bool).to_numpy()
    after = np.where(acc[:, None], prop, cur)
    broken = np.flatnonzero(~(cur[1:] == after[:-1]).all(axis=1))
    if len(broken):
        out.append(f"chain {row.chain}: step {got[broken[0] + 1]} does not start where step "
                   f"{got[broken[0]]} left the chain")
    if not np.array_equal(np.asarray(row.position, dtype=float), after[-1]):
        out.append(f"chain {row.chain}: its stored state is not where its last step left it")
    return out


def _check_leases(chain_id: int, held: pd.DataFrame, steps: pd.DataFrame) -> list[str]:
    """One chain's leases against the one-holder rule (see ChainStore.check)."""
    out = []
    seqs = held["seq"].tolist()
    if seqs != list(range(1, len(seqs) + 1)):
        out.append(f"chain {chain_id}: lease numbers {seqs[:5]}... are not 1, 2, ...")
    started, ended = held["started"].to_numpy(float), held["ended"].to_numpy(float)
    if np.isnan(ended[:-1]).any():
        out.append(f"chain {chain_id}: a lease was followed by another without ending")
    expired = (held["end_reason"] == "expired").to_numpy()[:-1]
    overlap = np.flatnonzero(expired & (ended[:-1] > started[1:]))
    left = (held["version_start"] + held["steps"]).to_numpy()
    jumped = np.flatnonzero(left[:-1] != held["version_start"].to_numpy()[1:])
    for k in [*overlap, *jumped][:1]:
        out.append(f"chain {chain_id}: lease {seqs[k]} was still running when lease "
                   f"{seqs[k + 1]} started")
    if len(steps):
        order = dict(zip(held["lease"], held["seq"], strict=True))
        runs = steps["lease"].to_numpy()
        firsts = runs[np.r_[True, runs[1:] != runs[:-1]]]
        seq = [order.get(x, -1) for x in firsts]
        if len(set(firsts)) != len(firsts) or seq != sorted(seq) or -1 in seq:
            out.append(f"chain {chain_id}: the stretches of its leases interleave or come out "
                       "of lease order")
        span = held.set_index("lease")
        t = steps["committed"].to_numpy(float)
        lo = span.loc[runs, "started"].to_numpy(float)
        hi = span.loc[runs, "ended"].fillna(np.inf).to_numpy(float)
        if ((t < lo) | (t > hi)).any():
            out.append(f"chain {chain_id}: a step was committed outside its lease")
    return out
