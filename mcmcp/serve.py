"""CLI for online studies: `python -m mcmcp.serve --config experiments/demo.yaml`.

Serves one experiment config to participants' browsers on the same engine and session flow as a
lab session (the online wing: `mcmcp.online.app` speaks HTTP, `mcmcp.online.study` decides), with
the state in a database: SQLite by default (`participants_data/online-<name>.sqlite`), or
PostgreSQL (`--db postgresql+psycopg://...`) to run several server processes (`--workers`).
Participants open `/?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...` (or `/?participant=P001`);
the experimenter page is `/experimenter`, behind the token in the environment variable named by
the YAML's `online.experimenter_token_env` (one is made up and printed when it is unset).
`python -m mcmcp.export` writes the database out as `sub-*/ses-*/trials.csv` for analysis.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from mcmcp.config import ConfigError, load_config
from mcmcp.online.app import ENV_CONFIG, ENV_DB
from mcmcp.online.database import Database
from mcmcp.online.links import link_secret
from mcmcp.online.study import check_database
from mcmcp.specs import ExperimentConfig


def default_db(cfg: ExperimentConfig) -> str:
    return f"sqlite:///participants_data/online-{cfg.name}.sqlite"


# ----------------------------------------------------------------------------- requests


# ----------------------------------------------------------------------------- the app


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mcmcp.serve", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, required=True, help="experiment YAML with an online: "
                   "section (consent text, completion code, redirect URL)")
    p.add_argument("--db", help="database URL (default sqlite:///participants_data/"
                   "online-<name>.sqlite; PostgreSQL: postgresql+psycopg://user@host/dbname)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: put a reverse proxy in front)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (more than one needs PostgreSQL or accepts SQLite's "
                        "one writer at a time)")
    p.add_argument("--root-path", default="",
                   help="URL prefix the reverse proxy serves the study under, e.g. /faces")
    return p


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from vae.files import file_sha256

    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        if cfg.online.consent is None:
            raise ConfigError(args.config, "online.consent", None,
                              "the consent text participants agree to before the study; an "
                              "online study needs one (see experiments/demo.yaml)")
        link_secret(cfg.online, os.environ, str(args.config))  # signed links need their key
        db_url = args.db or default_db(cfg)
        db = Database(db_url)
        check_database(cfg, db, file_sha256(cfg.model.checkpoint), str(args.config))
        db.close()
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    env = cfg.online.experimenter_token_env
    if not os.environ.get(env):
        os.environ[env] = secrets.token_urlsafe(18)
        print(f"{env} is not set; the experimenter token of this run is {os.environ[env]}",
              flush=True)
    os.environ[ENV_CONFIG], os.environ[ENV_DB] = str(args.config.resolve()), db_url
    base = f"http://{args.host}:{args.port}{args.root_path}"
    print(f"study '{cfg.name}' on {db.url}\n  participants: {base}/?participant=P001 "
          f"(or ?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...)\n  experimenter: "
          f"{base}/experimenter", flush=True)
    uvicorn.run("mcmcp.online.app:app_from_environment", factory=True, host=args.host,
                port=args.port, workers=args.workers, root_path=args.root_path,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                # a worker loads torch and fits the gates before it answers uvicorn's pings:
                # on a busy machine that takes longer than the default 5 s
                timeout_worker_healthcheck=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
