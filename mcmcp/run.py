"""CLI for lab sessions: `python -m mcmcp.run --emotion happy --participant P001`.

One participant-session: participant info, instructions, practice, one block per emotion
(chains interleaved, catch trials, breaks), an end screen; every response saved at once under
`<out>/sub-<participant>/ses-<NN>/`. `--agent` lets a synthetic agent answer (in the window, or
headless with `--no-window`, which never imports PsychoPy). `--resume` continues a session that
was interrupted, exactly where it stopped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from mcmcp.config import (
    AGENT_KINDS,
    ROOT,
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    open_model,
)
from mcmcp.engine import Engine
from mcmcp.render import Renderer
from mcmcp.session import HeadlessDisplay, run_session
from mcmcp.store import (
    SessionStore,
    session_dir,
    validate_participant_id,
    validate_session,
    versions,
)


def _log(line: str) -> None:
    print(line, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mcmcp.run", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path,
                   help="experiment YAML (default: experiments/<first --emotion>.yaml)")
    p.add_argument("--emotion", nargs="+", metavar="EMOTION",
                   help="emotion(s), one block each in this order (overrides the config)")
    p.add_argument("--participant", help="participant id (letters, digits, '-', '_'; no names)")
    p.add_argument("--session", type=int, default=None, help="session number 1..99 (default 1)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted session (with the config it was started with)")
    win = p.add_mutually_exclusive_group()
    win.add_argument("--fullscreen", dest="fullscreen", action="store_true", default=None)
    win.add_argument("--windowed", dest="fullscreen", action="store_false")
    win.add_argument("--no-window", action="store_true",
                     help="no window at all (needs --agent or an agent in the config)")
    p.add_argument("--agent", choices=AGENT_KINDS, help="a synthetic agent answers")
    p.add_argument("--agent-delay", type=float, default=0.0, metavar="SECONDS",
                   help="headless agents wait this long per trial (pilots at a human pace)")
    p.add_argument("--trials", type=int, metavar="N", help="shown trials per chain (override)")
    p.add_argument("--out", type=Path, default=Path("participants_data"),
                   help="data folder (default participants_data/)")
    p.add_argument("--screenshot", type=Path, metavar="PNG",
                   help="save the first chain trial's screen to this PNG")
    return p


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ExperimentConfig:
    overrides: dict = {}
    if args.emotion:
        overrides["emotions"] = args.emotion
    if args.trials is not None:
        overrides["trials.per_chain"] = args.trials
    if args.agent:
        overrides["agent"] = {"kind": args.agent}
    if args.fullscreen is not None:
        overrides["display.fullscreen"] = args.fullscreen
    path = args.config
    if path is None:
        if not args.emotion:
            parser.error("give --config experiments/<name>.yaml or --emotion")
        path = ROOT / "experiments" / f"{args.emotion[0].lower()}.yaml"
    return load_config(path, overrides)


def _materials(cfg: ExperimentConfig, loaded):
    """(gates, centroids, agent) for the session, fitting only what the config needs."""
    from mcmcp.agents import make_agent
    from mcmcp.densities import class_centroids, emotion_densities
    from mcmcp.gate import make_gate

    need_faces = (
        cfg.gate.kind in ("vmf", "mixture")
        or cfg.trials.catch_rate > 0
        or cfg.chains.start == "centroids"
        or (cfg.agent is not None and cfg.agent.kind == "latent")
    )
    densities, agent_densities, centroids, faces_hash = None, None, None, None
    if need_faces:
        from vae.datasets import read_store, split_by_identity, store_hash

        try:
            faceset = read_store(cfg.model.faces)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError("<config>", "model.faces", str(cfg.model.faces),
                              f"a readable face store, build it with `python -m vae.data build` "
                              f"({err})") from None
        faces_hash = store_hash(cfg.model.faces)
        tc = loaded.train_config or {}
        if "val_fraction" in tc and faces_hash == loaded.data_hash:
            # the faces the model was trained on: fit densities to the training split only
            idx, _ = split_by_identity(faceset.identities, tc["val_fraction"],
                                       tc.get("split_seed", 0))
        else:
            idx = None
        if cfg.gate.kind in ("vmf", "mixture"):
            densities = emotion_densities(loaded, faceset, idx, kind=cfg.gate.kind,
                                          n_components=cfg.gate.components, seed=cfg.seed)
        if cfg.agent is not None and cfg.agent.kind == "latent":
            agent_densities = (densities if cfg.gate.kind == "vmf"
                               else emotion_densities(loaded, faceset, idx, kind="vmf"))
        centroids = class_centroids(loaded, faceset, idx)
    gates = {e: make_gate(cfg.gate, e, densities, loaded.model) for e in cfg.emotions}
    gates = {e: g for e, g in gates.items() if g is not None}
    agent = None
    if cfg.agent is not None:
        observer = None
        if cfg.agent.kind == "observer":
            from vae.observer import load_observer

            observer = load_observer(ROOT / "vae" / "checkpoints" / "observer.pt")
        agent = make_agent(cfg.agent, densities=agent_densities, model=loaded.model,
                           observer=observer)
    return gates, centroids, agent, faces_hash


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _main(args, parser)
    except (ConfigError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    torch.set_num_threads(1)  # tiny decoder: one thread keeps latency flat next to the window
    participant, session = args.participant, args.session
    if args.resume:
        if participant is None:
            parser.error("--resume needs --participant (and --session if not 1)")
        store = SessionStore.resume(args.out, participant, session or 1)
        if store.metadata.get("status") == "complete":
            print(f"session {store.folder} is already complete", flush=True)
            return 0
        cfg = config_from_dict(store.metadata["config"], store.session_path)
        _log(f"resuming {store.folder} with the config it started with")
    else:
        store = None
        cfg = _config(args, parser)
    agent_kind = args.agent or (cfg.agent.kind if cfg.agent else None)
    if args.no_window and agent_kind is None:
        parser.error("--no-window needs a synthetic agent: add --agent latent|classifier|observer")
    if participant is None:
        if args.no_window or agent_kind is not None:
            parser.error("--participant is required (e.g. --participant P001)")
        from mcmcp.screen import ask_participant

        got = ask_participant(None, session)
        if got is None:
            print("cancelled", flush=True)
            return 1
        participant, session = got
    try:
        validate_participant_id(participant)
        session = validate_session(session or 1)
    except ValueError as err:
        parser.error(str(err))
    if store is None and session_dir(args.out, participant, session).exists():
        raise FileExistsError(
            f"session folder {session_dir(args.out, participant, session)} already exists; it is "
            "never overwritten. Use --resume to continue it, or choose another --session"
        )

    loaded = open_model(cfg, args.config or "<config>")
    d = loaded.config.latent_dim
    gates, centroids, agent, faces_hash = _materials(cfg, loaded)

    if args.no_window:
        display = HeadlessDisplay(_log, delay=args.agent_delay)
    else:
        from mcmcp.screen import Screen

        display = Screen(cfg.display, loaded.config.image_size, _log, args.screenshot)
    try:
        if store is None:
            store = SessionStore.create(args.out, participant, session, d, {
                "config": config_to_dict(cfg),
                "checkpoint_sha256": loaded.sha256,
                "faces_sha256": faces_hash,
                "versions": versions(),
                "seeds": {"seed": cfg.seed, "streams": "[seed, session, stream, counter]"},
                "agent": agent.name if agent is not None else "human",
                "gate": config_to_dict(cfg)["gate"],
                "window": None if args.no_window else "fullscreen" if cfg.display.fullscreen
                else "windowed",
            })
        rows = store.read_rows()
        engine = Engine(cfg, d, participant, session, gates, centroids,
                        agent.name if agent is not None else "human", rows)
        store.update(refresh_rate=getattr(display, "refresh_rate", None),
                     versions=versions())
        _log(f"session {store.folder}: {len(engine.schedule)} shown trials, "
             f"{engine.next_index} done")
        status = "error"
        try:
            status = run_session(cfg, engine, store, display, Renderer(loaded.model), agent, _log)
        except KeyboardInterrupt:
            status = "aborted"
        finally:
            frames = {} if args.no_window else {"frame_timing": display.frame_stats()}
            store.finish(status=status, rows=engine.n_rows,
                         shown_trials=engine.next_index - len(engine.pending), **frames)
    finally:
        if not args.no_window:
            display.close()
    gaps = store.read_rows()["gap"].dropna().to_numpy(dtype=float)
    summary = f"{status}: {store.trials_path}"
    if len(gaps):
        summary += (f"; gap response->next onset median {statistics.median(gaps) * 1e3:.1f} ms, "
                    f"worst {np.max(gaps) * 1e3:.1f} ms")
    _log(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
