"""A throwaway PostgreSQL cluster for tests and benchmarks (Debian's `postgresql` package).

initdb on a temporary folder, then the server (`postgres`) as a child of this process,
listening only on a Unix socket in that folder (no TCP port at all), trust authentication,
stopped and deleted at the end. As root (CI) the server runs as the `postgres` user, which the
package creates; PostgreSQL refuses to run as root. The server is not left behind when this
process is killed before it stops it: it gets SIGQUIT (PostgreSQL's immediate shutdown) when
this process ends (`orphans.popen`), where `pg_ctl start` would have detached it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from orphans import popen


def _binary(name: str) -> str:
    """A PostgreSQL server program: Debian keeps them in /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is missing: apt-get install postgresql "
                           "(the Makefile's setup does)")
    return path


class Cluster:
    """`with Cluster() as pg: url = pg.new_database()`; see the module docstring."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="mcmcp-pg-"))
        self.data = self.folder / "data"
        self.port = 5432  # only names the socket file; nothing listens on TCP
        self._as_postgres = os.geteuid() == 0
        self._server: subprocess.Popen | None = None

    def _run(self, *cmd: str) -> None:
        if self._as_postgres:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> Cluster:
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        self.resume()
        return self

    def halt(self) -> None:
        """Stop the server at once, as a crash would (the data stay: `resume` starts it again)."""
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._server.wait(timeout=60)

    def resume(self, timeout: float = 120.0) -> None:
        """Start the server on the cluster's data and wait until it accepts connections."""
        with open(self.folder / "log", "a") as log:
            owner = {"user": "postgres", "group": "postgres", "extra_groups": []} \
                if self._as_postgres else {}
            self._server = popen(
                [_binary("postgres"), "-D", str(self.data), "-k", str(self.folder),
                 "-p", str(self.port), "-c", "listen_addresses=", "-c", "max_connections=200"],
                death_signal=signal.SIGQUIT, stdout=log, stderr=subprocess.STDOUT, **owner)
        deadline = time.monotonic() + timeout
        while subprocess.run([_binary("pg_isready"), "-q", "-h", str(self.folder), "-p",
                              str(self.port)], timeout=30).returncode != 0:
            if self._server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start:\n"
                                   + (self.folder / "log").read_text())
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            self.halt()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, database: str = "postgres") -> str:
        return (f"postgresql+psycopg://postgres@/{database}?host={self.folder}"
                f"&port={self.port}")

    def new_database(self) -> str:
        """The URL of a new, empty database in the cluster."""
        import psycopg
        from psycopg import sql

        name = f"db_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.folder), port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
