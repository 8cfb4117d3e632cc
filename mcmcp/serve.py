"""CLI for online studies: `python -m mcmcp.serve --config experiments/demo.yaml`.

Serves one experiment config to participants' browsers on the same engine and session flow as a
lab session (the online wing: `mcmcp.online.app` speaks HTTP, `mcmcp.online.study` decides), with
the state in a database: SQLite by default (`participants_data/online-<name>.sqlite`), or
PostgreSQL (`--db postgresql+psycopg://...`) to run several server processes (`--workers`).
Participants open `/?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...` (or `/?participant=P001`);
the experimenter page is `/experimenter`, behind the token in the environment variable named by
the YAML's `online.experimenter_token_env`; when it is unset, the token is made up once and kept
in `participants_data/online-<name>.token`, readable only by its owner (never printed: logs keep
what is printed). `python -m mcmcp.export` writes the database out as `sub-*/ses-*/trials.csv`.

Every start-up mistake (config, face store, checkpoint, database URL, an unreachable or
unwritable database, a port out of range) ends in one line on stderr and exit status 2: the
study is opened once here, as a worker would, before any worker starts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from mcmcp.config import ConfigError, load_config
from mcmcp.online.app import ENV_CONFIG, ENV_DB, create_app
from mcmcp.online.database import Database, Unavailable
from mcmcp.online.links import link_secret
from mcmcp.online.study import OnlineStudy
from mcmcp.specs import ExperimentConfig


def default_db(cfg: ExperimentConfig) -> str:
    return f"sqlite:///participants_data/online-{cfg.name}.sqlite"


def token_file(cfg: ExperimentConfig) -> Path:
    return Path("participants_data") / f"online-{cfg.name}.token"


def experimenter_token(cfg: ExperimentConfig) -> tuple[str, str]:
    """(the experimenter token, where it came from): the environment variable the config
    names, else the study's token file, made with a new random token (mode 0600) if missing."""
    env = cfg.online.experimenter_token_env
    if os.environ.get(env):
        return os.environ[env], f"${env}"
    path = token_file(cfg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # ours to keep private, whoever widened it
        token = path.read_text().strip()
        if len(token) < 16:
            raise ValueError(f"{path} holds no experimenter token (16 characters or more); "
                             f"delete it to make a new one, or set {env}") from None
        return token, str(path)
    except OSError as err:
        raise ValueError(f"cannot write the experimenter token file {path}: {err.strerror}; "
                         f"set {env} instead") from None
    token = secrets.token_urlsafe(18)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, str(path)


def port(text: str) -> int:
    """argparse type of --port."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mcmcp.serve", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, required=True, help="experiment YAML with an online: "
                   "section (consent text, completion code, redirect URL)")
    p.add_argument("--db", help="database URL (default sqlite:///participants_data/"
                   "online-<name>.sqlite; PostgreSQL: postgresql+psycopg://user@host/dbname)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: put a reverse proxy in front)")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (more than one needs PostgreSQL or accepts SQLite's "
                        "one writer at a time)")
    p.add_argument("--root-path", default="",
                   help="URL prefix the reverse proxy serves the study under, e.g. /faces")
    return p


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    import torch

    torch.set_num_threads(1)  # a tiny decoder per request: threads would only contend
    try:
        cfg = load_config(args.config)
        db_url = args.db or default_db(cfg)
        db = Database(db_url)
        secret = link_secret(cfg.online, os.environ, str(args.config))  # signed links' key
        study = OnlineStudy.open(cfg, db, str(args.config), secret)  # as a worker would
        token, kept = experimenter_token(cfg)
    except (ConfigError, ValueError, Unavailable) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    base = f"http://{args.host}:{args.port}{args.root_path}"
    print(f"study '{cfg.name}' on {db.url}\n  participants: {base}/?participant=P001 "
          f"(or ?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...)\n  experimenter: "
          f"{base}/experimenter (token: {kept})", flush=True)
    options = dict(host=args.host, port=args.port, root_path=args.root_path,
                   log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    if args.workers == 1:  # this process serves: the study is open already
        uvicorn.run(create_app(study, token), **options)
        return 0
    db.close()
    del study
    os.environ[cfg.online.experimenter_token_env] = token  # the workers' environment
    os.environ[ENV_CONFIG], os.environ[ENV_DB] = str(args.config.resolve()), db_url
    uvicorn.run("mcmcp.online.app:app_from_environment", factory=True, workers=args.workers,
                # a worker loads torch and fits the gates before it answers uvicorn's pings:
                # on a busy machine that takes longer than the default 5 s
                timeout_worker_healthcheck=120, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
