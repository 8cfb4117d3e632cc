"""CLI: participant links for an online study, signed when the study asks for signed links.

    MCMCP_LINK_SECRET=... python -m mcmcp.links --config experiments/happy.yaml \
        --base https://your.host/faces P001 P002 P003

prints one link per participant id (`?participant=P001&sig=...`). The secret is read from the
environment variable the YAML's `online.link_secret_env` names, the same the server reads; with
`online.participant_links: open` and no secret the links are unsigned. See docs/online.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mcmcp.links",
                                description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, required=True, help="the study's experiment YAML")
    p.add_argument("--base", required=True,
                   help="the study's address as participants open it, e.g. "
                        "https://your.host/faces")
    p.add_argument("participants", nargs="+", help="participant ids, e.g. P001 P002")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mcmcp.config import ConfigError, load_config
    from mcmcp.online.links import link_secret, participant_url

    try:
        cfg = load_config(args.config, require_checkpoint=False)
        secret = link_secret(cfg.online, os.environ, str(args.config))
        if not args.base.startswith(("https://", "http://")):
            raise ValueError(f"--base {args.base!r}: give the study's http(s):// address")
        links = [participant_url(args.base, cfg.name, pid, secret) for pid in args.participants]
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(links))
    return 0


if __name__ == "__main__":
    sys.exit(main())
