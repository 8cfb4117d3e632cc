"""CLI for lab sessions: `python -m mcmcp.run --emotion happy --participant P001`.

One participant-session: participant info, instructions, practice, one block per emotion
(chains interleaved, catch trials, breaks), an end screen; every response saved at once under
`<out>/sub-<participant>/ses-<NN>/`. `--agent` lets a synthetic agent answer (in the window, or
headless with `--no-window`, which never imports PsychoPy). `--resume` continues a session that
was interrupted, exactly where it stopped.

Order of work: every flag, the config, the participant id, the session folder, the checkpoint and
the face store are checked before anything is written, so a wrong command changes nothing. Only
then is the session created (or its new run recorded) and the window used. Heavy modules (torch,
pandas, PsychoPy) are imported after the command line is parsed, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from mcmcp.config import AGENT_KINDS, ROOT, ConfigError


class Refused(Exception):
    """A command that cannot run as given; the message says why and what to do instead."""


def _log(line: str) -> None:
    print(line, flush=True)


def _warn(line: str) -> None:
    print(f"WARNING: {line}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- command line


def _participant(text: str) -> str:
    from mcmcp.store import validate_participant_id  # light: store is imported lazily below

    try:
        return validate_participant_id(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _session(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= 99:
        raise argparse.ArgumentTypeError(f"session number {text!r} is not allowed: use 1..99")
    return value


def _delay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 60.0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a delay: seconds in [0, 60]")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a wrong command gets one line (the usage block is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m mcmcp.run", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, metavar="YAML",
                   help="experiment YAML (default: experiments/<first --emotion>.yaml)")
    p.add_argument("--emotion", nargs="+", metavar="EMOTION",
                   help="emotion(s), one block each (default: the config's emotions)")
    p.add_argument("--participant", type=_participant, metavar="ID",
                   help="participant id: letters, digits, '-', '_', no names (default: ask in a "
                        "dialog; required with --agent or --no-window)")
    p.add_argument("--session", type=_session, default=None, metavar="N",
                   help="session number 1..99 (default 1)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted session with the config it started with "
                        "(default: start a new session)")
    p.add_argument("--accept-changed-inputs", action="store_true",
                   help="with --resume: go on although the checkpoint or face store differs from "
                        "the one the session used so far; the new hashes are recorded in "
                        "session.json runs (default: refuse)")
    win = p.add_mutually_exclusive_group()
    win.add_argument("--fullscreen", dest="fullscreen", action="store_true", default=None,
                     help="full-screen window (default: the config's display.fullscreen)")
    win.add_argument("--windowed", dest="fullscreen", action="store_false",
                     help="a window of display.window_size (default: the config's choice)")
    win.add_argument("--no-window", action="store_true",
                     help="no window at all; needs --agent or an agent in the config "
                          "(default: a window)")
    p.add_argument("--agent", choices=AGENT_KINDS,
                   help="a synthetic agent answers (default: the config's agent, else a person)")
    p.add_argument("--agent-delay", type=_delay, default=0.0, metavar="SECONDS",
                   help="with --no-window: wait this long per trial, 0..60 (default 0)")
    p.add_argument("--trials", type=_positive, metavar="N",
                   help="shown trials per chain (default: the config's trials.per_chain)")
    p.add_argument("--out", type=Path, default=Path("participants_data"), metavar="DIR",
                   help="data folder (default participants_data/)")
    p.add_argument("--screenshot", type=Path, metavar="PNG",
                   help="save the first chain trial's screen to this PNG (default: none)")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    """Config keys the flags set (dotted paths)."""
    out: dict = {}
    if args.emotion:
        out["emotions"] = args.emotion
    if args.trials is not None:
        out["trials.per_chain"] = args.trials
    if args.agent:
        out["agent"] = {"kind": args.agent}
    if args.fullscreen is not None:
        out["display.fullscreen"] = args.fullscreen
    return out


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from mcmcp.config import load_config

    path = args.config
    if path is None:
        if not args.emotion:
            parser.error("give --config experiments/<name>.yaml or --emotion")
        path = ROOT / "experiments" / f"{args.emotion[0].lower()}.yaml"
    return load_config(path, _overrides(args))


def _resumed_config(args: argparse.Namespace, store):
    """The config the session started with; flags may change the window, not the design."""
    from mcmcp.config import config_from_dict, merge_overrides

    saved = store.metadata.get("config")
    if not isinstance(saved, dict):
        raise Refused(f"{store.session_path} holds no config; it is not a lab session")
    cfg = config_from_dict(saved, store.session_path)
    design = {k: v for k, v in _overrides(args).items() if k != "display.fullscreen"}
    if design and config_from_dict(merge_overrides(saved, design), store.session_path) != cfg:
        raise Refused(f"--resume continues {store.folder} with the config it started with; drop "
                      "--emotion / --trials / --agent (or start a new --session)")
    if args.fullscreen is not None:
        cfg = config_from_dict(merge_overrides(saved, {"display.fullscreen": args.fullscreen}),
                               store.session_path)
    return cfg


# ----------------------------------------------------------------------------- inputs


def _need_faces(cfg) -> bool:
    return (cfg.gate.kind in ("vmf", "mixture") or cfg.trials.catch_rate > 0
            or cfg.chains.start == "centroids"
            or (cfg.agent is not None and cfg.agent.kind == "latent")
            or bool(cfg.stimuli.identity))  # the children's reference faces


def _faces(cfg, loaded, source):
    """(faceset, content hash, training-split indices or None, warnings) for the config's face
    store; builds the default store on first use."""
    from mcmcp.config import ensure_default_faces, foreign_store_warning
    from vae.store import read_store, split_by_identity, store_hash

    path = cfg.model.faces
    ensure_default_faces(path, loaded.config.image_size)
    try:
        faceset = read_store(path)
        faces_hash = store_hash(path)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(source, "model.faces", str(path),
                          f"a readable face store; build one with `python -m vae.data build` "
                          f"({type(err).__name__}: {str(err)[:200]})") from None
    warnings = []
    tc = loaded.train_config or {}
    foreign = foreign_store_warning(path, faces_hash, loaded)
    if foreign is None and "val_fraction" in tc:
        # the faces the model was trained on: fit densities to the training identities only
        idx, _ = split_by_identity(faceset.identities, tc["val_fraction"], tc.get("split_seed", 0))
    else:
        idx = None
        warnings.append(
            f"{foreign or f'checkpoint {loaded.path} records no training split'}: the "
            "gatekeeper, catch-trial and agent densities are fitted to ALL its faces, held-out "
            "validation identities included; use the checkpoint's own face store")
    return faceset, faces_hash, idx, warnings


def _materials(cfg, loaded, faces, identities=None):
    """(gates, centroids, agent) for the session, fitting only what the config needs; an image
    agent draws the session's children from `identities` (mcmcp.identities.Identities)."""
    from mcmcp.agents import make_agent
    from mcmcp.densities import class_centroids, emotion_densities
    from mcmcp.gate import make_gate

    densities, agent_densities, centroids = None, None, None
    if faces is not None:
        faceset, _, idx, _ = faces
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
                           observer=observer, identities=identities)
    return gates, centroids, agent


def session_materials(cfg, loaded, source="<config>"):
    """What a session of `cfg` fits from the face store, for lab and online sessions alike:
    (gates, centroids, agent, faces content hash or None, warnings, identities) where
    identities are the children the faces may show (`mcmcp.identities.open_identities`)."""
    from mcmcp.identities import open_identities

    faces = _faces(cfg, loaded, source) if _need_faces(cfg) else None
    identities = open_identities(cfg, loaded, None if faces is None else faces[0], source)
    gates, centroids, agent = _materials(cfg, loaded, faces, identities)
    return (gates, centroids, agent, *((None, []) if faces is None else (faces[1], faces[3])),
            identities)


def _check_resumed_inputs(store, loaded, faces_hash, accept: bool) -> bool:
    """Refuse a resume whose checkpoint or face store changed (both hashes named), unless
    `accept`; True if something changed (and was accepted)."""
    meta = store.metadata
    last = (meta.get("runs") or [{}])[-1]
    changed = []
    for name, now, path in (("checkpoint", loaded.sha256, loaded.path),
                            ("faces", faces_hash, meta.get("config", {}).get("model", {})
                             .get("faces"))):
        before = last.get(f"{name}_sha256", meta.get(f"{name}_sha256"))
        if before is not None and now != before:
            changed.append(f"{name} {path}: sha256 was {before}, is now {now}")
    if loaded.config.latent_dim != store.d:
        raise Refused(f"checkpoint {loaded.path} has latent size {loaded.config.latent_dim} but "
                      f"{store.folder} was recorded in d={store.d}; it cannot be resumed with it")
    if changed and not accept:
        raise Refused(f"cannot resume {store.folder}: its inputs changed since it started "
                      f"({'; '.join(changed)}); restore them, or pass --accept-changed-inputs to "
                      "go on with the new ones (recorded in session.json)")
    return bool(changed)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mcmcp.store import DISK_FULL, SessionBusy

    try:
        return _main(args, parser)
    except (ConfigError, Refused, SessionBusy, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except OSError as err:
        if err.errno in DISK_FULL:
            print(f"error: the disk is full ({err.strerror}: {err.filename}); nothing answered is "
                  "lost: free some space, then run the same command with --resume",
                  file=sys.stderr, flush=True)
        else:
            print(f"error: {err.strerror or err} ({err.filename})", file=sys.stderr, flush=True)
        return 2


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from mcmcp.store import SessionStore, session_dir, session_exists

    if args.accept_changed_inputs and not args.resume:
        parser.error("--accept-changed-inputs only applies with --resume")
    participant, session = args.participant, args.session or 1
    store = None
    if args.resume:
        if participant is None:
            parser.error("--resume needs --participant (and --session if not 1)")
        try:
            store = SessionStore.open(args.out, participant, session)  # locks; writes nothing
        except ValueError as err:  # a damaged session.json
            raise Refused(str(err)) from None
    try:
        if store is not None:
            if store.metadata.get("status") == "complete":
                print(f"session {store.folder} is already complete", flush=True)
                return 0
            cfg = _resumed_config(args, store)
            _log(f"resuming {store.folder} with the config it started with")
        else:
            cfg = _config(args, parser)
        if args.no_window and cfg.agent is None:
            parser.error("--no-window needs a synthetic agent: add --agent "
                         "latent|classifier|observer")
        if participant is None:
            if args.no_window or cfg.agent is not None:
                parser.error("--participant is required (e.g. --participant P001)")
            participant, session = _ask(args.session)
            if participant is None:
                print("cancelled", flush=True)
                return 1
        if store is None and session_exists(args.out, participant, session):
            raise FileExistsError(
                f"session folder {session_dir(args.out, participant, session)} already exists; "
                "it is never overwritten. Use --resume to continue it, or choose another --session"
            )
        return _run(args, cfg, participant, session, store)
    finally:
        if store is not None:
            store.close()


def _ask(session: int | None) -> tuple[str | None, int]:
    """Participant id and session from the dialog (or the terminal), validated."""
    from mcmcp.screen import ask_participant
    from mcmcp.store import validate_participant_id

    try:
        got = ask_participant(session, _log)
    except EOFError:
        raise Refused("no participant id was given: pass --participant ID") from None
    if got is None:
        return None, session or 1
    try:
        return validate_participant_id(got[0]), _session(got[1])
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise Refused(str(err)) from None


def _inputs(args, cfg, store):
    """The checked model, faces and children: (loaded, faces or None, warnings, inputs changed,
    identities)."""
    from mcmcp.config import checkpoint_fitness, open_model
    from mcmcp.identities import open_identities

    source = args.config or (store.session_path if store is not None else "<config>")
    loaded = open_model(cfg, source)
    warnings = checkpoint_fitness(loaded, source)
    faces = _faces(cfg, loaded, source) if _need_faces(cfg) else None
    identities = open_identities(cfg, loaded, None if faces is None else faces[0], source)
    if faces is not None:
        warnings += faces[3]
    changed = False
    if store is not None:
        changed = _check_resumed_inputs(store, loaded, None if faces is None else faces[1],
                                        args.accept_changed_inputs)
    for line in warnings:
        _warn(line)
    return loaded, faces, warnings, changed, identities


def _display(args, cfg, image_size, origin: float):
    """The window (or the headless display) whose session clock counts from `origin`."""
    from mcmcp.session import HeadlessDisplay

    if args.no_window:
        return HeadlessDisplay(_log, delay=args.agent_delay, origin=origin)
    try:
        from mcmcp.screen import Screen  # PsychoPy (pyglet) connects to the X server here

        return Screen(cfg.display, image_size, _log, args.screenshot, origin=origin)
    except Exception as err:  # no X server, no GL, no psychtoolbox: nothing written yet
        raise Refused(f"the window could not open ({type(err).__name__}: {str(err)[:300]}); run "
                      "under a display (or xvfb-run), or pilot with --agent ... --no-window") \
            from None


def _create(root, participant: str, session: int, d: int, metadata: dict):
    """SessionStore.create, with a full disk reported as what it means at this point."""
    from mcmcp.store import DISK_FULL, SessionStore

    try:
        return SessionStore.create(root, participant, session, d, metadata)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise Refused(f"the disk is full ({err.strerror}: {err.filename}); the session was not "
                      "created and nothing was left behind: free some space and run the same "
                      "command again") from None


def _run(args, cfg, participant: str, session: int, store) -> int:
    """Everything after the command is known to be sound: inputs, then files, then the run."""
    import os
    import platform
    import time
    from datetime import datetime, timezone

    import torch

    from mcmcp.config import config_to_dict
    from mcmcp.engine import Engine
    from mcmcp.identities import assignment
    from mcmcp.render import Renderer
    from mcmcp.session import run_session
    from mcmcp.store import utc_now, versions

    torch.set_num_threads(1)  # tiny decoder: one thread keeps latency flat next to the window
    loaded, faces, warnings, changed, identities = _inputs(args, cfg, store)
    gates, centroids, agent = _materials(cfg, loaded, faces, identities)
    agent_name = agent.name if agent is not None else "human"
    d = loaded.config.latent_dim
    try:
        children = assignment(cfg, participant, identities.default)
        engine = Engine(cfg, d, participant, session, gates, centroids, agent_name,
                        store.read_rows() if store is not None else None, children)
    except ValueError as err:  # saved rows that do not fit the schedule, a rotated order...
        raise Refused(str(err)) from None

    # The session clock counts from the session's first run; a resumed run goes on from there.
    origin = time.time()
    if store is not None:
        first = store.metadata.get("clock_origin") or store.metadata.get("start_time")
        origin = datetime.fromisoformat(first).timestamp()
    display = _display(args, cfg, loaded.config.image_size, origin)
    try:
        window = None if args.no_window else ("fullscreen" if cfg.display.fullscreen
                                              else "windowed")
        run_info = {
            "started": utc_now(), "clock_at_start": round(display.clock(), 6),
            "pid": os.getpid(), "host": platform.node(), "window": window,
            "refresh_rate": display.refresh_rate, "agent": agent_name,
            "checkpoint_sha256": loaded.sha256, "faces_sha256": None if faces is None else faces[1],
            "accepted_changed_inputs": changed, "warnings": warnings, "versions": versions(),
        }
        if store is None:
            store = _create(args.out, participant, session, d, {
                "config": config_to_dict(cfg),
                "checkpoint_sha256": loaded.sha256,
                "faces_sha256": run_info["faces_sha256"],
                "versions": versions(),
                "seeds": engine.seeds(),
                "block_order": list(engine.emotions),
                "identity": {**children.record(), **identities.record()},
                "agent": agent_name,
                "gate": config_to_dict(cfg)["gate"],
                "window": window,
                "refresh_rate": display.refresh_rate,
                "clock_origin": datetime.fromtimestamp(origin, timezone.utc).isoformat(),
                "runs": [{"run": 1, **run_info}],
            })
        else:
            latest = {} if args.no_window else {"refresh_rate": display.refresh_rate}
            store.begin_run({"run": len(store.metadata.get("runs", [])) + 1, **run_info},
                            versions=versions(), **latest)
        engine.stamp(run=store.run, date=store.metadata.get("date"),
                     frame_rate=display.refresh_rate)
        _log(f"session {store.folder}: {len(engine.schedule)} shown trials, "
             f"{engine.next_index} done; blocks {', '.join(engine.emotions)}")
        status, error = "error", None
        try:
            status = run_session(cfg, engine, store, display,
                                 Renderer(loaded.model, identities=identities), agent, _log)
        except KeyboardInterrupt:
            status = "aborted"
        except OSError as err:  # a full disk: one line from main(), the status recorded here
            error = f"{err.strerror}: {err.filename}"
            raise
        finally:
            end = {} if args.no_window else {"frame_timing": display.frame_stats()}
            end.update(rows=engine.n_rows, shown_trials=engine.next_index - len(engine.pending))
            store.metadata["runs"][-1].update(ended=utc_now(), status=status)
            try:
                store.finish(status=status, **({"error": error} if error else {}), **end)
            except OSError as err:
                _warn(f"could not record the session's end in {store.session_path} "
                      f"({err.strerror})")
    finally:
        if not args.no_window:
            display.close()
    _log(_summary(status, store))
    return 0


def _summary(status: str, store) -> str:
    """The closing line: where the data are and the response-to-next-onset gap."""
    import statistics

    gaps = store.read_rows()["gap"].dropna().to_numpy(dtype=float)
    summary = f"{status}: {store.trials_path}"
    if len(gaps):
        summary += (f"; gap response->next onset median {statistics.median(gaps) * 1e3:.1f} ms, "
                    f"worst {max(gaps) * 1e3:.1f} ms")
    return summary


if __name__ == "__main__":
    sys.exit(main())
