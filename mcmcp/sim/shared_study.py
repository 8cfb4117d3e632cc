"""Simulated across-participant studies: synthetic people who differ, lapse and leave, taking
turns on the study's shared chains through the engine and the shared chain store, as lab
sessions do.

Every simulated participant is a lab session run by an agent: `mcmcp.engine.Engine` with the
`mcmcp.shared.SharedChains` source over a `mcmcp.chainstore.ChainStore` (a SQLite file next to
the data, or any database URL), each told trial written through `mcmcp.store.SessionStore` as
it happens. People differ: participant P's category of each emotion is the group's (the ground
truth) reflected so that its mode moves to P's own prototype, drawn from vMF(group mode,
kappa_between). They lapse (config `agent.lapse`), some leave mid-session (`dropout`: their held
chains stay leased until the lease runs out) and some are away past their lease once (`late`:
that answer is refused by the chain store, kept for audit, and written as a `late` row).
Participants come one after another on a simulated clock (each trial takes the agent's
response time plus one second; the next participant arrives `arrival` seconds later), so the
leases expire as they would.

Randomness: P's prototypes, dropout and lateness draw from `stream_rng(seed, P, 0, PERSON_STREAM,
0)`, P's answers from `stream_rng(seed, P, 1, AGENT_STREAM, 0)`; trials draw from the engine's
own streams. A study run again with the same seed writes the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from sqlalchemy.engine import make_url

from mcmcp.agents import LatentAgent
from mcmcp.chainstore import ChainStore
from mcmcp.engine import AGENT_STREAM, Engine, schedule_length
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.seeds import stream_rng
from mcmcp.shared import NoChainFree, SharedChains
from mcmcp.sim.relay import individual_prototypes
from mcmcp.sim.study import Design
from mcmcp.store import SessionStore, utc_now

PERSON_STREAM = 7  # stream tag beside the engine's 0..4 and identities' 5
START = 1.8e9  # the simulated clock's first second (unix time, 2027)


class SharedStudy(NamedTuple):
    """What `simulate_shared_study` did: the session folders written, the participants who
    left mid-way, the answers refused as late, the participants turned away because every
    chain was complete, and the chain store's URL."""

    folders: list[Path]
    left: list[str]
    late: int
    turned_away: list[str]
    store_url: str


def individual_densities(truth: dict[str, VMFMixture], kappa_between: float,
                         rng: np.random.Generator) -> dict[str, VMFMixture]:
    """One person's categories: each emotion's group density reflected (a Householder
    reflection, any d) so that its mode lands on the person's prototype, a
    vMF(group mode, kappa_between) draw. Shapes and concentrations stay the group's."""
    out = {}
    for emotion, dens in truth.items():
        mode = dens.mode()
        mine = individual_prototypes(mode, kappa_between, 1, rng)[0]
        v = mode - mine
        if v @ v < 1e-24:
            out[emotion] = dens
            continue
        h = np.eye(len(mode)) - 2.0 * np.outer(v, v) / (v @ v)
        out[emotion] = VMFMixture(dens.means @ h.T, dens.kappas, dens.weights)
    return out


def simulate_shared_study(design: Design, truth: dict[str, VMFMixture], participants: list[str],
                          store_url: str | None = None, kappa_between: float = 30.0,
                          dropout: float = 0.0, late: float = 0.0,
                          arrival: float = 30.0) -> SharedStudy:
    """Simulate `participants` (ids, in arrival order) of an across-participant design
    (`design.cfg.chains.across_participants`) and write each one's session under
    `design.root`; the chains live in `store_url` (None: sqlite file
    `design.root/shared_chains.sqlite`). truth: the group's categories (emotion ->
    VMFMixture). dropout / late: each participant's probability of leaving at a random trial /
    of being away past their lease once. arrival: simulated seconds between participants."""
    cfg, d = design.cfg, design.d
    root = Path(design.root)
    url = store_url or f"sqlite:///{root / 'shared_chains.sqlite'}"
    store = ChainStore(url)
    spec = cfg.agent
    now = [START]
    folders, left, turned_away, n_late = [], [], [], 0
    for pid in participants:
        rng = stream_rng(cfg.seed, pid, 0, PERSON_STREAM, 0)
        mine = individual_densities(truth, kappa_between, rng)
        length = schedule_length(cfg)
        leave_at = int(rng.integers(1, length + 1)) if rng.random() < dropout else None
        late_at = int(rng.integers(1, length + 1)) if rng.random() < late else None
        agent = LatentAgent(mine, exponent=spec.exponent, lapse=spec.lapse,
                            side_bias=spec.side_bias)
        answers = stream_rng(cfg.seed, pid, 1, AGENT_STREAM, 0)
        source = SharedChains(store, cfg, d, pid, 1, design.centroids, clock=lambda: now[0])
        engine = Engine(cfg, d, pid, 1, design.gates, design.centroids, agent.name,
                        source=source)
        session = SessionStore.create(root, pid, 1, d, {
            **design.metadata, "seeds": engine.seeds(),
            "chain_store": make_url(url).render_as_string(hide_password=True),
            "person": {"kappa_between": kappa_between,
                       "prototypes": {e: dens.mode().tolist() for e, dens in mine.items()}}})
        folders.append(session.folder)
        status = "complete"
        if source.full():  # no lease: the study needs nobody any more
            status = "turned away: every chain is complete"
            turned_away.append(pid)
        while not engine.done and status == "complete":
            try:
                trial = engine.ask()
            except NoChainFree:
                if store.chains(cfg.name).eval("shown < target").any():
                    now[0] += cfg.chains.lease_seconds  # wait for a held chain to come back
                    continue
                status = "turned away: every chain is complete"
                turned_away.append(pid)
                break
            if trial.trial == leave_at:
                status = "left"
                left.append(pid)
                break
            response, rt = _answer(agent, trial, answers)
            now[0] += rt + 1.0
            if trial.trial == late_at:
                now[0] += cfg.chains.lease_seconds + 1.0
            rows = engine.tell(trial, response, rt, timestamp=utc_now(), device="agent")
            n_late += rows[-1]["kind"] == "late"
            session.append_many(rows)
        session.finish(status=status)
        now[0] += arrival
    store.close()
    return SharedStudy(folders, left, n_late, turned_away, url)


def _answer(agent: LatentAgent, trial, rng: np.random.Generator) -> tuple[object, float]:
    """The agent's response to one asked trial (a side, or a slider's circle point) and its
    response time in seconds."""
    if trial.is_slider:
        c = trial.circle
        slide = agent.slide(trial.emotion, c.points[None], np.array([c.start]),
                            np.array([c.shift]), rng)
        return int(slide.choice[0]), float(slide.rt[0])
    choice = agent.choose(trial.emotion, trial.left[None], trial.right[None], rng)
    return ("right" if choice.chose_right[0] else "left"), float(choice.rt[0])
