"""Simulated MCMCP studies: synthetic agents answer many chains at once, written like lab data.

The core, `simulate_chains`, moves n chains of one emotion in lockstep through the same pure
functions a lab session uses (`chain.propose`, `gate.Gate.screen`, `chain.step`,
`chain.adapt_kappa`) and returns every step as arrays. `simulate_participant` runs one
participant's blocks, lays them out as their session (`mcmcp.layout`: chains interleaved at
random within one block per emotion, gate rows before the trial they precede, catch trials mixed
in) and writes it through `mcmcp.store.SessionStore`, so simulated files are lab files; the CLI
and the analysis tests both go through it (one writer). `simulate_study` runs the participants one
after another, or in `jobs` worker processes, each written as soon as it is done, so memory does
not grow with the number of participants.

    python -m mcmcp.simulate --emotion happy --agent latent --chains 64 --trials 500 --seed 1
    python -m mcmcp.simulate --truth manual --gate none --emotion all   # no model needed
    python -m mcmcp.simulate --config experiments/simulate_demo.yaml --participants 100 --jobs 2
    python -m mcmcp.simulate --truth manual --gate none --paradigm gsp --trials 30   # GSP sliders

Randomness: participant P's start points and chains (all blocks, simulated together) draw from
`mcmcp.seeds.stream_rng(seed, P, session, CHAIN_STREAM, 0)` and block b's trial order and catch
trials from `stream_rng(seed, P, session, LAYOUT_STREAM, b)`, so a participant's data are the
same whether simulated alone, with 99 others or in parallel (recorded in session.json `seeds`).
Practice and repeat trials are not simulated (agents need no practice; repeat_rate must be 0).
Children (identity models, `stimuli:`): each participant's chains and catch trials show the
children `mcmcp.identities.assignment` gives them, as in a lab session; image agents (observer)
see each face as its trial's child; rows and session.json record them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mcmcp import chain
from mcmcp.seeds import participant_key, stream_rng
from mcmcp.sphere import fibonacci_sphere, sample_uniform
from vae.labels import EMOTIONS, canonical_emotion

if TYPE_CHECKING:
    from mcmcp.agents import Agent
    from mcmcp.densities import VMFMixture
    from mcmcp.gate import Gate

# A gate that lets almost nothing through would loop for ever; past this many steps per shown
# trial the simulation stops with an error instead.
MAX_STEPS_PER_SHOWN = 1000
CHAIN_STREAM, LAYOUT_STREAM = 0, 1  # stream tags of mcmcp.seeds.stream_rng


class Trace(NamedTuple):
    """Every step of n chains: arrays indexed [t, i], t = the chain's iteration (0-based).

    Entries where `active` is False are padding (the chain had already finished).
    current, proposal (T, n, d); kappa, gate_prob, log_g_current, log_g_proposal, gate_gamma
    (the γ in force), rt (T, n) float (gate fields NaN without a gate, gate_gamma NaN for
    unguided chains, rt NaN when not shown); active, shown (passed the gate),
    right_is_proposal, chose_proposal, accepted (T, n) bool (a chain moves iff the proposal was
    chosen, so accepted is chose_proposal). `final` is the last ChainState.
    """

    current: np.ndarray
    proposal: np.ndarray
    kappa: np.ndarray
    gate_prob: np.ndarray
    log_g_current: np.ndarray
    log_g_proposal: np.ndarray
    gate_gamma: np.ndarray
    active: np.ndarray
    shown: np.ndarray
    right_is_proposal: np.ndarray
    chose_proposal: np.ndarray
    accepted: np.ndarray
    rt: np.ndarray
    final: chain.ChainState

    def samples(self, burn_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(states (T', n, d), valid (T', n)): chain states at iterations >= burn_in (every
        iteration, shown or screened out, is one MCMC sample)."""
        return self.current[burn_in:], self.active[burn_in:]

    def chains(self, which: slice) -> Trace:
        """The trace of the chains `which` only (a block's chains of a joint simulation)."""
        fields = {k: getattr(self, k)[:, which] for k in self._fields if k != "final"}
        final = chain.ChainState(*(np.asarray(f)[which] for f in self.final))
        return Trace(**fields, final=final)


class ByChain:
    """One density made of several: rows `groups[k]` (an index array or slice into the chains)
    are scored by densities[k]; `logpdf(x)` takes every chain's row, in chain order. It lets one
    gate screen the chains of several emotions at once."""

    def __init__(self, densities: list, groups: list) -> None:
        self.densities, self.groups = densities, groups

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for density, rows in zip(self.densities, self.groups, strict=True):
            out[rows] = density.logpdf(x[rows])
        return out


GATE_FIELDS = ("gate_prob", "log_g_current", "log_g_proposal", "gate_gamma")


def _record_gate(rec: dict[str, list], screen, guided: np.ndarray) -> None:
    """Append one step's gate fields (a GateResult) to `rec`; control chains get γ NaN."""
    rec["gate_prob"].append(screen.prob)
    rec["log_g_current"].append(screen.log_g_current)
    rec["log_g_proposal"].append(screen.log_g_proposal)
    rec["gate_gamma"].append(np.where(guided, screen.gamma, np.nan))


def _stack(rec: dict[str, list]) -> dict[str, np.ndarray]:
    """The recorded steps as (T, n) arrays; without a gate the gate fields are all NaN (a
    broadcast view, not T x n copies)."""
    out = {k: np.stack(v) for k, v in rec.items() if v}
    for key in GATE_FIELDS:
        out.setdefault(key, np.broadcast_to(np.nan, out["rt"].shape))
    return out


def simulate_chains(
    start: np.ndarray,
    n_shown: int,
    kappa_proposal: float | np.ndarray,
    agent: Agent,
    emotion: str | np.ndarray,
    gate: Gate | None,
    rng: np.random.Generator,
    adapt: tuple[float, int] | None = None,
    identity: np.ndarray | None = None,
    guided: np.ndarray | None = None,
) -> Trace:
    """Run n chains from `start` (n, d) until each has had `n_shown` trials shown to `agent`.

    emotion: the chains' target emotion, or (n,) names (chains of several blocks at once; give
    them a gate over `ByChain` densities). kappa_proposal: scalar or (n,); adapt: (target
    acceptance, burn_in iterations) for Robbins-Monro tuning of kappa during burn-in, or None.
    Gate-screened proposals are steps too (the chain stays) but are not shown; an annealed
    gate's γ follows each chain's shown trials so far over `n_shown` (as in the engine).
    guided: (n,) bool, the chains the gate screens (None: all; the others are unguided control
    chains). Sides are randomised here, 50/50 per trial. identity: (n,) the child each chain
    shows (for agents that judge pixels), None: the model's default.
    """
    state = chain.init(start, kappa_proposal)
    n = len(start)
    n_done = np.zeros(n, dtype=np.int64)
    log_g = gate.density.logpdf(state.position) if gate is not None else None
    nan = np.full(n, np.nan)
    guided = np.ones(n, dtype=bool) if guided is None else np.asarray(guided, dtype=bool)
    rec: dict[str, list] = {k: [] for k in Trace._fields if k not in ("accepted", "final")}
    while True:
        active = n_done < n_shown
        if not active.any():
            break
        if len(rec["active"]) > MAX_STEPS_PER_SHOWN * n_shown:
            raise RuntimeError(
                f"{', '.join(dict.fromkeys(np.atleast_1d(emotion).tolist()))}: after "
                f"{len(rec['active'])} steps {int(active.sum())} chain(s) still "
                f"lack {n_shown} shown trials: the gate passes almost nothing (gamma "
                f"{gate.gamma if gate else None}); lower gate.gamma or chains.kappa_proposal"
            )
        proposal = chain.propose(state, rng)
        if gate is None:
            shown, screen = active, None
        else:
            screen = gate.screen(state.position, proposal, rng, log_g, n_done / n_shown)
            shown = active & (screen.passed | ~guided)
        right_is_prop = rng.random(n) < 0.5
        chose = np.zeros(n, dtype=bool)
        rt = nan.copy()
        if shown.any():
            idx = slice(None) if shown.all() else np.flatnonzero(shown)
            cur, prop, rip = state.position[idx], proposal[idx], right_is_prop[idx]
            m = rip[:, None]
            answer = agent.choose(emotion if isinstance(emotion, str) else emotion[idx],
                                  np.where(m, cur, prop), np.where(m, prop, cur), rng,
                                  identity=None if identity is None else identity[idx])
            chose[idx] = answer.chose_right == rip
            rt[idx] = answer.rt
        new = chain.step(state, proposal, chose)
        if adapt is not None:
            new = chain.adapt_kappa(new, chose, adapt[0], adapt[1])
        if not active.all():  # finished chains stay exactly as they were
            new = chain.ChainState(
                np.where(active[:, None], new.position, state.position),
                np.where(active, new.iteration, state.iteration),
                np.where(active, new.n_accepted, state.n_accepted),
                np.where(active, new.kappa, state.kappa),
            )
        rec["current"].append(state.position)
        rec["proposal"].append(proposal)
        rec["kappa"].append(state.kappa)
        rec["active"].append(active)
        rec["shown"].append(shown)
        rec["right_is_proposal"].append(right_is_prop)
        rec["chose_proposal"].append(chose)
        rec["rt"].append(rt)
        if screen is not None:
            _record_gate(rec, screen, guided)
            log_g = np.where(chose, screen.log_g_proposal, log_g)
        n_done += shown
        state = new
    out = _stack(rec)
    return Trace(**out, accepted=out["chose_proposal"], final=state)


def simulate_gsp_chains(
    start: np.ndarray,
    n_shown: int,
    points: int,
    agent: Agent,
    emotion: str | np.ndarray,
    gate: Gate | None,
    rng: np.random.Generator,
    identity: np.ndarray | None = None,
    guided: np.ndarray | None = None,
) -> tuple[Trace, dict]:
    """Run n GSP chains from `start` (n, d) for `n_shown` slider trials each (`mcmcp.gsp`).
    identity: (n,) the child each chain shows (for agents that judge images), None: default.
    guided: (n,) bool, the chains whose moves the gate screens (None: all; the others are
    control chains); an annealed gate's γ follows the chain's trials so far over `n_shown`.

    Every trial is shown and is one step: `proposal` is the confirmed point, `accepted` says the
    chain moved there (False for point 0, x itself, or a move the gate refused). Returns the
    trace (kappa NaN: GSP has no proposal concentration) and the slider's own arrays, indexed
    [t, i] like the trace: direction (T, n, d), gsp_shift, gsp_start, gsp_choice (T, n) int.
    """
    from mcmcp import gsp

    state = chain.init(start, np.nan)
    n = len(start)
    log_g = gate.density.logpdf(state.position) if gate is not None else None
    guided = np.ones(n, bool) if guided is None else np.asarray(guided, bool)
    rec: dict[str, list] = {k: [] for k in ("current", "proposal", "rt", *GATE_FIELDS)}
    extra: dict[str, list] = {k: [] for k in ("direction", "gsp_shift", "gsp_start",
                                              "gsp_choice")}
    rows = np.arange(n)
    accepted = []
    for t in range(n_shown):
        circle = gsp.draw_circle(state.position, points, rng)
        answer = agent.slide(emotion, circle.points, circle.start, circle.shift, rng, identity)
        chosen = circle.points[rows, answer.choice]
        moved = np.ones(n, bool)
        if gate is not None:
            res = gate.screen(state.position, chosen, rng, log_g, t / n_shown)
            moved = res.passed | ~guided
            _record_gate(rec, res, guided)
            log_g = np.where(moved, res.log_g_proposal, log_g)
        new = gsp.step(state, circle.points, answer.choice, moved)
        rec["current"].append(state.position)
        rec["proposal"].append(chosen)
        rec["rt"].append(answer.rt)
        accepted.append(moved & (answer.choice != 0))
        for key, value in zip(extra, (circle.direction, circle.shift, circle.start,
                                      answer.choice), strict=True):
            extra[key].append(value)
        state = new
    out = _stack(rec)
    shape = (n_shown, n)
    ones, zeros = np.ones(shape, bool), np.zeros(shape, bool)
    trace = Trace(**out, kappa=np.full(shape, np.nan), active=ones, shown=ones,
                  right_is_proposal=zeros, chose_proposal=ones, accepted=np.stack(accepted),
                  final=state)
    return trace, {k: np.stack(v) for k, v in extra.items()}


# ----------------------------------------------------------------------------- whole studies


def simulated_ids(n: int) -> list[str]:
    """The ids of n simulated participants: sim001, sim002, ..."""
    return [f"sim{k:03d}" for k in range(1, n + 1)]


def start_points(kind: str, n: int, d: int, emotion: str, centroids: dict | None,
                 rng: np.random.Generator) -> np.ndarray:
    """Start states (n, d): fibonacci (deterministic, d <= 3), uniform, or centroids of the
    other emotions (cycled; needs `centroids`)."""
    if kind == "fibonacci":
        return fibonacci_sphere(n, d)
    if kind == "uniform":
        return sample_uniform(n, d, rng)
    others = [centroids[e] for e in sorted(centroids) if e != emotion]
    return np.array([others[i % len(others)] for i in range(n)])


class GroundTruth(NamedTuple):
    """A latent agent's true categories, recorded in session.json for analysis to score against.

    kind: 'data' (fitted to the encoded training faces), 'manual' (vMF at 7 Fibonacci points)
    or 'file' (read from JSON); densities: emotion -> VMFMixture on S^(d-1).
    """

    kind: str
    densities: dict[str, VMFMixture]


class ModelParts(NamedTuple):
    """What a simulation takes from the VAE: `loaded` (vae.checkpoint.LoadedModel); the training
    faces of the face store encoded once (`densities.emotion_codes`: emotion -> (n_e, d)), None
    when nothing is fitted to faces; the observer classifier, None unless the agent is one;
    the children (`mcmcp.identities.Identities`) and warnings about the inputs (recorded in
    every session.json)."""

    loaded: object
    codes: dict | None
    observer: object | None
    identities: object = None
    warnings: tuple = ()


class Design(NamedTuple):
    """Everything needed to simulate any participant of a study (picklable, sent once to each
    worker process): the config, d, the agent, each emotion's gate (None = unguided), the class
    centroids (catch trials, centroid starts; None without), the session.json fields shared by
    all participants, the output root and the children (`mcmcp.identities.Identities`, None
    without a model)."""

    cfg: object
    d: int
    agent: object
    gates: dict
    centroids: dict | None
    metadata: dict
    root: Path
    identities: object = None


class Done(NamedTuple):
    """One simulated participant: its session folder, rows written, chain steps (shown or
    screened out) and the seconds its chains took."""

    folder: Path
    n_rows: int
    chain_steps: int
    seconds: float


class Study(NamedTuple):
    """What `simulate_study` wrote: one session folder per participant, the number of rows, the
    chain steps simulated (shown or screened out) and the seconds the chains took (summed over
    participants)."""

    folders: list[Path]
    n_rows: int
    chain_steps: int
    simulate_seconds: float


def simulate_participant(design: Design, participant: str) -> Done:
    """Simulate one participant's session (every block of the design) and write it."""
    from mcmcp.identities import assignment
    from mcmcp.layout import SESSION, Block, block_columns, session_columns
    from mcmcp.store import SessionStore, utc_now

    cfg, d, agent = design.cfg, design.d, design.agent
    agent.reset()  # nothing remembered from whoever this process simulated before
    C, n_shown = cfg.chains.per_emotion, cfg.trials.per_chain
    adapt = None if cfg.chains.adapt is None else (cfg.chains.adapt.target,
                                                   cfg.chains.adapt.burn_in)
    # Every block's chains at once (one vectorised run instead of one per block); the chains
    # are independent, so only the order of the random draws differs from block after block.
    rng = stream_rng(cfg.seed, participant, SESSION, CHAIN_STREAM, 0)
    start = np.concatenate([start_points(cfg.chains.start, C, d, e, design.centroids, rng)
                            for e in cfg.emotions])
    children = (None if design.identities is None
                else assignment(cfg, participant, design.identities.default))
    # the last chains.unguided chains of each block are control chains (never screened)
    guided = np.tile(np.arange(C) < C - cfg.chains.unguided, len(cfg.emotions))
    t0 = time.perf_counter()
    emotions = np.repeat(np.array(cfg.emotions, dtype=object), C)
    gate = joint_gate(design.gates, cfg.emotions, C)
    identity = None if children is None else children.chain(np.arange(C * len(cfg.emotions)))
    slider = None
    if cfg.paradigm == "gsp":
        trace, slider = simulate_gsp_chains(start, n_shown, cfg.gsp.points, agent, emotions,
                                            gate, rng, identity, guided)
    else:
        trace = simulate_chains(start, n_shown, cfg.chains.kappa_proposal, agent, emotions,
                                gate, rng, adapt, identity, guided=guided)
    seconds = time.perf_counter() - t0
    blocks = []
    for b, emotion in enumerate(cfg.emotions):
        gate = design.gates[emotion]
        layout = stream_rng(cfg.seed, participant, SESSION, LAYOUT_STREAM, b)
        blocks.append(block_columns(
            Block(emotion, trace.chains(slice(b * C, (b + 1) * C)),
                  None if gate is None else gate.gamma, children),
            b, n_shown, agent, cfg.trials.catch_rate, design.centroids, layout,
            None if slider is None else {k: v[:, b * C:(b + 1) * C] for k, v in slider.items()}))
        blocks[-1]["paradigm"] = cfg.paradigm
        if slider is not None:
            blocks[-1]["gsp_points"] = np.full(len(blocks[-1]["kind"]), cfg.gsp.points)
    columns, n_rows = session_columns(blocks, participant, agent.name, utc_now())
    seeds = {"master": cfg.seed, "participant_key": participant_key(participant),
             "chains": f"stream_rng(seed, participant, session, {CHAIN_STREAM}, 0)",
             "layout_and_catch": f"stream_rng(seed, participant, session, {LAYOUT_STREAM}, "
                                 "block)"}
    identity = {} if children is None else {
        "identity": {**children.record(), **design.identities.record()}}
    store = SessionStore.create(design.root, participant, SESSION, d,
                                {**design.metadata, "seeds": seeds, **identity})
    store.append_columns(columns, n_rows)
    store.finish(n_rows=n_rows)
    return Done(store.folder, n_rows, int(trace.active.sum()), seconds)


def joint_gate(gates: dict, emotions, n_chains: int) -> Gate | None:
    """One gate over the chains of every block (block b = chains b*C .. b*C+C-1), each block
    screened by its own emotion's gate density; None when the design has no gate."""
    from mcmcp.gate import Gate

    if all(gates[e] is None for e in emotions):
        return None
    groups = [slice(b * n_chains, (b + 1) * n_chains) for b in range(len(emotions))]
    first = gates[emotions[0]]  # one gate spec for the whole design: the same γ and schedule
    return Gate(ByChain([gates[e].density for e in emotions], groups), first.gamma,
                first.anneal_until)


_DESIGN: Design | None = None  # a worker process's design, set once by _start_worker


def _start_worker(design: Design) -> None:
    global _DESIGN
    _DESIGN = design
    torch = sys.modules.get("torch")  # an image agent's model: one thread per worker process
    if torch is not None:
        torch.set_num_threads(1)


def _simulate_in_worker(participant: str) -> Done:
    return simulate_participant(_DESIGN, participant)


def simulate_study(
    cfg,
    root: str | Path,
    participants: list[str],
    truth: GroundTruth | None = None,
    model: ModelParts | None = None,
    checkpoint_sha256: str | None = None,
    source: str | Path = "<config>",
    jobs: int = 1,
    progress: bool = False,
) -> Study:
    """Simulate `participants` (ids) through the design of `cfg` and write each one's session
    under `root` with `SessionStore`, exactly as a lab session is written.

    cfg: `mcmcp.config.ExperimentConfig` (emotions, chains, trials, gate, agent (None = latent),
    seed). truth: the latent agent's categories (required for agent.kind latent, recorded as
    session.json `ground_truth`). model: required by classifier/observer agents, vmf/mixture/
    classifier gates and, without a truth, by catch trials and centroid starts.
    checkpoint_sha256: the model the codes belong to, recorded in session.json (None: none).
    jobs: worker processes (1 = this process); a participant's data do not depend on it.
    progress: show a progress bar on stderr.
    Raises ConfigError (naming `source`) for a design that cannot be simulated, FileExistsError
    if a session folder exists (nothing is written then).
    """
    from mcmcp.layout import SESSION
    from mcmcp.store import session_dir

    existing = [str(f) for f in (session_dir(root, p, SESSION) for p in participants) if f.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing session folders: "
                              f"{', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}; "
                              "choose another --out")
    design = make_design(cfg, Path(root), truth, model, checkpoint_sha256, source)
    done = []
    from tqdm import tqdm

    bar = tqdm(total=len(participants), unit="participant", disable=not progress,
               file=sys.stderr)
    if jobs == 1 or len(participants) == 1:
        for pid in participants:
            done.append(simulate_participant(design, pid))
            bar.update()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent may hold torch's thread pool, which fork would copy
        with ProcessPoolExecutor(min(jobs, len(participants)), multiprocessing.get_context(
                "spawn"), initializer=_start_worker, initargs=(design,)) as pool:
            for result in pool.map(_simulate_in_worker, participants):
                done.append(result)
                bar.update()
    bar.close()
    return Study([r.folder for r in done], sum(r.n_rows for r in done),
                 sum(r.chain_steps for r in done), sum(r.seconds for r in done))


def make_design(cfg, root: Path, truth: GroundTruth | None, model: ModelParts | None,
                checkpoint_sha256: str | None, source: str | Path) -> Design:
    """The agent, gates, centroids and shared session metadata of a study (see simulate_study).
    The faces were encoded once (ModelParts.codes), for the truth, centroids and gates."""
    from mcmcp.agents import make_agent
    from mcmcp.config import AgentSpec, config_to_dict
    from mcmcp.densities import fit_densities
    from mcmcp.gate import make_gate
    from mcmcp.sphere import spherical_mean
    from mcmcp.store import versions

    agent_spec = cfg.agent or AgentSpec()
    loaded = None if model is None else model.loaded
    codes = None if model is None else model.codes
    with_faces = codes is not None
    identities = None if model is None else model.identities
    agent = make_agent(agent_spec, None if truth is None else truth.densities,
                       None if loaded is None else loaded.model,
                       None if model is None else model.observer, identities)
    if truth is not None and truth.kind != "data":
        # Categories not made from faces: a clear exemplar of one is its own mode.
        centroids = {e: dens.mode() for e, dens in truth.densities.items()}
    elif with_faces:
        centroids = {e: spherical_mean(c) for e, c in codes.items()}
    else:
        centroids = None
    d = next(iter(truth.densities.values())).d if truth is not None else loaded.config.latent_dim
    _check_design(cfg, d, truth, loaded, centroids, source)
    gate_densities = None
    if cfg.gate.kind in ("vmf", "mixture") and with_faces:
        gate_densities = fit_densities(codes, cfg.gate.kind, cfg.gate.components)
    gates = {e: make_gate(cfg.gate, e, gate_densities, None if loaded is None else loaded.model)
             for e in cfg.emotions}
    metadata = {
        "mode": "simulation",
        "config": config_to_dict(cfg),
        "checkpoint_sha256": checkpoint_sha256,
        "agent": {"name": agent.name, **vars(agent_spec)},
        "gate": vars(cfg.gate),
        "ground_truth": None if truth is None else {
            "kind": truth.kind,
            "densities": {e: dens.to_dict() for e, dens in truth.densities.items()},
            "prototypes": {e: dens.mode().tolist() for e, dens in truth.densities.items()},
        },
        "versions": versions(),
        "warnings": [] if model is None else list(model.warnings),
    }
    return Design(cfg, d, agent, gates, centroids, metadata, root, identities)


def _check_design(cfg, d, truth, loaded, centroids, source) -> None:
    """ConfigError (naming `source` and the key) for what cannot be simulated in R^d."""
    from mcmcp.config import ConfigError

    if cfg.trials.repeat_rate > 0:
        raise ConfigError(source, "trials.repeat_rate", cfg.trials.repeat_rate,
                          "0 for simulations: repeat trials are not simulated")
    if truth is not None:
        missing = [e for e in cfg.emotions if e not in truth.densities]
        if missing:
            raise ConfigError(source, "emotions", list(cfg.emotions),
                              f"emotions the ground truth has ({', '.join(truth.densities)}); "
                              f"it lacks {', '.join(missing)}")
    if loaded is not None and loaded.config.latent_dim != d:
        raise ConfigError(source, "model.checkpoint", str(cfg.model.checkpoint),
                          f"a model of latent size {d} (the ground truth's), not "
                          f"{loaded.config.latent_dim}")
    if cfg.model.latent_dim is not None and cfg.model.latent_dim != d:
        raise ConfigError(source, "model.latent_dim", cfg.model.latent_dim, f"{d}")
    if cfg.gate.mean is not None and len(cfg.gate.mean) != d:
        raise ConfigError(source, "gate.mean", list(cfg.gate.mean), f"a list of d = {d} numbers")
    if cfg.chains.start == "fibonacci" and d > 3:
        raise ConfigError(source, "chains.start", "fibonacci",
                          f"centroids or uniform: the latent size is {d} > 3")
    if cfg.chains.start == "centroids" and centroids is None:
        raise ConfigError(source, "chains.start", "centroids",
                          "fibonacci or uniform, or give a checkpoint and face store "
                          "(model.checkpoint, model.faces) to compute class centroids")


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mcmcp.simulate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="experiment YAML (default: the built-in defaults of "
                                    "mcmcp/config.py)")
    p.add_argument("--emotion", help="one emotion, or 'all' (default: the config's emotions)")
    p.add_argument("--agent", choices=("latent", "classifier", "observer"),
                   help="who answers (default: the config's agent.kind, else latent)")
    p.add_argument("--participants", type=int, default=1,
                   help="number of simulated participants, sim001, sim002, ... (default: 1)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes simulating participants in parallel; a participant's "
                        "data do not depend on it (default: 1)")
    p.add_argument("--chains", type=int, help="chains per emotion (default: the config's "
                                              "chains.per_emotion)")
    p.add_argument("--trials", type=int, help="shown trials per chain (default: the config's "
                                              "trials.per_chain)")
    p.add_argument("--seed", type=int, help="master seed of every random stream (default: the "
                                            "config's seed)")
    p.add_argument("--gate", choices=("none", "vmf", "mixture", "classifier"),
                   help="gatekeeper of guided MCMCP, none = unguided (default: the config's "
                        "gate.kind)")
    p.add_argument("--gamma", type=float, help="gate exponent gamma > 0 (default: the config's "
                                               "gate.gamma)")
    p.add_argument("--lapse", type=float, help="agent's probability of a random answer, 0-1 "
                                               "(default: the config's agent.lapse)")
    p.add_argument("--exponent", type=float, help="agent's Luce decision exponent >= 0 "
                                                  "(default: the config's agent.exponent)")
    p.add_argument("--side-bias", type=float, help="agent's logit bias toward 'right' "
                                                   "(default: the config's agent.side_bias)")
    p.add_argument("--kappa-proposal", type=float,
                   help="concentration of the vMF proposals (default: the config's "
                        "chains.kappa_proposal)")
    p.add_argument("--catch-rate", type=float, help="share of shown trials that are catch "
                                                    "trials (default: the config's "
                                                    "trials.catch_rate)")
    p.add_argument("--paradigm", choices=("mcmcp", "gsp"),
                   help="mcmcp (two faces) or gsp (a slider along a great circle; catch "
                        "trials off unless --catch-rate is given) (default: the config's "
                        "paradigm)")
    p.add_argument("--points", type=int, help="GSP: points on the slider's circle (default: "
                                              "the config's gsp.points)")
    p.add_argument("--checkpoint", help="VAE checkpoint (default: the config's "
                                        "model.checkpoint)")
    p.add_argument("--faces", help="face store, used to fit category densities (default: the "
                                   "config's model.faces)")
    p.add_argument("--truth", default="data",
                   help="latent agent's categories: 'data' (vMF fitted to the encoded training "
                        "faces), 'manual' (vMF(m_e, --truth-kappa), m_e = 7 Fibonacci points), "
                        "or a JSON file {emotion: VMFMixture.to_dict()}; 'manual' and a file "
                        "need no checkpoint unless the gate or agent does (default: data)")
    p.add_argument("--truth-kappa", type=float, default=30.0,
                   help="concentration of the manual categories (default: 30)")
    p.add_argument("--truth-components", type=int, default=1,
                   help="vMF components per emotion fitted to the faces (default: 1)")
    p.add_argument("--out", default="participants_data",
                   help="root folder for sub-*/ses-* (default: participants_data)")
    return p


def _overrides(args) -> dict:
    pairs = {
        "emotions": None if args.emotion is None else (
            list(EMOTIONS) if args.emotion == "all" else [args.emotion]),
        "chains.per_emotion": args.chains, "trials.per_chain": args.trials, "seed": args.seed,
        "gate.kind": args.gate, "gate.gamma": args.gamma, "chains.kappa_proposal":
        args.kappa_proposal, "trials.catch_rate": args.catch_rate,
        "model.checkpoint": args.checkpoint, "model.faces": args.faces,
        "paradigm": args.paradigm, "gsp.points": args.points,
    }
    if args.paradigm == "gsp" and args.catch_rate is None:
        pairs["trials.catch_rate"] = 0.0  # catch trials are two-face choices
    out: dict = {}
    for key, value in pairs.items():
        if value is not None:
            head, _, rest = key.partition(".")
            if rest:
                out.setdefault(head, {})[rest] = value
            else:
                out[head] = value
    agent = {k: v for k, v in (("kind", args.agent), ("exponent", args.exponent),
                               ("lapse", args.lapse), ("side_bias", args.side_bias))
             if v is not None}
    if agent:
        out["agent"] = agent
    return out


def open_model_parts(cfg, src: str, truth_arg: str) -> ModelParts | None:
    """The VAE parts this simulation needs, or None when it needs none (nothing is decoded or
    encoded). A missing checkpoint is a ConfigError saying what needed it."""
    from mcmcp.config import AgentSpec, ConfigError, open_model

    agent = cfg.agent or AgentSpec()
    truth_from_data = agent.kind == "latent" and truth_arg == "data"
    needs = [why for why, needed in (
        ("--truth data (categories fitted to the encoded faces)", truth_from_data),
        (f"agent.kind {agent.kind}", agent.kind != "latent"),
        (f"gate.kind {cfg.gate.kind}", cfg.gate.kind in ("vmf", "mixture", "classifier")),
        ("stimuli.identity (the children's reference faces)", bool(cfg.stimuli.identity)),
    ) if needed]
    if not needs:
        return None
    if not cfg.model.checkpoint.is_file():
        raise ConfigError(src, "model.checkpoint", str(cfg.model.checkpoint),
                          f"an existing VAE checkpoint, needed by {' and '.join(needs)}; train "
                          "one with `python -m vae.train`, or simulate without a model: "
                          "--truth manual (or a JSON file), a latent agent, gate none or manual")
    from mcmcp.identities import open_identities

    loaded = open_model(cfg, src)
    loaded.model.eval()
    codes = observer = faceset = None
    warnings = []
    # Faces: to fit the truth or the gate, or for class centroids when no truth gives them,
    # or for the children's reference faces.
    fit = (truth_from_data or cfg.gate.kind in ("vmf", "mixture")
           or (agent.kind != "latent"
               and (cfg.chains.start == "centroids" or cfg.trials.catch_rate > 0)))
    if fit or cfg.stimuli.identity:
        from mcmcp.config import ensure_default_faces, foreign_store_warning
        from mcmcp.densities import emotion_codes
        from vae.store import read_store, split_by_identity, store_hash

        ensure_default_faces(cfg.model.faces, loaded.config.image_size)
        faceset = read_store(cfg.model.faces)  # ValueError naming the file if unreadable
        foreign = foreign_store_warning(cfg.model.faces, store_hash(cfg.model.faces), loaded)
        if foreign is not None:
            warnings.append(f"{foreign}: the training split is drawn from ITS identities, so "
                            "the agent and gate densities may be fitted to faces the model "
                            "never saw in training, or miss some it did; use the checkpoint's "
                            "own face store")
            print(f"WARNING: {warnings[-1]}", file=sys.stderr, flush=True)
        if fit:
            tc = loaded.train_config or {}
            train_idx, _ = split_by_identity(faceset.identities, tc.get("val_fraction", 0.2),
                                             tc.get("split_seed", 0))
            codes = emotion_codes(loaded, faceset, train_idx)
    identities = open_identities(cfg, loaded, faceset, src)
    if agent.kind == "observer":
        from vae.observer import load_observer

        observer = load_observer(Path(cfg.model.checkpoint).parent / "observer.pt")
    return ModelParts(loaded, codes, observer, identities, tuple(warnings))


def ground_truth(truth_arg: str, cfg, model: ModelParts | None, kappa: float = 30.0,
                 components: int = 1) -> GroundTruth | None:
    """The latent agent's categories from --truth (None for other agents): 'data' (fitted to
    the encoded faces, `components` vMFs each), 'manual' (vMF(m_e, kappa) at 7 Fibonacci
    points) or a JSON file {emotion: VMFMixture.to_dict()}."""
    from mcmcp.config import AgentSpec, ConfigError
    from mcmcp.densities import VMFMixture, fit_densities

    if (cfg.agent or AgentSpec()).kind != "latent":
        return None
    if truth_arg == "data":
        kind = "vmf" if components == 1 else "mixture"
        return GroundTruth("data", fit_densities(model.codes, kind, components))
    if truth_arg == "manual":
        means = fibonacci_sphere(len(EMOTIONS), 3)
        return GroundTruth("manual", {e: VMFMixture.single(means[k], kappa)
                                      for k, e in enumerate(EMOTIONS)})
    path = Path(truth_arg)
    allowed = ("'data', 'manual' or an existing JSON file {emotion: {means, kappas, weights}} "
               "(VMFMixture.to_dict) with one latent size")
    try:
        data = json.loads(path.read_text())
        truth = {canonical_emotion(e): VMFMixture.from_dict(v) for e, v in data.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(path, "--truth", str(path), f"{allowed} ({err})") from None
    if not truth or len({dens.d for dens in truth.values()}) != 1:
        raise ConfigError(path, "--truth", str(path), allowed)
    return GroundTruth("file", truth)


def main(argv: list[str] | None = None) -> dict:
    """Simulate participants and write their sessions; returns a summary dict."""
    args = _parser().parse_args(argv)
    if args.participants < 1:
        raise SystemExit(f"--participants must be >= 1, got {args.participants}")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    # Parsed: now the heavy imports (the model's torch among them).
    from mcmcp.config import config_from_dict, load_config
    from vae.files import file_sha256

    src = args.config or "<simulate defaults>"
    pids = simulated_ids(args.participants)
    t0 = time.perf_counter()
    try:
        # The checkpoint is checked by open_model_parts, and only when the simulation needs the model.
        if args.config:
            cfg = load_config(args.config, _overrides(args), require_checkpoint=False)
        else:
            cfg = config_from_dict({"name": "simulate", **_overrides(args)}, src,
                                   require_checkpoint=False)
        model = open_model_parts(cfg, src, args.truth)
        truth = ground_truth(args.truth, cfg, model, args.truth_kappa, args.truth_components)
        # Record the config's model even when it was not opened: analysis decodes these codes
        # with it and checks the hash.
        sha = (model.loaded.sha256 if model is not None
               else file_sha256(cfg.model.checkpoint) if cfg.model.checkpoint.is_file() else None)
        study = simulate_study(cfg, args.out, pids, truth, model, sha, src, jobs=args.jobs,
                               progress=len(pids) > 1)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        # ConfigError is a ValueError; so are an unreadable face store or observer checkpoint
        raise SystemExit(f"error: {err}") from None
    C, P, n_shown = cfg.chains.per_emotion, len(pids), cfg.trials.per_chain
    summary = {"participants": P, "rows": study.n_rows, "chain_steps": study.chain_steps,
               "shown_chain_trials": P * C * n_shown * len(cfg.emotions),
               "simulate_seconds": study.simulate_seconds,
               "chain_trials_per_second": study.chain_steps / max(study.simulate_seconds, 1e-9),
               "total_seconds": time.perf_counter() - t0, "out": str(args.out)}
    agent = (cfg.agent.kind if cfg.agent else "latent")
    print(f"simulated {P} participant(s) x {len(cfg.emotions)} emotion(s) x {C} chains x "
          f"{n_shown} trials with agent {agent!r}, gate {cfg.gate.kind!r}: "
          f"{study.n_rows} rows, {study.chain_steps} chain steps in "
          f"{study.simulate_seconds:.2f} s of sampling ({summary['chain_trials_per_second']:,.0f} "
          f"chain-trials/s); written to {args.out} in {summary['total_seconds']:.1f} s total"
          + (f" with {args.jobs} processes" if args.jobs > 1 else ""))
    return summary


if __name__ == "__main__":
    main()
