"""Ask/tell engine for one participant-session: schedule, chains, gate, catch and repeat trials.

The session loop *asks* for the next pair to show, shows it (screen or agent), then *tells* the
engine which side was chosen; `tell` returns the rows to save. The engine moves chains only
through `chain.propose/step/adapt_kappa` and screens proposals with `gate.Gate.screen`, the same
pure functions the vectorised simulator uses. It does no I/O and never imports PsychoPy.

Reproducibility: every random draw comes from a counter-based stream of `mcmcp.sampling.seeds.stream_rng`
keyed by (seed, participant, session, stream, counter): shown trial t (1-based count of shown
trials in the session) draws from its own TRIAL stream, block b's schedule and starts from theirs,
so participants of one config get different starts, schedules, sides, catch positions and
proposals, and the saved rows alone rebuild the engine exactly (`rows_so_far`): the last row of
each chain gives its state, its `kappa_proposal` column the proposal kappa. `resume_point` folds
rows into the compact summary the engine actually resumes from (per chain its last move and
acceptances, the current block's chain trials without their codes), one batch of rows at a time,
so a server can keep it beside the session and rebuild an engine without reading every row
(`Engine(resume=..., lookup=...)`: lookup gives the codes of the one earlier trial a repeat shows).
A resume point may also carry the trials asked and not yet told (`Engine.pending_state`, its
`pending`): a rebuilt engine's `ask` gives them back instead of drawing them again (the same
trials: each is drawn from its own stream, and its chain's gate steps are replayed from its gate
rows).

Block order (config `block_order`): the emotions as written, rotated by the number the participant
id ends in, or shuffled with the participant's own stream; the same participant always gets the
same order.

Children (identity models, `mcmcp.identities`): every chain shows one child, and so does every
catch, practice and repeat trial (a repeat shows its chain's); `PendingTrial.identity` says
which, and every row records it in `identity`. The assignment is a pure function of the config
and the participant, so a resumed session shows the same children.

GSP (config `paradigm: gsp`): chain and practice trials are slider trials instead of pairs
(`PendingTrial.circle`: the great circle's direction, K points, slider shift and start, drawn
from the trial's stream by `mcmcp.gsp.draw_circle`); `tell` takes the confirmed point, and the
chain moves there (unless the gate refuses the move). One row per trial, no gate rows.

Gate: each emotion's chains are screened by its gate, except the last `chains.unguided` chains
of every block (control chains: never screened, their rows have no gate columns). An annealed
gate's γ depends on how many of the chain's trials have been shown (`Gate.gamma_at`); every gate
and chain row records the γ in force.

Chain source: the engine asks a chain source which chain a chain trial moves and where that
chain's state lives (`ChainSource`). The default, `OwnChains`, is the participant's own chains,
made at the start of the session; `mcmcp.shared.SharedChains` leases chains that pass from
participant to participant (config `chains.across_participants`), and then a block's chain
slots are the participant's holds (`Slot.chain`: the hold, which the source maps to the chain
it leases when the hold's first trial is asked). Steps, gate, rows and schedule rules are the
same for both.

Study full: when the source says every chain of an emotion is complete (`ChainsComplete`),
`ask` skips the participant's remaining trials of that emotion (the session ends when nothing is
left), and a chain trial for which only the participant's own other holds are left is skipped;
a row's `trial` is its place in the schedule, so a resumed session goes on after the skipped
trials (completeness never goes back, so the same trials are skipped again).

Prefetch: within a block, consecutive chain trials never use the same chain (when there are at
least two chains), so while trial t is on screen, trial t+1 can already be drawn (`can_ask`):
the response to t only changes t's chain.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
from scipy.stats import special_ortho_group

from mcmcp.identities import IDENTITY_STREAM, Assignment
from mcmcp.sampling import chain, gsp, sphere
from mcmcp.sampling.seeds import participant_key, participant_number, stream_rng
from mcmcp.specs import ExperimentConfig

# Stream tags of the counter-based seeds [seed, participant_key, session, stream, counter].
SCHEDULE_STREAM, TRIAL_STREAM, START_STREAM, AGENT_STREAM, ORDER_STREAM = 0, 1, 2, 3, 4
STREAMS = "default_rng([seed, participant_key, session, stream, counter])"
# A gate that rejects this many proposals in a row is mis-specified (e.g. gamma far too large
# for kappa_proposal); stopping beats freezing the participant's screen.
MAX_GATE_STEPS = 10_000


def block_order(cfg: ExperimentConfig, participant: str) -> tuple[str, ...]:
    """The participant's order of emotion blocks (config `block_order`).

    fixed: as written; rotated: participant number n starts at emotion (n - 1) mod k (so with k
    emotions, P001..P00k each see every emotion first once); random: a permutation drawn from
    the participant's ORDER stream (the same in every session). ValueError for `rotated` with an
    id that does not end in a number.
    """
    emotions = cfg.emotions
    if cfg.block_order == "rotated":
        n = participant_number(participant)
        if n is None:
            raise ValueError(
                f"block_order rotated counterbalances by the number a participant id ends in; "
                f"{participant!r} has none (use ids such as P001, P002, ...)"
            )
        k = (n - 1) % len(emotions)
        return emotions[k:] + emotions[:k]
    if cfg.block_order == "random":
        rng = stream_rng(cfg.seed, participant, 0, ORDER_STREAM, 0)
        return tuple(emotions[i] for i in rng.permutation(len(emotions)))
    return emotions


@dataclass(frozen=True)
class Slot:
    """One shown trial of the schedule: kind practice | chain | catch | repeat. chain: the
    chain (own chains) or the hold (shared chains) a chain trial moves; None otherwise."""

    kind: str
    block: int
    emotion: str
    chain: int | None = None


@dataclass
class PendingTrial:
    """A pair ready to show. left / right: (d,) codes; roles say what each side is.

    gate_rows: the proposals the gate screened out just before this pair (saved at `tell`).
    starts: "practice" | "block" when this trial opens practice or a new block, else None.
    break_before: a rest break is due before this trial.
    progress: (k, n), this is real trial k of n (practice: k of the practice count).
    identity: the child both faces show ("" = the model's default; plain models: "").
    """

    trial: int
    slot: Slot
    left: np.ndarray
    right: np.ndarray
    left_role: str
    right_role: str
    fields: dict
    gate_rows: list[dict] = field(default_factory=list)
    starts: str | None = None
    break_before: bool = False
    progress: tuple[int, int] = (0, 0)
    identity: str = ""
    circle: gsp.Circle | None = None
    rng: np.random.Generator | None = None

    @property
    def is_slider(self) -> bool:
        """A GSP trial: one face on a slider along `circle` (points (K, d), direction (d,),
        shift, start); left and right are both the current state, the response a point."""
        return self.circle is not None

    @property
    def emotion(self) -> str:
        return self.slot.emotion

    @property
    def kind(self) -> str:
        return self.slot.kind


@functools.lru_cache(maxsize=512)
def _schedule(cfg: ExperimentConfig, participant: str, session: int) -> tuple[Slot, ...]:
    """`build_schedule`, kept: a server process rebuilds a session's engine at many requests
    (configs are frozen, so equal configs share it)."""
    return tuple(build_schedule(cfg, participant, session))


def build_schedule(cfg: ExperimentConfig, participant: str, session: int) -> list[Slot]:
    """Every shown trial of the session in order: practice, then one block per emotion (in the
    participant's `block_order`).

    In a block, the chains take turns in a fresh random order each round, never the same chain
    twice in a row (shared chains: the participant's holds, two at a time); catch trials go
    anywhere, repeat trials after at least two chain trials (so the pair they repeat is never
    the one still on screen). catch_rate and repeat_rate are fractions of the block's shown
    trials.
    """
    t = cfg.trials
    emotions = block_order(cfg, participant)
    slots = [Slot("practice", 0, emotions[0]) for _ in range(t.practice)]
    first = 0  # the block's first chain (own chains) or hold (shared chains)
    for b, emotion in enumerate(emotions):
        n, per_lane = _lanes(cfg, b)
        if n == 0:  # shared chains: more emotions than this participant's holds
            continue
        rng = stream_rng(cfg.seed, participant, session, SCHEDULE_STREAM, b)
        order: list[int] = []
        # own chains take turns all together; shared chains two holds at a time, so a
        # participant holds at most two of the study's chains (others can have the rest)
        group = n if not cfg.chains.across_participants else 2
        for lo in range(0, n, group):
            m = min(group, n - lo)
            for _ in range(per_lane):
                perm = lo + rng.permutation(m)
                if order and m > 1 and perm[0] == order[-1]:
                    perm[[0, -1]] = perm[[-1, 0]]
                order.extend(int(c) for c in perm)
        block = [Slot("chain", b, emotion, first + c) for c in order]
        first += n
        n_repeat, n_catch = _extra_trials(cfg, n * per_lane)
        for _ in range(n_repeat):
            block.insert(int(rng.integers(2, len(block) + 1)), Slot("repeat", b, emotion))
        for _ in range(n_catch):
            block.insert(int(rng.integers(0, len(block) + 1)), Slot("catch", b, emotion))
        slots.extend(block)
    return slots


def _lanes(cfg: ExperimentConfig, block: int) -> tuple[int, int]:
    """(lanes, shown trials per lane) of the participant's block `block` (0-based, in their
    block order). Own chains: every block runs chains.per_emotion chains of trials.per_chain
    trials. Shared chains: the participant's trials.per_participant / trials.per_hold holds of
    trials.per_hold trials are dealt to the blocks in turn (the first blocks get one more when
    they do not divide evenly; with fewer holds than emotions the last blocks get none)."""
    t = cfg.trials
    if not cfg.chains.across_participants:
        return cfg.chains.per_emotion, t.per_chain
    holds, k = t.per_participant // t.per_hold, len(cfg.emotions)
    return holds // k + (block < holds % k), t.per_hold


def _extra_trials(cfg: ExperimentConfig, n_chain: int) -> tuple[int, int]:
    """(repeat, catch) trials of a block of `n_chain` chain trials: catch_rate and repeat_rate
    are fractions of the block's shown trials."""
    t = cfg.trials
    total = n_chain / (1.0 - t.catch_rate - t.repeat_rate)
    return (round(t.repeat_rate * total) if n_chain >= 2 else 0), round(t.catch_rate * total)


def schedule_length(cfg: ExperimentConfig) -> int:
    """Shown trials of every participant's session (practice included): the same for all,
    whatever their block order."""
    out = cfg.trials.practice
    for b in range(len(cfg.emotions)):
        n, per_lane = _lanes(cfg, b)
        if n:
            out += n * per_lane + sum(_extra_trials(cfg, n * per_lane))
    return out


def start_points(cfg: ExperimentConfig, d: int, emotion: str, centroids: dict[str, np.ndarray],
                 rng: np.random.Generator) -> np.ndarray:
    """The chains.per_emotion start states (n, d) of one emotion's chains (config
    `chains.start`): fibonacci is the lattice turned by a uniformly random rotation (so it
    stays evenly spread but differs between draws), centroids are the other emotions' class
    centroids in a random order, uniform are independent uniform points."""
    n = cfg.chains.per_emotion
    if cfg.chains.start == "fibonacci":
        rotation = special_ortho_group.rvs(d, random_state=rng)
        return sphere.fibonacci_sphere(n, d) @ rotation.T
    if cfg.chains.start == "centroids":
        others = [centroids[e] for e in sorted(centroids) if e != emotion]
        if not others:
            raise ValueError("chains.start = centroids needs other emotions' centroids")
        others = [others[i] for i in rng.permutation(len(others))]
        return np.array([others[i % len(others)] for i in range(n)])
    return sphere.sample_uniform(n, d, rng)


@functools.lru_cache(maxsize=512)
def _trial_children(schedule_key: tuple, identities: Assignment) -> tuple[str, ...]:
    """The child of every slot of the schedule `_schedule(*schedule_key)`: a chain trial its
    chain's, the j-th catch or practice trial of a block the j-th in turn; repeats are set
    when asked (their chain's child). Kept like the schedule: a server process rebuilds a
    session's engine at many requests."""
    counts: dict[tuple[int, str], int] = {}
    out = []
    for slot in _schedule(*schedule_key):
        if slot.kind == "chain":
            out.append(identities.chain(slot.chain))
            continue
        j = counts.get((slot.block, slot.kind), 0)
        counts[(slot.block, slot.kind)] = j + 1
        out.append(identities.extra(j))
    return tuple(out)


class NoChainFree(RuntimeError):
    """Every chain of the emotion is held by someone else, or the trial after skipped ones
    uses the chain on screen: ask again later (a lab computer waits; the online study tells
    the participant to wait)."""


class ChainsComplete(RuntimeError):
    """A chain source has no chain left for a chain trial of `emotion`, nor ever will: whole,
    every chain of the emotion has reached its target length (shared chains: the study is full
    for that emotion), and the engine skips the participant's remaining trials of the emotion;
    else the only ones that have not are the participant's own other holds, and the engine
    skips this trial."""

    def __init__(self, emotion: str, whole: bool = True):
        self.emotion, self.whole = emotion, whole
        super().__init__(f"no chain of {emotion} is left for this trial")


class ChainSource(Protocol):
    """Which chain a chain trial moves, and where chain states live (see the module doc).

    chain(slot): the chain id the chain slot's trial moves (a shared source may lease it now;
    ChainsComplete when every chain of the slot's emotion is complete);
    state / shown: the chain's current `ChainState` and its shown trials so far (an annealed
    gate's progress); row_fields: columns every row of a step of the chain carries; move: the
    chain's new state after one step (shown: a trial was shown, not a gate-screened proposal);
    commit: the rows of one told trial that moved `chain_id` are final (a shared source writes
    them with the chain's new state), True; False when the source refused them (a shared
    chain the participant no longer held: the engine records the answer as one `late` row);
    positions: the current (d,) state of every chain the source holds, by id;
    resume: a resumed session's saved rows (DataFrame), its schedule so far and the engine's
    step function `advance(state, proposal, accepted)`, before anything new is asked.
    """

    def chain(self, slot: Slot) -> int: ...

    def state(self, chain_id: int) -> chain.ChainState: ...

    def shown(self, chain_id: int) -> int: ...

    def row_fields(self, chain_id: int, iteration: int) -> dict: ...

    def move(self, chain_id: int, state: chain.ChainState, shown: bool) -> None: ...

    def commit(self, chain_id: int, rows: list[dict]) -> bool: ...

    def positions(self) -> dict[int, np.ndarray]: ...

    def resume(self, rows: pd.DataFrame, shown: list[Slot], advance) -> None: ...


class OwnChains:
    """The participant-session's own chains (within-participant design): `states` maps chain
    id (block b's chains b*n .. b*n+n-1) to its `ChainState`; a slot's chain is its own id,
    and nothing outside the session holds or records them (commit does nothing: the session's
    store writes the rows)."""

    def __init__(self, states: dict[int, chain.ChainState],
                 ids: list[int] | None = None) -> None:
        """ids: every chain's id (default: those of `states`; the others' states come from
        `restore`)."""
        self.states = states
        self.n_shown = dict.fromkeys(states if ids is None else ids, 0)  # (annealed gates)

    def chain(self, slot: Slot) -> int:
        return slot.chain

    def state(self, chain_id: int) -> chain.ChainState:
        return self.states[chain_id]

    def shown(self, chain_id: int) -> int:
        return self.n_shown[chain_id]

    def row_fields(self, chain_id: int, iteration: int) -> dict:
        return {}

    def move(self, chain_id: int, state: chain.ChainState, shown: bool) -> None:
        self.states[chain_id] = state
        self.n_shown[chain_id] += shown

    def commit(self, chain_id: int, rows: list[dict]) -> bool:
        return True

    def positions(self) -> dict[int, np.ndarray]:
        return {c: s.position for c, s in self.states.items()}

    def resume(self, rows: pd.DataFrame, shown: list[Slot], advance) -> None:
        """Rebuild every chain from the session's saved rows (through their `resume_point`)."""
        d = sum(1 for c in rows.columns if c.startswith("current_"))
        self.restore(resume_point(rows.to_dict("records"), d), advance)

    def restore(self, point: dict, advance) -> None:
        """Every chain from a `resume_point`: each chain's last move gives its state before
        that step, `advance(state, proposal, accepted)` the state after it (with the session's
        kappa adaptation), its kappa the proposal kappa; n_shown its shown trials."""
        for ch, last in point["chains"].items():
            before = chain.ChainState(
                position=np.asarray(last["current"], dtype=float),
                iteration=np.asarray(last["iteration"], dtype=np.int64),
                n_accepted=np.asarray(last["accepted_before"], dtype=np.int64),
                kappa=np.asarray(np.nan if last["kappa"] is None else last["kappa"]),  # GSP
            )
            self.states[int(ch)] = advance(before, np.asarray(last["proposal"], dtype=float),
                                           last["accepted"])
        for ch, count in point["n_shown"].items():
            self.n_shown[int(ch)] = count


def _flag(value) -> bool:
    """A saved boolean: missing (NA, None) counts as False, as `fillna(False)` does."""
    return False if value is None or value is pd.NA or value != value else bool(value)


def resume_point(rows, d: int, start: dict | None = None, history: bool = True) -> dict:
    """The compact, JSON-able summary of a session's saved rows that `Engine(resume=...)` goes on
    from: `start` (the summary of the rows before, None: no rows) extended by `rows` (schema
    dicts in row order, as `tell` returns them or a DataFrame's records).

    n_rows, shown: rows so far, and the schedule place of the last shown trial (its `trial`:
    the shown trials so far, plus the trials skipped because their emotion's chains were
    complete); chains: chain id -> its last move row (chain or
    gate kind: current, proposal, iteration, kappa, accepted) and the acceptances before it;
    n_shown: chain trials shown per chain; history: [trial, block, row, chain, iteration,
    left_role] of the chain trials of the latest block (the only ones a repeat trial can show).
    The trials a point may carry besides (`pending`, of `Engine.pending_state`) are not rows:
    the point returned has none. history=False (a design without repeat trials,
    `Engine.repeats`): the history, which only a repeat trial reads, is left as it is instead
    of growing by a trial at every answer (a server saves and reads the point at each one).
    """
    # `start` is not changed: the containers the loop changes are copied (their items are
    # replaced, never changed in place), not the whole point
    point = ({k: dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
              for k, v in start.items() if k != "pending"}
             if start is not None else
             {"n_rows": 0, "shown": 0, "chains": {}, "n_shown": {}, "history": []})
    for r in rows:
        point["n_rows"] += 1
        kind = r["kind"]
        if kind == "gate" or kind == "chain":
            ch = str(int(r["chain"]))
            last = point["chains"].get(ch)
            kappa = r.get("kappa_proposal")
            point["chains"][ch] = {
                "accepted_before": 0 if last is None
                else last["accepted_before"] + int(last["accepted"]),
                "current": [float(r[f"current_{i}"]) for i in range(d)],
                "proposal": [float(r[f"proposal_{i}"]) for i in range(d)],
                "iteration": int(r["iteration"]),
                "kappa": None if kappa is None or kappa is pd.NA or kappa != kappa
                else float(kappa),
                "accepted": _flag(r.get("accepted")),
            }
        if kind == "gate":
            continue
        point["shown"] = int(r["trial"])
        if kind == "chain":
            block = int(r["block"])
            point["n_shown"][ch] = point["n_shown"].get(ch, 0) + 1
            if not history:
                continue
            point["history"] = [h for h in point["history"] if h[1] == block]
            role = r.get("left_role")  # none on a slider trial (GSP has no repeats)
            point["history"].append([int(r["trial"]), block, int(r["row"]), int(r["chain"]),
                                     int(r["iteration"]), role if isinstance(role, str) else None])
    return point


class Engine:
    """The trials of one participant-session.

    cfg: the experiment; d: latent dimension; gates: emotion -> `gate.Gate` (None or {} =
    unguided); centroids: emotion -> (d,) unit class centroid (needed for catch trials and
    chains.start = centroids); agent: "human" or the agent's name (recorded in every row);
    rows_so_far: the session's saved rows (DataFrame from `store.read_rows`) to resume from;
    identities: the participant's children (`mcmcp.identities.assignment`; None: the model's
    default child, recorded as an empty `identity`); source: the chain source (None: the
    participant's own chains, `OwnChains`, started as `_start_states` says; shared chains
    resume from their source, not from `rows_so_far`); resume, lookup: instead of
    rows_so_far, the rows' `resume_point` and a function row number -> (current, proposal)
    codes of that saved chain row (own chains only; rows were checked against the schedule
    when they were saved).
    Raises ValueError for saved rows that do not fit this config's schedule or its children.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        d: int,
        participant: str,
        session: int,
        gates: dict | None = None,
        centroids: dict[str, np.ndarray] | None = None,
        agent: str = "human",
        rows_so_far: pd.DataFrame | None = None,
        identities: Assignment | None = None,
        source: ChainSource | None = None,
        resume: dict | None = None,
        lookup: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        self.cfg, self.d, self.participant, self.session = cfg, d, participant, session
        self.gates = gates or {}
        self.centroids = centroids or {}
        self.base = {"participant": participant, "session": session, "agent": agent,
                     "experiment": cfg.name, "paradigm": cfg.paradigm}
        self.emotions = block_order(cfg, participant)
        self._schedule_key = (cfg, participant, session)
        self.schedule = list(_schedule(*self._schedule_key))
        self.identities = identities or Assignment()
        self._children = _trial_children(self._schedule_key, self.identities)
        if cfg.trials.catch_rate > 0 and len(self.centroids) < 2:
            raise ValueError("catch trials need class centroids of at least two emotions")
        self.n_practice = cfg.trials.practice
        self.n_real = len(self.schedule) - self.n_practice
        # whether a repeat trial may read `history` (a rate too low for one in a block: kept)
        self.repeats = cfg.trials.repeat_rate > 0
        if source is None and cfg.chains.across_participants:
            raise ValueError("an across-participant design takes its chains from the study's "
                             "chain store: give the engine a mcmcp.shared.SharedChains source")
        replay = rows_so_far is not None and len(rows_so_far) > 0
        # a resume point's chains are restored below: their start points are not drawn
        known = {int(c) for c in resume["chains"]} if resume is not None and not replay \
            else set()
        self.source = OwnChains(self._start_states(known), self._chain_ids()) \
            if source is None else source
        self.n_rows = 0
        self.next_index = 0  # index into schedule of the next trial to ask
        self.pending: list[PendingTrial] = []
        self.history: list[list] = []  # the block's chain trials (resume_point), for repeats
        self._lookup = lookup
        self._codes: dict[int, tuple] = {}  # row -> codes of the block's trials told here
        # a resume point's trials asked and not told, by trial number (own chains' pairs)
        self._stored = {p["trial"]: p for p in resume.get("pending", [])} \
            if resume is not None and not replay and source is None else {}
        if replay:
            self._replay(rows_so_far)
        elif resume is not None:
            self._restore(resume)

    def stream(self, stream: int, counter: int) -> np.random.Generator:
        """The generator of one of this participant-session's streams (a *_STREAM tag)."""
        return stream_rng(self.cfg.seed, self.participant, self.session, stream, counter)

    def seeds(self) -> dict:
        """What session.json records about the random streams (enough to redraw any of them)."""
        return {"seed": self.cfg.seed, "participant_key": participant_key(self.participant),
                "session": self.session, "streams": STREAMS,
                "stream_tags": {"schedule": SCHEDULE_STREAM, "trial": TRIAL_STREAM,
                                "start": START_STREAM, "agent": AGENT_STREAM,
                                "block_order": ORDER_STREAM, "identity": IDENTITY_STREAM}}

    def stamp(self, **columns: object) -> None:
        """Set columns every later row carries, e.g. run, date and frame_rate of this run."""
        self.base.update(columns)

    # ------------------------------------------------------------------ set-up and resume

    def _chain_ids(self) -> list[int]:
        """Own chains' ids: block b's are b*n .. b*n+n-1 (n = chains.per_emotion)."""
        return list(range(len(self.emotions) * self.cfg.chains.per_emotion))

    def _start_states(self, known: set[int] = frozenset()) -> dict[int, chain.ChainState]:
        """Own chains' starts, block b's from the participant's START stream b
        (`start_points`), so they differ between participants; a block whose chains are all
        `known` (restored from a resume point) draws none (each block has its own stream)."""
        c, n = self.cfg.chains, self.cfg.chains.per_emotion
        states = {}
        for b, emotion in enumerate(self.emotions):
            if all(b * n + i in known for i in range(n)):
                continue
            starts = start_points(self.cfg, self.d, emotion, self.centroids,
                                  self.stream(START_STREAM, b))
            for i in range(n):
                states[b * n + i] = chain.init(starts[i], c.kappa_proposal)
        return states

    def _replay(self, rows: pd.DataFrame) -> None:
        """Rebuild chains, history and position in the schedule from saved rows."""
        cur = [f"current_{i}" for i in range(self.d)]
        prop = [f"proposal_{i}" for i in range(self.d)]
        shown = rows[rows["kind"] != "gate"]
        own = isinstance(self.source, OwnChains)  # shared chains: the slot is a hold
        places = shown["trial"].astype(int).to_numpy() - 1  # skipped trials: see the module
        for i, (kind, ch) in enumerate(zip(shown["kind"], shown["chain"], strict=True)):
            slot = self.schedule[places[i]] if places[i] < len(self.schedule) else None
            if slot is None or slot.kind != ("chain" if kind == "late" else kind) or (
                own and kind == "chain" and int(ch) != slot.chain
            ):
                raise ValueError(
                    f"saved shown trial {i + 1} ({kind}, chain {ch}) does not match this "
                    f"config's schedule ({slot}); resume with the config the session started with"
                )
        if "identity" in shown:  # files from before children were recorded have no column
            saved = shown["identity"].fillna("").astype(str).to_numpy()
            planned = [self._children[places[i]] if own or kind != "chain"
                       else self.identities.chain(int(ch))
                       for i, (kind, ch) in enumerate(zip(shown["kind"], shown["chain"],
                                                          strict=True))]
            wrong = [i for i, (a, b) in enumerate(zip(saved, planned, strict=True))
                     if a != b and shown["kind"].iloc[i] != "repeat"]
            if wrong:
                i = wrong[0]
                raise ValueError(
                    f"saved shown trial {i + 1} showed child {saved[i] or '(default)'!r} but "
                    f"this config and checkpoint give {planned[i] or '(default)'!r}; resume "
                    "with the config and checkpoint the session started with")
        latent = rows[cur + prop].to_numpy(dtype=float)
        self._lookup = lambda row: (latent[row, :self.d], latent[row, self.d:])
        self.source.resume(rows, [self.schedule[i] for i in places], self._advance)
        self._restore(resume_point(rows.to_dict("records"), self.d), chains=False)

    def _restore(self, point: dict, chains: bool = True) -> None:
        """History and position in the schedule from a `resume_point`; chains: the chains'
        states too (own chains from the point, shared ones from their source; else the source
        has resumed them)."""
        if chains and isinstance(self.source, OwnChains):
            self.source.restore(point, self._advance)
        elif chains:  # shared chains go on from their source (its store), not from the rows
            self.source.resume(None, self.schedule[:point["shown"]], self._advance)
        self.history = [list(h) for h in point["history"]]
        self.n_rows = point["n_rows"]
        self.next_index = point["shown"]

    def _advance(self, state: chain.ChainState, proposal: np.ndarray, accepted: bool):
        """One chain step (plus kappa adaptation during burn-in when configured)."""
        state = chain.step(state, proposal, accepted)
        a = self.cfg.chains.adapt
        if a is not None:
            state = chain.adapt_kappa(state, accepted, a.target, a.burn_in)
        return state

    # ------------------------------------------------------------------ ask / tell

    @property
    def done(self) -> bool:
        return self.next_index >= len(self.schedule)

    def can_ask(self) -> bool:
        """True if the next trial can be drawn now (its chain has no trial on screen)."""
        if self.done:
            return False
        slot = self.schedule[self.next_index]
        return slot.kind != "chain" or all(p.slot.chain != slot.chain for p in self.pending)

    def ask(self) -> PendingTrial | None:
        """The next pair to show (None when the session is over).

        Runs the gate on the chain's proposals until one passes; the screened-out ones come
        back as `gate_rows` (rows are numbered at `tell`). Raises RuntimeError if called while
        the trial on screen uses the same chain (check `can_ask`).
        """
        if self.done:
            return None
        if not self.can_ask():
            raise RuntimeError("the next trial's chain is on screen; tell its response first")
        index = self.next_index
        slot = self.schedule[index]
        stored = self._stored.pop(index + 1, None)
        if stored is not None and self._take(stored, slot):
            return self.pending[-1]
        try:
            cid = self.source.chain(slot) if slot.kind == "chain" else None
        except ChainsComplete as err:  # skip the trial, or the rest of its emotion
            self.next_index += 1
            while err.whole and not self.done and \
                    self.schedule[self.next_index].emotion == slot.emotion:
                self.next_index += 1
            if not self.can_ask():  # the next trial's chain is on screen: after its answer
                raise NoChainFree("the trial after the skipped ones uses the chain on screen") \
                    from None
            return self.ask()
        child = self._children[index]
        t = index + 1
        rng = self.stream(TRIAL_STREAM, t)
        gate_rows: list[dict] = []
        fields: dict = {"kappa_proposal": None, "gate_gamma": None}
        circle = None
        if cid is not None:
            child = self.identities.chain(cid)  # a shared chain shows everyone its child
        if self.cfg.paradigm == "gsp" and slot.kind in ("chain", "practice"):
            state = self.source.state(cid) if slot.kind == "chain" else None
            current = (state.position if slot.kind == "chain"
                       else sphere.sample_uniform(1, self.d, rng)[0])
            circle = gsp.draw_circle(current[None], self.cfg.gsp.points, rng)
            circle = gsp.Circle(*(f[0] for f in circle))
            proposal = current
            roles = ("current", "current")
            fields = {"chain": cid, "iteration": int(state.iteration),
                      **self.source.row_fields(cid, int(state.iteration))
                      } if slot.kind == "chain" else {}
        elif slot.kind == "chain":
            current, proposal, fields, gate_rows = self._chain_pair(slot, cid, rng)
            roles = ("current", "proposal")
        elif slot.kind == "catch":
            foils = [e for e in sorted(self.centroids) if e != slot.emotion]
            foil = foils[int(rng.integers(len(foils)))]
            current, proposal = self.centroids[slot.emotion], self.centroids[foil]
            roles = ("target", "foil")
            fields = {"foil_emotion": foil}
        elif slot.kind == "repeat":
            earlier = [h for h in self.history if h[1] == slot.block and h[0] <= t - 2]
            _, _, row, ch, iteration, left_role = earlier[int(rng.integers(len(earlier)))]
            current, proposal = self._codes[row] if row in self._codes else self._lookup(row)
            fields = {"chain": ch, "iteration": iteration, "repeat_of": row}
            child = self.identities.chain(ch)
            # sides swapped relative to the original showing
            first = "proposal" if left_role == "current" else "current"
            roles = (first, "current" if first == "proposal" else "proposal")
        else:  # practice: a random pair of the same kind as a chain trial
            current = sphere.sample_uniform(1, self.d, rng)[0]
            proposal = sphere.sample_vmf(current[None], self.cfg.chains.kappa_proposal, rng)[0]
            roles = ("current", "proposal")
            fields = {"kappa_proposal": self.cfg.chains.kappa_proposal}
        if slot.kind != "repeat" and circle is None and rng.random() < 0.5:
            roles = roles[::-1]
        by_role = {"current": current, "proposal": proposal, "target": current, "foil": proposal}
        prev = self.schedule[index - 1] if index else None
        starts = None
        if prev is None or (prev.kind == "practice" and slot.kind != "practice"):
            starts = "practice" if slot.kind == "practice" else "block"
        elif prev.block != slot.block:
            starts = "block"
        real = index - self.n_practice  # 0-based among real trials
        every = self.cfg.trials.break_every
        pending = PendingTrial(
            trial=t,
            slot=slot,
            left=np.asarray(by_role[roles[0]], dtype=float),
            right=np.asarray(by_role[roles[1]], dtype=float),
            left_role=roles[0],
            right_role=roles[1],
            fields={"current": current, "proposal": proposal, **fields,
                    "identity": child or None},
            gate_rows=gate_rows,
            starts=starts,
            break_before=bool(every and real > 0 and real % every == 0 and starts is None),
            progress=(index + 1, self.n_practice) if slot.kind == "practice"
            else (real + 1, self.n_real),
            identity=child,
            circle=circle,
            rng=rng if circle is not None else None,
        )
        self.next_index += 1
        self.pending.append(pending)
        return pending

    def pending_state(self) -> list[dict]:
        """The trials asked and not yet told (`pending`), JSON-able, for a resume point's
        `pending`. Own chains' pairs only: [] when the chains are shared or a trial is a
        slider (its stream's state is part of it)."""
        if not isinstance(self.source, OwnChains) or any(p.is_slider for p in self.pending):
            return []
        return [{"trial": p.trial, "left": p.left.tolist(), "right": p.right.tolist(),
                 "left_role": p.left_role, "right_role": p.right_role,
                 "fields": {k: v.tolist() if isinstance(v, np.ndarray) else v
                            for k, v in p.fields.items()},
                 "gate_rows": [dict(r) for r in p.gate_rows], "starts": p.starts,
                 "break_before": p.break_before, "progress": list(p.progress),
                 "identity": p.identity} for p in self.pending]

    def _take(self, stored: dict, slot: Slot) -> bool:
        """Ask the resume point's trial `stored` (of `pending_state`) of the next slot instead
        of drawing it: its chain takes the gate steps its gate rows record. False, changing
        nothing and forgetting every stored trial, when the chain is not where the trial was
        drawn (then the trial is drawn)."""
        fields = {k: np.asarray(v, dtype=float) if k in ("current", "proposal") else v
                  for k, v in stored["fields"].items()}
        steps = []
        if slot.kind == "chain":
            state = self.source.state(slot.chain)
            for row in stored["gate_rows"]:
                proposal = np.array([row[f"proposal_{i}"] for i in range(self.d)])
                state = self._advance(state, proposal, False)
                steps.append(state)
            if not (np.array_equal(state.position, fields["current"])
                    and int(state.iteration) == fields["iteration"]
                    and float(state.kappa) == fields["kappa_proposal"]):
                self._stored.clear()
                return False
        for state in steps:
            self.source.move(slot.chain, state, shown=False)
        self.pending.append(PendingTrial(
            trial=stored["trial"], slot=slot, left=np.asarray(stored["left"], dtype=float),
            right=np.asarray(stored["right"], dtype=float), left_role=stored["left_role"],
            right_role=stored["right_role"], fields=fields,
            gate_rows=[dict(r) for r in stored["gate_rows"]], starts=stored["starts"],
            break_before=stored["break_before"], progress=tuple(stored["progress"]),
            identity=stored["identity"]))
        self.next_index += 1
        return True

    def is_control(self, chain_id: int) -> bool:
        """True for an unguided control chain (the last `chains.unguided` of its block)."""
        n = self.cfg.chains.per_emotion
        return chain_id % n >= n - self.cfg.chains.unguided

    def _gate(self, slot: Slot, cid: int):
        """(the gate that screens chain `cid` of the slot, or None for a control chain or no
        gate; the chain's shown trials so far as a fraction of trials.per_chain, for
        annealing)."""
        gate = None if self.is_control(cid) else self.gates.get(slot.emotion)
        return gate, self.source.shown(cid) / self.cfg.trials.per_chain

    def _chain_pair(self, slot: Slot, cid: int, rng: np.random.Generator):
        """Propose (and gate) on chain `cid`: (current, proposal, fields, gate_rows)."""
        gate, progress = self._gate(slot, cid)
        state = self.source.state(cid)
        gate_rows = []
        for _ in range(MAX_GATE_STEPS):
            proposal = chain.propose(state, rng)
            fields = {"chain": cid, "iteration": int(state.iteration),
                      "kappa_proposal": float(state.kappa),
                      **self.source.row_fields(cid, int(state.iteration))}
            if gate is None:
                return state.position, proposal, fields, gate_rows
            res = gate.screen(state.position[None], proposal[None], rng, progress=progress)
            fields.update(
                log_gate_current=float(res.log_g_current[0]),
                log_gate_proposal=float(res.log_g_proposal[0]),
                gate_gamma=float(res.gamma[0]),
                gate_prob=float(res.prob[0]),
            )
            if res.passed[0]:
                return state.position, proposal, fields, gate_rows
            gate_rows.append(self._row(slot, None, "gate", {
                **fields, "current": state.position, "proposal": proposal,
                "accepted": False, "identity": self.identities.chain(cid) or None,
            }))
            state = self._advance(state, proposal, False)
            self.source.move(cid, state, shown=False)
        raise RuntimeError(
            f"the gate screened out {MAX_GATE_STEPS} proposals in a row on chain {cid}; "
            "lower gate.gamma or raise chains.kappa_proposal"
        )

    def _row(self, slot: Slot, trial: int | None, kind: str, fields: dict) -> dict:
        row = {**self.base, "block": slot.block, "emotion": slot.emotion, "trial": trial,
               "kind": kind}
        for key, value in fields.items():
            if key in ("current", "proposal", "direction"):
                row.update(zip((f"{key}_{i}" for i in range(self.d)), value.tolist(), strict=True))
            else:
                row[key] = value
        return row

    def tell(
        self,
        trial: PendingTrial,
        response: str,
        rt: float,
        onset: float | None = None,
        gap: float | None = None,
        dropped_frames: int | None = None,
        timestamp: str | None = None,
        key: str | None = None,
        device: str | None = None,
    ) -> list[dict]:
        """Record the response ("left" | "right"; for a slider trial the circle point confirmed,
        an int 0..K-1) to `trial` (the oldest one asked).

        Returns the rows to save, numbered in event order: the trial's gate rows, then the
        shown trial. Chain trials move their chain; rt, onset and gap are seconds; key: the key
        pressed (None for a click or an agent); device: keyboard | mouse | agent.
        """
        if not self.pending or self.pending[0] is not trial:
            raise RuntimeError("tell() must answer the trials in the order they were asked")
        if trial.is_slider:
            return self._tell_slider(trial, response, rt, onset, gap, dropped_frames, timestamp,
                                     key, device)
        if response not in ("left", "right"):
            raise ValueError(f"response must be 'left' or 'right', got {response!r}")
        self.pending.pop(0)
        chosen = trial.right_role if response == "right" else trial.left_role
        slot = trial.slot
        out = {**trial.fields, "left_role": trial.left_role, "right_role": trial.right_role,
               "response": response, "rt": rt, "onset": onset, "gap": gap,
               "dropped_frames": dropped_frames, "key": key, "device": device}
        if slot.kind == "catch":
            out["correct"] = chosen == "target"
        else:
            out["chose_proposal"] = chosen == "proposal"
        if slot.kind == "chain":
            cid = out["chain"]
            out["accepted"] = chosen == "proposal"
            state = self.source.state(cid)
            self.source.move(cid, self._advance(state, trial.fields["proposal"],
                                                out["accepted"]), shown=True)
        rows = [*trial.gate_rows, self._row(slot, trial.trial, slot.kind, out)]
        self._number(rows, timestamp)
        if slot.kind == "chain" and not self.source.commit(cid, rows):
            return self._late(rows, timestamp)
        if slot.kind == "chain":
            row = rows[-1]["row"]
            self.history = [h for h in self.history if h[1] == slot.block]
            self.history.append([trial.trial, slot.block, row, cid, out["iteration"],
                                 trial.left_role])
            self._codes = {h[2]: self._codes[h[2]] for h in self.history[:-1]
                           if h[2] in self._codes}
            self._codes[row] = (trial.fields["current"], trial.fields["proposal"])
        return rows

    def _late(self, rows: list[dict], timestamp: str | None) -> list[dict]:
        """The one row of a told trial the chain source refused (a shared chain whose lease
        ended before the answer came): kind `late`, the answer as given, no step of any chain
        (no gate rows, iteration, chain_step or accepted); `chain` and `lease` say which it
        was for."""
        self.n_rows -= len(rows)
        late = {**rows[-1], "kind": "late", "iteration": None, "chain_step": None,
                "accepted": None}
        for key in [k for k in late if k.startswith(("log_gate", "gate_"))]:
            late[key] = None
        out = [late]
        self._number(out, timestamp)
        return out

    def _number(self, rows: list[dict], timestamp: str | None) -> None:
        for r in rows:
            r["row"] = self.n_rows
            r["timestamp"] = timestamp
            self.n_rows += 1

    def _tell_slider(self, trial: PendingTrial, point, rt, onset, gap, dropped_frames,
                     timestamp, key, device) -> list[dict]:
        """Record a GSP trial: `point` is the circle point confirmed (0..K-1). A chain trial
        moves its chain there, unless the gate (Barker on g^gamma, drawn from the trial's
        stream) refuses the move; every such trial is one row (mcmcp.sampling.gsp)."""
        k = self.cfg.gsp.points
        if isinstance(point, bool) or not isinstance(point, (int, np.integer)) \
                or not 0 <= point < k:
            raise ValueError(f"a slider trial's response is a circle point 0..{k - 1}, "
                             f"got {point!r}")
        self.pending.pop(0)
        slot, circle = trial.slot, trial.circle
        point = int(point)
        chosen = circle.points[point]
        out = {**trial.fields, "proposal": chosen, "direction": circle.direction, "rt": rt,
               "onset": onset, "gap": gap, "dropped_frames": dropped_frames, "key": key,
               "device": device, "gsp_points": k, "gsp_shift": int(circle.shift),
               "gsp_start": int(circle.start), "gsp_choice": point}
        if slot.kind == "chain":
            cid = out["chain"]
            state = self.source.state(cid)
            moved = True
            gate, progress = self._gate(slot, cid)
            if gate is not None:
                res = gate.screen(state.position[None], chosen[None], trial.rng,
                                  progress=progress)
                moved = bool(res.passed[0])
                out.update(log_gate_current=float(res.log_g_current[0]),
                           log_gate_proposal=float(res.log_g_proposal[0]),
                           gate_gamma=float(res.gamma[0]), gate_prob=float(res.prob[0]))
            out["accepted"] = moved and point != 0
            self.source.move(cid, chain.step(state, chosen, out["accepted"]), shown=True)
        rows = [self._row(slot, trial.trial, slot.kind, out)]
        self._number(rows, timestamp)
        if slot.kind == "chain" and not self.source.commit(cid, rows):
            return self._late(rows, timestamp)
        return rows

    def positions(self) -> dict[int, np.ndarray]:
        """Current state (d,) of every chain the session holds, by chain id."""
        return self.source.positions()
