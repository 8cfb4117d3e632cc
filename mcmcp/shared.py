"""The chain source of across-participant designs: chains leased from the shared chain store.

`SharedChains` is what `mcmcp.engine.Engine` asks "which chain next" when the config says
`chains.across_participants: true`. The participant's schedule has holds instead of chains
(`trials.per_participant / trials.per_hold` of them, dealt to the emotion blocks); when a
hold's first trial is asked, the source leases the least advanced free chain of the block's
emotion from `mcmcp.chainstore.ChainStore` (one the participant has not held before, when
there is one), and every answer commits through `ChainStore.advance`: the answer's rows and the
chain's new state in one compare-and-set transaction. The hold's last answer hands the chain
back. An answer whose lease was lost (expired, taken over) is in the store's audit table, not
in the chain: the engine records it as a `late` row, and the hold leases a new chain for its
next trial.

The study's chains are made once, by whichever session comes first (`shared_starts`: the same
seed gives the same starts in every process): emotion k of the config's emotions owns chains
k*n .. k*n+n-1 (n = chains.per_emotion), so an unguided control chain is, as in a participant's
own design, the last `chains.unguided` of its emotion.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mcmcp.chainstore import ChainStore, Lease, LeaseLost
from mcmcp.engine import START_STREAM, ChainsComplete, NoChainFree, Slot, start_points
from mcmcp.sampling import chain
from mcmcp.sampling.seeds import stream_rng
from mcmcp.specs import ExperimentConfig

# The participant key of the study's own random streams (the shared chains' starts).
STUDY_STREAM_KEY = "shared-chains"


def shared_starts(cfg: ExperimentConfig, d: int, centroids: dict[str, np.ndarray] | None
                  ) -> dict[int, tuple[str, chain.ChainState]]:
    """chain id -> (emotion, start state) of every shared chain of the study: emotion k's
    starts drawn from the study's START stream k (`mcmcp.engine.start_points`)."""
    n = cfg.chains.per_emotion
    out = {}
    for k, emotion in enumerate(cfg.emotions):
        rng = stream_rng(cfg.seed, STUDY_STREAM_KEY, 0, START_STREAM, k)
        starts = start_points(cfg, d, emotion, centroids or {}, rng)
        for i in range(n):
            out[k * n + i] = (emotion, chain.init(starts[i], cfg.chains.kappa_proposal))
    return out


class SharedChains:
    """Chain source (`mcmcp.engine.ChainSource`) over a `ChainStore`, for one participant.

    cfg: an across-participant config (its `name` is the study in the store); d: latent
    dimension; participant, session: whose holds these are; centroids: emotion -> (d,) class
    centroid (chains.start centroids); clock: unix seconds (time.time; tests and simulations
    give their own); patience: seconds to keep asking for a free chain before NoChainFree (a
    lab computer waits for a held chain to come back; 0: ask once), sleeping `sleep` between
    tries. The study's chains are created if missing. rebuilt: the session is rebuilt from
    the store on any request by any server process (online): a resumed hold goes on with its
    latest lease even when that ran out (`ChainStore.holds`), so the trial drawn under it is
    drawn again the same and an answer to it is late, never applied to another chain's pair.
    conn: while set, every store call joins that connection's transaction (the online server
    commits the chain step with the session's rows).
    """

    def __init__(self, store: ChainStore, cfg: ExperimentConfig, d: int, participant: str,
                 session: int, centroids: dict[str, np.ndarray] | None = None,
                 clock: Callable[[], float] = time.time, patience: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep, rebuilt: bool = False):
        self.store, self.cfg, self.clock = store, cfg, clock
        self.participant, self.session = participant, session
        self.patience, self.sleep = patience, sleep
        self.study, self.seconds = cfg.name, cfg.chains.lease_seconds
        store.ensure_chains(self.study, shared_starts(cfg, d, centroids), cfg.trials.per_chain)
        self.leases: dict[int, Lease] = {}  # hold -> the lease it holds now
        self.hold_of: dict[int, int] = {}  # chain id -> hold (chains held now)
        self.states: dict[int, chain.ChainState] = {}  # chain id -> state, uncommitted steps
        self.pending_shown: dict[int, int] = {}  # chain id -> shown trials not yet committed
        self.told: dict[int, int] = {}  # hold -> answers committed (of trials.per_hold)
        self.held: set[int] = set()  # every chain this participant has held
        self.rebuilt = rebuilt
        self.conn = None  # a connection whose transaction store calls join, while set

    def chain(self, slot: Slot) -> int:
        lease = self.leases.get(slot.chain)
        if lease is None:
            lease = self._lease(slot.emotion, slot.chain)
            self._hold(slot.chain, lease)
            self.held.add(lease.chain)
        return lease.chain

    def _lease(self, emotion: str, hold: int) -> Lease:
        """A free chain of `emotion` for `hold`, one this participant has not held if there is
        one; ChainsComplete at once when every chain of `emotion` has reached its target, or
        all that have not are held by this participant's other holds;
        NoChainFree after `patience` seconds without one."""
        give_up = self.clock() + self.patience
        while True:
            now, busy = self.clock(), set(self.hold_of)
            mine = {"session": self.session, "hold": hold}
            lease = (self.store.lease(self.study, emotion, self.participant, now, self.seconds,
                                      self.held | busy, **mine, conn=self.conn)
                     or self.store.lease(self.study, emotion, self.participant, now,
                                         self.seconds, busy, **mine, conn=self.conn))
            if lease is not None:
                return lease
            left = self.store.unfinished(self.study, emotion, self.conn)
            if not left - busy:  # none but those this participant holds: never one for this
                raise ChainsComplete(emotion, whole=not left)
            if now >= give_up:
                raise NoChainFree(f"no chain of {emotion} is free in study {self.study!r}: "
                                  "all are held or complete")
            self.sleep(min(1.0, give_up - now))

    def full(self) -> bool:
        """Every chain of the study has reached its target: a participant arriving now would
        have no trial to do (turned away with no lease granted)."""
        return self.store.unfinished(self.study, conn=self.conn) == set()

    def resume(self, rows, shown: list[Slot], advance) -> None:
        """A resumed session (a lab session after a crash, an online session rebuilt by another
        server process) has shown `shown` (its schedule so far): its holds' answers count, and
        the holds whose leases still hold their chains go on with them, from the chains' last
        committed states (the store's, not the session's rows). A hold whose lease ran out
        leases a chain anew for its remaining trials (`rebuilt`: when its lease was given up)."""
        for slot in shown:
            if slot.kind == "chain":
                self.told[slot.chain] = self.told.get(slot.chain, 0) + 1
        leases = (self.store.holds(self.study, self.participant, self.session)
                  if self.rebuilt else
                  self.store.held(self.study, self.participant, self.session, self.clock()))
        for hold, lease in leases.items():
            self._hold(hold, lease)
            self.held.add(lease.chain)

    def _hold(self, hold: int, lease: Lease) -> None:
        self.leases[hold] = lease
        self.hold_of[lease.chain] = hold
        self.states[lease.chain] = lease.state
        self.pending_shown[lease.chain] = 0

    def _drop(self, hold: int) -> None:
        lease = self.leases.pop(hold)
        del self.hold_of[lease.chain], self.states[lease.chain]
        del self.pending_shown[lease.chain]

    def state(self, chain_id: int) -> chain.ChainState:
        return self.states[chain_id]

    def shown(self, chain_id: int) -> int:
        lease = self.leases[self.hold_of[chain_id]]
        return lease.shown + self.pending_shown[chain_id]

    def row_fields(self, chain_id: int, iteration: int) -> dict:
        return {"lease": self.leases[self.hold_of[chain_id]].id, "chain_step": iteration}

    def move(self, chain_id: int, state: chain.ChainState, shown: bool) -> None:
        self.states[chain_id] = state
        self.pending_shown[chain_id] += shown

    def commit(self, chain_id: int, rows: list[dict]) -> bool:
        """Commit the answer (its gate rows and trial row) to the store; the hold's last answer,
        or the one that completes the chain, hands the chain back. False when the lease was
        lost (`LeaseLost`: the answer is in the store's audit table, not in the chain); the
        hold leases a new chain for its next trial. `rebuilt`: the lost lease is given up, and so
        are the participant's other leases that ran out, whose trials are not on show yet (the
        rebuilt session leases afresh for them)."""
        hold = self.hold_of[chain_id]
        lease = self.leases[hold]
        self.told[hold] = self.told.get(hold, 0) + 1
        last = self.told[hold] >= self.cfg.trials.per_hold
        now = self.clock()
        try:
            new = self.store.advance(lease, rows, self.states[chain_id],
                                     self.pending_shown[chain_id], now, self.seconds,
                                     release=last, conn=self.conn)
        except LeaseLost:
            self._drop(hold)
            if self.rebuilt:  # what `holds` gives back to the rebuilt session: none of these
                for gone in [lease, *(x for x in self.leases.values() if x.expires < now)]:
                    self.store.give_up(gone, now, self.conn)
            return False
        if last or new.shown >= new.target:
            self._drop(hold)
        else:
            self._hold(hold, new)
        return True

    def positions(self) -> dict[int, np.ndarray]:
        return {c: s.position for c, s in self.states.items()}
