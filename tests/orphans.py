"""Child processes that end with the test run that started them.

A server started by a fixture is stopped by the fixture; but when pytest itself is killed
(a CI timeout, kill -9, a closed terminal) no fixture runs, and a server in its own process
group, or a PostgreSQL that `pg_ctl` detached, keeps its port, its files and a share of the
cores for hours. `popen` starts a child that Linux sends a signal when this process ends,
however it ends (prctl PR_SET_PDEATHSIG).

Linux sends that signal when the *thread* that started the child ends, not the process, and
servers are started from worker threads (thread pools, `asyncio.to_thread`) that end long before
the servers should. So every child is started from one thread that lives as long as the
process.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

_PR_SET_PDEATHSIG = 1
# looked up now: between fork and exec the child only makes the call
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_starter = ThreadPoolExecutor(1, thread_name_prefix="child-starter")  # lives with the process


def popen(args: list[str], *, death_signal: signal.Signals = signal.SIGTERM,
          **options) -> subprocess.Popen:
    """`subprocess.Popen(args, **options)` whose child receives `death_signal` when this
    process ends (SIGTERM: the child's own clean shutdown, e.g. uvicorn stopping its workers;
    PostgreSQL: SIGQUIT, its immediate shutdown)."""
    number = int(death_signal)

    def arm() -> None:
        _prctl(_PR_SET_PDEATHSIG, number)

    return _starter.submit(subprocess.Popen, args, preexec_fn=arm, **options).result()
