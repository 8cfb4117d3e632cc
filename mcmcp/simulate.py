"""Simulated MCMCP studies: synthetic agents answer many chains at once, written like lab data.

The core, `simulate_chains`, moves n chains of one emotion in lockstep through the same pure
functions a lab session uses (`chain.propose`, `gate.Gate.screen`, `chain.step`,
`chain.adapt_kappa`) and returns every step as arrays. `study_rows` lays those steps out as
each participant's session (chains interleaved at random within one block per emotion, gate rows
before the trial they precede, catch trials mixed in) in the trial schema of `mcmcp/schema.py`.
`simulate_study` runs a whole study from an experiment config and writes it through
`mcmcp.store.SessionStore`, so simulated files are lab files; the CLI and the analysis tests both
go through it (one writer).

    python -m mcmcp.simulate --emotion happy --agent latent --chains 64 --trials 500 --seed 1
    python -m mcmcp.simulate --truth manual --gate none --emotion all   # no model needed

Randomness: block b's chains of all participants draw from default_rng([seed, session, b, 0])
and its layout and catch trials from default_rng([seed, session, b, 1]); the participants of one
run are simulated together, so a participant's data depend on --participants too (recorded).
Practice and repeat trials are not simulated (agents need no practice; repeat_rate must be 0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mcmcp import chain
from mcmcp.agents import Agent
from mcmcp.densities import VMFMixture
from mcmcp.gate import Gate
from mcmcp.schema import latent_columns
from mcmcp.sphere import fibonacci_sphere, sample_uniform
from vae.labels import EMOTIONS, canonical_emotion

SESSION = 1
# A gate that lets almost nothing through would loop for ever; past this many steps per shown
# trial the simulation stops with an error instead.
MAX_STEPS_PER_SHOWN = 1000
FIXATION = 0.5  # seconds between a response and the next onset in the simulated session clock


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


def simulate_chains(
    start: np.ndarray,
    n_shown: int,
    kappa_proposal: float | np.ndarray,
    agent: Agent,
    emotion: str,
    gate: Gate | None,
    rng: np.random.Generator,
    adapt: tuple[float, int] | None = None,
    guided: np.ndarray | None = None,
) -> Trace:
    """Run n chains from `start` (n, d) until each has had `n_shown` trials shown to `agent`.

    kappa_proposal: scalar or (n,); adapt: (target acceptance, burn_in iterations) for
    Robbins-Monro tuning of kappa during burn-in, or None. Gate-screened proposals are steps
    too (the chain stays) but are not shown; an annealed gate's γ follows each chain's shown
    trials so far over `n_shown` (as in the engine). guided: (n,) bool, the chains the gate
    screens (None: all; the others are unguided control chains). Sides are randomised here,
    50/50 per trial.
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
                f"{emotion}: after {len(rec['active'])} steps {int(active.sum())} chain(s) still "
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
            answer = agent.choose(emotion, np.where(m, cur, prop), np.where(m, prop, cur), rng)
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
            rec["gate_prob"].append(screen.prob)
            rec["log_g_current"].append(screen.log_g_current)
            rec["log_g_proposal"].append(screen.log_g_proposal)
            rec["gate_gamma"].append(np.where(guided, screen.gamma, np.nan))
            log_g = np.where(chose, screen.log_g_proposal, log_g)
        n_done += shown
        state = new
    out = {k: np.stack(v) for k, v in rec.items() if v}
    # Without a gate the gate fields are all NaN: a broadcast view, not T x n copies.
    for key in ("gate_prob", "log_g_current", "log_g_proposal", "gate_gamma"):
        out.setdefault(key, np.broadcast_to(np.nan, out["rt"].shape))
    return Trace(**out, accepted=out["chose_proposal"], final=state)


# ----------------------------------------------------------------------------- study layout


class Block(NamedTuple):
    """One emotion block of every participant: chains p*C .. p*C+C-1 belong to participant p."""

    emotion: str
    trace: Trace
    gate_gamma: float | None


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


def study_rows(
    blocks: list[Block],
    n_participants: int,
    chains_per_emotion: int,
    n_shown: int,
    agent: Agent,
    participant_ids: list[str],
    catch_rate: float,
    centroids: dict[str, np.ndarray] | None,
    seed: int,
    timestamp: str,
) -> list[list[dict]]:
    """Schema rows (one list per participant, in file order) for the simulated blocks.

    Within a block each participant's chains are interleaved in a random order; the gate rows of
    a chain come right before the shown trial they preceded. Catch trials (round(catch_rate *
    shown / (1 - catch_rate)) per block, target = the emotion's centroid, foil = another
    emotion's centroid) are mixed in when `centroids` has the emotion and another one.
    """
    C = chains_per_emotion
    per_participant: list[list[dict]] = [[] for _ in range(n_participants)]
    for b, block in enumerate(blocks):
        rng = np.random.default_rng([seed, SESSION, b, 1])
        foils = [] if centroids is None or block.emotion not in centroids else [
            e for e in centroids if e != block.emotion
        ]
        n_catch = round(catch_rate * C * n_shown / (1.0 - catch_rate)) if foils else 0
        events = _block_events(block, n_participants, C, n_shown, n_catch, b, rng)
        catch = _catch_rows(block.emotion, n_participants * n_catch, agent, centroids, foils, rng)
        for p in range(n_participants):
            rows = _event_rows(events[p], block, b, catch[p * n_catch : (p + 1) * n_catch], C)
            per_participant[p].extend(rows)
    for p, rows in enumerate(per_participant):
        _number_rows(rows, participant_ids[p], agent.name, timestamp)
    return per_participant


def _block_events(block, P, C, n_shown, n_catch, b, rng) -> list[list[tuple]]:
    """Per participant, the block's events in order: ("step", t, i) or ("catch", j)."""
    tr = block.trace
    episode = np.cumsum(tr.shown, axis=0) - tr.shown  # shown trials before step t, (T, n)
    total = C * n_shown + n_catch
    out = []
    for p in range(P):
        is_catch = np.zeros(total, dtype=bool)
        is_catch[rng.choice(total, n_catch, replace=False)] = True
        chain_slots = np.flatnonzero(~is_catch)
        order = rng.permutation(np.repeat(np.arange(C), n_shown))
        slot_of = chain_slots[np.argsort(order, kind="stable").reshape(C, n_shown)]
        t, i = np.nonzero(tr.active[:, p * C : (p + 1) * C])
        slot = slot_of[i, episode[t, p * C + i]]
        keys = np.concatenate([slot, np.flatnonzero(is_catch)])
        ties = np.concatenate([t, np.zeros(n_catch, dtype=np.int64)])
        what = np.concatenate([np.zeros(len(t), dtype=np.int64), np.ones(n_catch, dtype=np.int64)])
        ref_a = np.concatenate([t, np.arange(n_catch)])
        ref_b = np.concatenate([p * C + i, np.zeros(n_catch, dtype=np.int64)])
        perm = np.lexsort((ties, keys))
        out.append(list(zip(what[perm].tolist(), ref_a[perm].tolist(), ref_b[perm].tolist(),
                            strict=True)))
    return out


def _catch_rows(emotion, n, agent, centroids, foils, rng) -> list[dict]:
    """n catch trials of `emotion`: target centroid vs a random other emotion's centroid."""
    if n == 0:
        return []
    foil_names = [foils[k] for k in rng.integers(len(foils), size=n)]
    target = np.repeat(centroids[emotion][None, :], n, axis=0)
    foil = np.array([centroids[e] for e in foil_names])
    right_is_target = rng.random(n) < 0.5
    m = right_is_target[:, None]
    answer = agent.choose(emotion, np.where(m, foil, target), np.where(m, target, foil), rng)
    d = target.shape[1]
    rows = []
    for j in range(n):
        rows.append({
            "kind": "catch",
            **dict(zip(latent_columns("current", d), target[j].tolist(), strict=True)),
            **dict(zip(latent_columns("proposal", d), foil[j].tolist(), strict=True)),
            "left_role": "foil" if right_is_target[j] else "target",
            "right_role": "target" if right_is_target[j] else "foil",
            "response": "right" if answer.chose_right[j] else "left",
            "correct": bool(answer.chose_right[j] == right_is_target[j]),
            "foil_emotion": foil_names[j],
            "rt": float(answer.rt[j]),
        })
    return rows


def _event_rows(events, block: Block, b: int, catch: list[dict], C: int) -> list[dict]:
    """Rows (without participant/row/trial numbering) of one participant's block."""
    tr = block.trace
    d = tr.current.shape[-1]
    cur_cols, prop_cols = latent_columns("current", d), latent_columns("proposal", d)
    gamma = block.gate_gamma
    rows = []
    for what, a, i in events:
        if what == 1:
            rows.append({"block": b, "emotion": block.emotion, **catch[a]})
            continue
        t = a
        shown = bool(tr.shown[t, i])
        row = {
            "block": b, "emotion": block.emotion, "kind": "chain" if shown else "gate",
            "chain": b * C + i % C, "iteration": t,
            **dict(zip(cur_cols, tr.current[t, i].tolist(), strict=True)),
            **dict(zip(prop_cols, tr.proposal[t, i].tolist(), strict=True)),
            "kappa_proposal": float(tr.kappa[t, i]),
            "accepted": bool(tr.accepted[t, i]),
        }
        if gamma is not None and not np.isnan(tr.gate_gamma[t, i]):  # NaN: a control chain
            row.update(log_gate_current=float(tr.log_g_current[t, i]),
                       log_gate_proposal=float(tr.log_g_proposal[t, i]),
                       gate_gamma=float(tr.gate_gamma[t, i]), gate_prob=float(tr.gate_prob[t, i]))
        if shown:
            rip = bool(tr.right_is_proposal[t, i])
            chose = bool(tr.chose_proposal[t, i])
            row.update(left_role="current" if rip else "proposal",
                       right_role="proposal" if rip else "current",
                       response="right" if chose == rip else "left",
                       chose_proposal=chose, rt=float(tr.rt[t, i]))
        rows.append(row)
    return rows


def _number_rows(rows: list[dict], participant: str, agent_name: str, timestamp: str) -> None:
    """Fill participant, session, row, trial, onset, gap, agent, timestamp in place.

    The simulated session clock: each shown trial starts FIXATION s after the previous response.
    """
    trial, clock = 0, 0.0
    for k, row in enumerate(rows):
        row.update(participant=participant, session=SESSION, row=k, agent=agent_name,
                   timestamp=timestamp)
        if row["kind"] != "gate":
            trial += 1
            clock += FIXATION
            row.update(trial=trial, onset=clock, gap=FIXATION)
            clock += row["rt"]


# ----------------------------------------------------------------------------- whole studies


class GroundTruth(NamedTuple):
    """A latent agent's true categories, recorded in session.json for analysis to score against.

    kind: 'data' (fitted to the encoded training faces), 'manual' (vMF at 7 Fibonacci points)
    or 'file' (read from JSON); densities: emotion -> VMFMixture on S^(d-1).
    """

    kind: str
    densities: dict[str, VMFMixture]


class ModelParts(NamedTuple):
    """What a simulation takes from the VAE: `loaded` (vae.checkpoint.LoadedModel); the face store
    (vae.faceset.FaceSet) and its training indices, None when nothing is fitted to faces; the
    observer classifier, None unless the agent is an observer."""

    loaded: object
    faceset: object | None
    train_idx: np.ndarray | None
    observer: object | None


class Study(NamedTuple):
    """What `simulate_study` wrote: one session folder per participant, the number of rows, the
    chain steps simulated (shown or screened out) and the seconds the chains took."""

    folders: list[Path]
    n_rows: int
    chain_steps: int
    simulate_seconds: float


def simulate_study(
    cfg,
    root: str | Path,
    participants: list[str],
    truth: GroundTruth | None = None,
    model: ModelParts | None = None,
    checkpoint_sha256: str | None = None,
    source: str | Path = "<config>",
) -> Study:
    """Simulate `participants` (ids, simulated together) through the design of `cfg` and write
    each one's session under `root` with `SessionStore`, exactly as a lab session is written.

    cfg: `mcmcp.config.ExperimentConfig` (emotions, chains, trials, gate, agent (None = latent),
    seed). truth: the latent agent's categories (required for agent.kind latent, recorded as
    session.json `ground_truth`). model: required by classifier/observer agents, vmf/mixture/
    classifier gates and, without a truth, by catch trials and centroid starts.
    checkpoint_sha256: the model the codes belong to, recorded in session.json (None: none).
    Raises ConfigError (naming `source`) for a design that cannot be simulated, FileExistsError
    if a session folder exists (nothing is written then).
    """
    from mcmcp.agents import make_agent
    from mcmcp.config import AgentSpec, config_to_dict
    from mcmcp.densities import class_centroids, emotion_densities
    from mcmcp.gate import make_gate
    from mcmcp.store import SessionStore, session_dir, utc_now, versions

    existing = [str(f) for f in (session_dir(root, p, SESSION) for p in participants) if f.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing session folders: "
                              f"{', '.join(existing)}; choose another --out")
    agent_spec = cfg.agent or AgentSpec()
    loaded = None if model is None else model.loaded
    with_faces = model is not None and model.faceset is not None
    agent = make_agent(agent_spec, None if truth is None else truth.densities,
                       None if loaded is None else loaded.model,
                       None if model is None else model.observer)
    if truth is not None and truth.kind != "data":
        # Categories not made from faces: a clear exemplar of one is its own mode.
        centroids = {e: dens.mode() for e, dens in truth.densities.items()}
    elif with_faces:
        centroids = class_centroids(loaded, model.faceset, model.train_idx)
    else:
        centroids = None
    d = next(iter(truth.densities.values())).d if truth is not None else loaded.config.latent_dim
    _check_design(cfg, d, truth, loaded, centroids, source)
    gate_densities = None
    if cfg.gate.kind in ("vmf", "mixture") and with_faces:
        gate_densities = emotion_densities(loaded, model.faceset, model.train_idx, cfg.gate.kind,
                                           cfg.gate.components)

    C, P, n_shown = cfg.chains.per_emotion, len(participants), cfg.trials.per_chain
    adapt = None if cfg.chains.adapt is None else (cfg.chains.adapt.target,
                                                   cfg.chains.adapt.burn_in)
    blocks, t0, n_steps = [], time.perf_counter(), 0
    for b, emotion in enumerate(cfg.emotions):
        rng = np.random.default_rng([cfg.seed, SESSION, b, 0])
        gate = make_gate(cfg.gate, emotion, gate_densities,
                         None if loaded is None else loaded.model)
        start = np.tile(start_points(cfg.chains.start, C, d, emotion, centroids, rng), (P, 1))
        guided = np.tile(np.arange(C) < C - cfg.chains.unguided, P)  # controls: last of each
        trace = simulate_chains(start, n_shown, cfg.chains.kappa_proposal, agent, emotion, gate,
                                rng, adapt, guided)
        n_steps += int(trace.active.sum())
        blocks.append(Block(emotion, trace, None if gate is None else gate.gamma))
    t_sim = time.perf_counter() - t0
    rows = study_rows(blocks, P, C, n_shown, agent, list(participants), cfg.trials.catch_rate,
                      centroids, cfg.seed, utc_now())
    metadata = {
        "mode": "simulation",
        "config": config_to_dict(cfg),
        "checkpoint_sha256": checkpoint_sha256,
        "agent": {"name": agent.name, **vars(agent_spec)},
        "gate": vars(cfg.gate),
        "seeds": {"master": cfg.seed, "chains": "default_rng([seed, session, block, 0])",
                  "layout_and_catch": "default_rng([seed, session, block, 1])",
                  "simulated_together": list(participants)},
        "ground_truth": None if truth is None else {
            "kind": truth.kind,
            "densities": {e: dens.to_dict() for e, dens in truth.densities.items()},
            "prototypes": {e: dens.mode().tolist() for e, dens in truth.densities.items()},
        },
        "versions": versions(),
    }
    folders = []
    for pid, participant_rows in zip(participants, rows, strict=True):
        store = SessionStore.create(root, pid, SESSION, d, metadata)
        store.append_many(participant_rows)
        store.finish(n_rows=len(participant_rows))
        folders.append(store.folder)
    return Study(folders, sum(len(r) for r in rows), n_steps, t_sim)


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
    p.add_argument("--config", help="experiment YAML (default: built-in defaults)")
    p.add_argument("--emotion", help="one emotion, or 'all' (default: the config's emotions)")
    p.add_argument("--agent", choices=("latent", "classifier", "observer"))
    p.add_argument("--participants", type=int, default=1, help="number of simulated participants")
    p.add_argument("--chains", type=int, help="chains per emotion (chains.per_emotion)")
    p.add_argument("--trials", type=int, help="shown trials per chain (trials.per_chain)")
    p.add_argument("--seed", type=int)
    p.add_argument("--gate", choices=("none", "vmf", "mixture", "classifier"))
    p.add_argument("--gamma", type=float)
    p.add_argument("--lapse", type=float)
    p.add_argument("--exponent", type=float)
    p.add_argument("--side-bias", type=float)
    p.add_argument("--kappa-proposal", type=float)
    p.add_argument("--catch-rate", type=float)
    p.add_argument("--checkpoint", help="VAE checkpoint (model.checkpoint)")
    p.add_argument("--faces", help="face store (model.faces), used to fit category densities")
    p.add_argument("--truth", default="data",
                   help="latent agent's categories: 'data' (vMF fitted to the encoded training "
                        "faces), 'manual' (vMF(m_e, --truth-kappa), m_e = 7 Fibonacci points), "
                        "or a JSON file {emotion: VMFMixture.to_dict()}; 'manual' and a file "
                        "need no checkpoint unless the gate or agent does")
    p.add_argument("--truth-kappa", type=float, default=30.0)
    p.add_argument("--truth-components", type=int, default=1)
    p.add_argument("--out", default="participants_data", help="root folder for sub-*/ses-*")
    return p


def _overrides(args) -> dict:
    pairs = {
        "emotions": None if args.emotion is None else (
            list(EMOTIONS) if args.emotion == "all" else [args.emotion]),
        "chains.per_emotion": args.chains, "trials.per_chain": args.trials, "seed": args.seed,
        "gate.kind": args.gate, "gate.gamma": args.gamma, "chains.kappa_proposal":
        args.kappa_proposal, "trials.catch_rate": args.catch_rate,
        "model.checkpoint": args.checkpoint, "model.faces": args.faces,
    }
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


def _open_model(cfg, src: str, truth_arg: str) -> ModelParts | None:
    """The VAE parts this simulation needs, or None when it needs none (nothing is decoded or
    encoded). A missing checkpoint is a ConfigError saying what needed it."""
    from mcmcp.config import AgentSpec, ConfigError, open_model

    agent = cfg.agent or AgentSpec()
    truth_from_data = agent.kind == "latent" and truth_arg == "data"
    needs = [why for why, needed in (
        ("--truth data (categories fitted to the encoded faces)", truth_from_data),
        (f"agent.kind {agent.kind}", agent.kind != "latent"),
        (f"gate.kind {cfg.gate.kind}", cfg.gate.kind in ("vmf", "mixture", "classifier")),
    ) if needed]
    if not needs:
        return None
    if not cfg.model.checkpoint.is_file():
        raise ConfigError(src, "model.checkpoint", str(cfg.model.checkpoint),
                          f"an existing VAE checkpoint, needed by {' and '.join(needs)}; train "
                          "one with `python -m vae.train`, or simulate without a model: "
                          "--truth manual (or a JSON file), a latent agent, gate none or manual")
    loaded = open_model(cfg, src)
    loaded.model.eval()
    faceset = train_idx = observer = None
    # Faces: to fit the truth or the gate, or for class centroids when no truth gives them.
    if (truth_from_data or cfg.gate.kind in ("vmf", "mixture")
            or (agent.kind != "latent"
                and (cfg.chains.start == "centroids" or cfg.trials.catch_rate > 0))):
        from mcmcp.config import ensure_default_faces
        from vae.datasets import read_store, split_by_identity

        ensure_default_faces(cfg.model.faces, loaded.config.image_size)
        faceset = read_store(cfg.model.faces)
        tc = loaded.train_config or {}
        train_idx, _ = split_by_identity(faceset.identities, tc.get("val_fraction", 0.2),
                                         tc.get("split_seed", 0))
    if agent.kind == "observer":
        from vae.observer import load_observer

        observer = load_observer(Path(cfg.model.checkpoint).parent / "observer.pt")
    return ModelParts(loaded, faceset, train_idx, observer)


def _ground_truth(args, cfg, model: ModelParts | None) -> GroundTruth | None:
    """The latent agent's categories from --truth (None for other agents)."""
    from mcmcp.config import AgentSpec, ConfigError
    from mcmcp.densities import emotion_densities

    if (cfg.agent or AgentSpec()).kind != "latent":
        return None
    if args.truth == "data":
        kind = "vmf" if args.truth_components == 1 else "mixture"
        return GroundTruth("data", emotion_densities(model.loaded, model.faceset, model.train_idx,
                                                     kind, args.truth_components))
    if args.truth == "manual":
        means = fibonacci_sphere(len(EMOTIONS), 3)
        return GroundTruth("manual", {e: VMFMixture.single(means[k], args.truth_kappa)
                                      for k, e in enumerate(EMOTIONS)})
    path = Path(args.truth)
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
    from mcmcp.config import ConfigError, config_from_dict, load_config
    from vae.files import file_sha256

    args = _parser().parse_args(argv)
    if args.participants < 1:
        raise SystemExit(f"--participants must be >= 1, got {args.participants}")
    src = args.config or "<simulate defaults>"
    pids = [f"sim{k:03d}" for k in range(1, args.participants + 1)]
    t0 = time.perf_counter()
    try:
        # The checkpoint is checked by _open_model, and only when the simulation needs the model.
        if args.config:
            cfg = load_config(args.config, _overrides(args), require_checkpoint=False)
        else:
            cfg = config_from_dict({"name": "simulate", **_overrides(args)}, src,
                                   require_checkpoint=False)
        model = _open_model(cfg, src, args.truth)
        truth = _ground_truth(args, cfg, model)
        # Record the config's model even when it was not opened: analysis decodes these codes
        # with it and checks the hash.
        sha = (model.loaded.sha256 if model is not None
               else file_sha256(cfg.model.checkpoint) if cfg.model.checkpoint.is_file() else None)
        study = simulate_study(cfg, args.out, pids, truth, model, sha, src)
    except (ConfigError, FileExistsError, FileNotFoundError) as err:
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
          f"{study.simulate_seconds:.2f} s ({summary['chain_trials_per_second']:,.0f} "
          f"chain-trials/s); written to {args.out} in {summary['total_seconds']:.1f} s total")
    return summary


if __name__ == "__main__":
    main()
