"""CLI: simulated MCMCP and GSP studies, answered by synthetic agents and written like lab data.

    python -m mcmcp.simulate --emotion happy --agent latent --chains 64 --trials 500 --seed 1
    python -m mcmcp.simulate --truth manual --gate none --emotion all   # no model needed
    python -m mcmcp.simulate --config experiments/simulate_demo.yaml --participants 100 --jobs 2
    python -m mcmcp.simulate --truth manual --gate none --paradigm gsp --trials 30   # GSP sliders
    python -m mcmcp.simulate --config experiments/shared_demo.yaml --truth manual \
        --participants 200 --kappa-between 30 --dropout 0.2 --late 0.05   # shared chains

The work is done in the simulation wing: `mcmcp.sim.chains` (the vectorised simulator),
`mcmcp.sim.study` (participants, studies, designs) and, for across-participant designs
(`chains.across_participants`), `mcmcp.sim.shared_study` (people who differ take turns on the
study's shared chains through the engine and the chain store); this module parses and checks
the command line and calls them.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from mcmcp.sim.study import ground_truth, open_model_parts, simulate_study, simulated_ids
from vae.labels import EMOTIONS

if TYPE_CHECKING:
    pass


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
    p.add_argument("--kappa-between", type=float, default=30.0,
                   help="across-participant designs: how far people's own prototypes scatter "
                        "around the group's, a vMF concentration (default: 30)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="across-participant designs: share of participants who leave mid-way "
                        "(default: 0)")
    p.add_argument("--late", type=float, default=0.0,
                   help="across-participant designs: share of participants away past their "
                        "lease once (default: 0)")
    p.add_argument("--chain-store",
                   help="across-participant designs: the shared chains' database URL "
                        "(default: sqlite file OUT/shared_chains.sqlite)")
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


def main(argv: list[str] | None = None) -> dict:
    """Simulate participants and write their sessions; returns a summary dict."""
    args = _parser().parse_args(argv)
    if args.participants < 1:
        raise SystemExit(f"--participants must be >= 1, got {args.participants}")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    # Parsed: now the heavy imports (the model's torch among them).
    from mcmcp.agents import TABLE_CACHE
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
        if cfg.chains.across_participants:
            return _simulate_shared(args, cfg, pids, truth, model, sha, src, t0)
        study = simulate_study(cfg, args.out, pids, truth, model, sha, src, jobs=args.jobs,
                               progress=len(pids) > 1, table_cache=TABLE_CACHE)
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


def _simulate_shared(args, cfg, pids, truth, model, sha, src, t0) -> dict:
    """An across-participant study (mcmcp.sim.shared_study); its summary."""
    from pathlib import Path

    from mcmcp.config import ConfigError
    from mcmcp.sim.shared_study import simulate_shared_study
    from mcmcp.sim.study import make_design

    for flag, value in (("--dropout", args.dropout), ("--late", args.late)):
        if not 0.0 <= value <= 1.0:
            raise SystemExit(f"{flag} must be in [0, 1], got {value}")
    if not args.kappa_between > 0:
        raise SystemExit(f"--kappa-between must be > 0, got {args.kappa_between}")
    if truth is None:
        raise SystemExit("error: across-participant simulations need a latent agent (people "
                         "differ by their own categories around the --truth)")
    try:
        design = make_design(cfg, Path(args.out), truth, model, sha, src)
        study = simulate_shared_study(design, truth.densities, pids, args.chain_store,
                                      args.kappa_between, args.dropout, args.late)
    except (ValueError, FileExistsError, ConfigError) as err:
        raise SystemExit(f"error: {err}") from None
    summary = {"participants": len(pids), "left": len(study.left), "late": study.late,
               "turned_away": len(study.turned_away), "chain_store": study.store_url,
               "total_seconds": time.perf_counter() - t0, "out": str(args.out)}
    print(f"simulated {len(pids)} participant(s) on {cfg.chains.per_emotion} shared chains per "
          f"emotion x {len(cfg.emotions)} emotion(s): {len(study.left)} left mid-way, "
          f"{study.late} late answer(s) refused, {len(study.turned_away)} turned away (every "
          f"chain complete); chains in {study.store_url}, sessions in {args.out} "
          f"({summary['total_seconds']:.1f} s)")
    return summary


if __name__ == "__main__":
    main()
