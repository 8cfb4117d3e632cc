"""CLI: online sessions from the database to the lab's files, for analysis.

    python -m mcmcp.export --db sqlite:///participants_data/online-demo.sqlite --out participants_data/

The writing is `mcmcp.online.export.export`; see there for what is written and when it refuses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcmcp.online.database import Database
from mcmcp.online.export import export


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mcmcp.export", description=__doc__.split("\n")[0])
    p.add_argument("--db", required=True, help="the server's database URL")
    p.add_argument("--out", type=Path, default=Path("participants_data"),
                   help="data folder (default participants_data/)")
    p.add_argument("--study", help="only this study (the config's name)")
    args = p.parse_args(argv)
    try:
        db = Database(args.db, create=False)
        folders = export(db, args.out, args.study)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    print(f"exported {len(folders)} sessions to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
