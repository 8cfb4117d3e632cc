"""Simulated MCMCP studies: synthetic agents answer many chains at once, written like lab data.

The core, `simulate_chains`, moves n chains of one emotion in lockstep through the same pure
functions a lab session uses (`chain.propose`, `gate.Gate.screen`, `chain.step`,
`chain.adapt_kappa`) and returns every step as arrays. `study_rows` lays those steps out as
each participant's session (chains interleaved at random within one block per emotion, gate rows
before the trial they precede, catch trials mixed in) in the trial schema of `mcmcp/schema.py`;
the CLI writes them through `mcmcp.store.SessionStore`, so simulated files are lab files.

    python -m mcmcp.simulate --emotion happy --agent latent --chains 64 --trials 500 --seed 1

Randomness: block b's chains of all participants draw from default_rng([seed, session, b, 0])
and its layout and catch trials from default_rng([seed, session, b, 1]); the participants of one
run are simulated together, so a participant's data depend on --participants too (recorded).
Practice and repeat trials are not simulated (agents need no practice; repeat_rate must be 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mcmcp import chain
from mcmcp.agents import Agent
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
    current, proposal (T, n, d); kappa, gate_prob, log_g_current, log_g_proposal, rt (T, n)
    float (gate fields NaN without a gate, rt NaN when not shown); active, shown (passed the gate),
    right_is_proposal, chose_proposal, accepted (T, n) bool (a chain moves iff the proposal was
    chosen, so accepted is chose_proposal). `final` is the last ChainState.
    """

    current: np.ndarray
    proposal: np.ndarray
    kappa: np.ndarray
    gate_prob: np.ndarray
    log_g_current: np.ndarray
    log_g_proposal: np.ndarray
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
) -> Trace:
    """Run n chains from `start` (n, d) until each has had `n_shown` trials shown to `agent`.

    kappa_proposal: scalar or (n,); adapt: (target acceptance, burn_in iterations) for
    Robbins-Monro tuning of kappa during burn-in, or None. Gate-screened proposals are steps
    too (the chain stays) but are not shown. Sides are randomised here, 50/50 per trial.
    """
    state = chain.init(start, kappa_proposal)
    n = len(start)
    n_done = np.zeros(n, dtype=np.int64)
    log_g = gate.density.logpdf(state.position) if gate is not None else None
    nan = np.full(n, np.nan)
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
            screen = gate.screen(state.position, proposal, rng, log_g)
            shown = active & screen.passed
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
            log_g = np.where(chose, screen.log_g_proposal, log_g)
        n_done += shown
        state = new
    out = {k: np.stack(v) for k, v in rec.items() if v}
    # Without a gate the gate fields are all NaN: a broadcast view, not T x n copies.
    for key in ("gate_prob", "log_g_current", "log_g_proposal"):
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
        if gamma is not None:
            row.update(log_gate_current=float(tr.log_g_current[t, i]),
                       log_gate_proposal=float(tr.log_g_proposal[t, i]),
                       gate_gamma=gamma, gate_prob=float(tr.gate_prob[t, i]))
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


# ----------------------------------------------------------------------------- CLI


def _ground_truth(args, loaded, faceset, train_idx) -> tuple[str, dict | None]:
    """(kind, emotion -> VMFMixture) of the latent agent's categories, or (kind, None)."""
    from mcmcp.densities import VMFMixture, emotion_densities

    if args.truth == "data":
        if loaded is None or faceset is None:
            return "data", None
        kind = "vmf" if args.truth_components == 1 else "mixture"
        return "data", emotion_densities(loaded, faceset, train_idx, kind, args.truth_components)
    if args.truth == "manual":
        means = fibonacci_sphere(len(EMOTIONS), 3)
        return "manual", {
            e: VMFMixture.single(means[k], args.truth_kappa) for k, e in enumerate(EMOTIONS)
        }
    data = json.loads(Path(args.truth).read_text())
    return "file", {canonical_emotion(e): VMFMixture.from_dict(v) for e, v in data.items()}


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
                        "or a JSON file {emotion: VMFMixture.to_dict()}")
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


def main(argv: list[str] | None = None) -> dict:
    """Simulate participants and write their sessions; returns a summary dict."""
    from mcmcp.agents import make_agent
    from mcmcp.config import AgentSpec, config_from_dict, config_to_dict, load_config, open_model
    from mcmcp.densities import class_centroids, emotion_densities
    from mcmcp.gate import make_gate
    from mcmcp.store import SessionStore, session_dir, utc_now

    args = _parser().parse_args(argv)
    if args.participants < 1:
        raise SystemExit(f"--participants must be >= 1, got {args.participants}")
    src = args.config or "<simulate defaults>"
    overrides = _overrides(args)
    if args.config:
        cfg = load_config(args.config, overrides)
    else:
        cfg = config_from_dict({"name": "simulate", **overrides}, src)
    if cfg.trials.repeat_rate > 0:
        raise SystemExit(f"{src}: trials.repeat_rate must be 0 for simulations "
                         f"(got {cfg.trials.repeat_rate}); repeat trials are not simulated")
    agent_spec = cfg.agent or AgentSpec()
    pids = [f"sim{k:03d}" for k in range(1, args.participants + 1)]
    existing = [str(session_dir(args.out, p, SESSION)) for p in pids
                if session_dir(args.out, p, SESSION).exists()]
    if existing:
        raise SystemExit(f"refusing to overwrite existing session folders: {', '.join(existing)}; "
                         "choose another --out")

    loaded = faceset = train_idx = observer = None
    if (args.truth == "data" or agent_spec.kind != "latent"
            or cfg.gate.kind in ("vmf", "mixture", "classifier")):
        loaded = open_model(cfg, src)
        loaded.model.eval()
    if loaded is not None and (args.truth == "data" or cfg.gate.kind in ("vmf", "mixture")
                               or cfg.chains.start == "centroids" or cfg.trials.catch_rate > 0):
        from vae.datasets import read_store, split_by_identity

        faceset = read_store(cfg.model.faces)
        tc = loaded.train_config or {}
        train_idx, _ = split_by_identity(faceset.identities, tc.get("val_fraction", 0.2),
                                         tc.get("split_seed", 0))
    if agent_spec.kind == "observer":
        from vae.observer import load_observer

        observer = load_observer(Path(cfg.model.checkpoint).parent / "observer.pt")
    truth_kind, truth = (_ground_truth(args, loaded, faceset, train_idx)
                         if agent_spec.kind == "latent" else ("none", None))
    if truth_kind in ("manual", "file"):
        centroids = {e: dens.mode() for e, dens in truth.items()}
    else:
        centroids = None if faceset is None else class_centroids(loaded, faceset, train_idx)
    if cfg.chains.start == "centroids" and centroids is None:
        raise SystemExit(f"{src}: chains.start 'centroids' needs class centroids: give a "
                         "checkpoint and face store (model.checkpoint, model.faces)")
    gate_densities = None
    if cfg.gate.kind in ("vmf", "mixture"):
        gate_densities = emotion_densities(loaded, faceset, train_idx, cfg.gate.kind,
                                           cfg.gate.components)
    agent = make_agent(agent_spec, truth, None if loaded is None else loaded.model, observer)
    d = next(iter(truth.values())).d if truth else loaded.config.latent_dim

    C, P, n_shown = cfg.chains.per_emotion, args.participants, cfg.trials.per_chain
    adapt = None if cfg.chains.adapt is None else (cfg.chains.adapt.target,
                                                   cfg.chains.adapt.burn_in)
    blocks, t0, n_steps = [], time.perf_counter(), 0
    for b, emotion in enumerate(cfg.emotions):
        rng = np.random.default_rng([cfg.seed, SESSION, b, 0])
        gate = make_gate(cfg.gate, emotion, gate_densities,
                         None if loaded is None else loaded.model)
        start = np.tile(start_points(cfg.chains.start, C, d, emotion, centroids, rng), (P, 1))
        trace = simulate_chains(start, n_shown, cfg.chains.kappa_proposal, agent, emotion, gate,
                                rng, adapt)
        n_steps += int(trace.active.sum())
        blocks.append(Block(emotion, trace, None if gate is None else gate.gamma))
    t_sim = time.perf_counter() - t0
    rows = study_rows(blocks, P, C, n_shown, agent, pids, cfg.trials.catch_rate, centroids,
                      cfg.seed, utc_now())
    metadata = {
        "mode": "simulation",
        "config": config_to_dict(cfg),
        "checkpoint_sha256": None if loaded is None else loaded.sha256,
        "agent": {"name": agent.name, **vars(agent_spec)},
        "gate": vars(cfg.gate),
        "seeds": {"master": cfg.seed, "chains": "default_rng([seed, session, block, 0])",
                  "layout_and_catch": "default_rng([seed, session, block, 1])",
                  "simulated_together": pids},
        "ground_truth": None if truth is None else {
            "kind": truth_kind,
            "densities": {e: dens.to_dict() for e, dens in truth.items()},
            "prototypes": {e: dens.mode().tolist() for e, dens in truth.items()},
        },
        "versions": _versions(),
    }
    for pid, participant_rows in zip(pids, rows, strict=True):
        store = SessionStore.create(args.out, pid, SESSION, d, metadata)
        store.append_many(participant_rows)
        store.finish(n_rows=len(participant_rows))
    n_total = sum(len(r) for r in rows)
    summary = {"participants": P, "rows": n_total, "chain_steps": n_steps,
               "shown_chain_trials": P * C * n_shown * len(cfg.emotions),
               "simulate_seconds": t_sim,
               "chain_trials_per_second": n_steps / max(t_sim, 1e-9),
               "total_seconds": time.perf_counter() - t0, "out": str(args.out)}
    print(f"simulated {P} participant(s) x {len(cfg.emotions)} emotion(s) x {C} chains x "
          f"{n_shown} trials with agent {agent.name!r}, gate {cfg.gate.kind!r}: "
          f"{n_total} rows, {n_steps} chain steps in {t_sim:.2f} s "
          f"({summary['chain_trials_per_second']:,.0f} chain-trials/s); "
          f"written to {args.out} in {summary['total_seconds']:.1f} s total")
    return summary


def _versions() -> dict:
    import scipy
    import torch

    import mcmcp

    return {"mcmcp": getattr(mcmcp, "__version__", "unknown"), "numpy": np.__version__,
            "scipy": scipy.__version__, "torch": torch.__version__,
            "python": sys.version.split()[0]}


if __name__ == "__main__":
    main()
