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

from mcmcp.config import ConfigError
from mcmcp.lab.launch import Refused, log, run_lab_session
from mcmcp.specs import AGENT_KINDS, ROOT

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
    p.add_argument("--chain-store", metavar="URL",
                   help="across-participant designs (chains.across_participants): the study's "
                        "shared chains, sqlite:///FILE or postgresql+psycopg://... shared by the "
                        "lab computers (default: sqlite file DIR/shared_chains.sqlite of --out)")
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
            log(f"resuming {store.folder} with the config it started with")
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
        return run_lab_session(args, cfg, participant, session, store)
    finally:
        if store is not None:
            store.close()


def _ask(session: int | None) -> tuple[str | None, int]:
    """Participant id and session from the dialog (or the terminal), validated."""
    from mcmcp.lab.screen import ask_participant
    from mcmcp.store import validate_participant_id

    try:
        got = ask_participant(session, log)
    except EOFError:
        raise Refused("no participant id was given: pass --participant ID") from None
    if got is None:
        return None, session or 1
    try:
        return validate_participant_id(got[0]), _session(got[1])
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise Refused(str(err)) from None


if __name__ == "__main__":
    sys.exit(main())
