"""Sweeps: many independent simulations (planning grids, recovery curves, benchmarks) run in
parallel on Dask (`dask.distributed`), with a progress bar.

    results = run(fn, tasks)                                  # a local cluster, one worker a core
    results = run(fn, tasks, scheduler="tcp://host:8786")     # a running Dask scheduler
    results = run(fn, tasks, workers=0)                       # serially, in this process

Each result is `fn(task, shared)`: `fn` must be a module-level function (workers import it by
name), `shared` is sent to every worker once (a design, an agent, fitted densities) and each task
carries its own seed. A result then depends on nothing but its task: not on the worker that ran
it, the order, or whether the sweep ran serially, so a sweep's results equal the serial run's.
Results come back in the order of `tasks`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable


def run(fn: Callable, tasks: Iterable, shared: object = None, scheduler: str | None = None,
        workers: int | None = None, progress: bool = True, desc: str = "sweep") -> list:
    """[fn(task, shared) for task in tasks], computed on Dask.

    scheduler: address of a running Dask scheduler (e.g. 'tcp://10.0.0.5:8786'); None starts a
    local cluster of `workers` single-threaded worker processes (None: one per core) for this
    call. workers=0 without a scheduler runs serially in this process. progress: a tqdm bar on
    stderr.
    """
    from tqdm import tqdm

    tasks = list(tasks)
    bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress, file=sys.stderr)
    if scheduler is None and workers == 0:
        results = []
        for task in tasks:
            results.append(fn(task, shared))
            bar.update()
        bar.close()
        return results
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers or os.cpu_count(), threads_per_worker=1,
                               processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    try:
        with Client(cluster or scheduler) as client:
            # a list of one: scatter would send a tuple's items one by one
            [common] = client.scatter([shared], broadcast=True)
            futures = client.map(fn, tasks, shared=common, pure=False)
            where = {future.key: i for i, future in enumerate(futures)}
            results = [None] * len(tasks)
            for future in as_completed(futures):
                results[where[future.key]] = future.result()
                bar.update()
    finally:
        bar.close()
        if cluster is not None:
            cluster.close()
    return results
