"""The observer agent's tables kept on disk: a child's table built once serves every later run.

A `mcmcp.agents.SphereTable` node's value depends on the VAE's and the observer's weights, the
child (its identity code), the table's grid and torch's build only (and on the batch it was
computed in, by about 2e-7 in probability). So the nodes one run computed are kept in one file
per table and taken in when a later run, another process or another worker of the same study,
makes that child's table: only the first run on a machine pays for them
(benchmarks/bench_observer.py, "fast, table from disk").

The file is `<folder>/<sha256 of all of the above>.npz` (`table_file`), holding the computed
nodes' ids (m,) int64 and their log probabilities (m, width) float64, and a JSON string saying
what the table is of. Writing merges: under an exclusive lock on `<file>.lock` the file's nodes
and the table's are joined and the union is written atomically (`vae.files.atomic_write`), so
workers writing one file never lose each other's nodes and a crash leaves the old file whole.
Reading checks before it trusts: a file that cannot be read, is of another grid, or whose first
`CHECKED` nodes the model no longer gives (within `CHECK_TOLERANCE` in probability) is left
alone with a warning and the table starts empty.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

FORMAT = 1  # bump when the file's layout or a node's meaning changes
CHECKED = 4  # nodes of a file recomputed before it is trusted (about 6 ms)
CHECK_TOLERANCE = 1e-5  # probability; batches move a node by about 2e-7


def weights_sha256(modules: Iterable[torch.nn.Module]) -> str:
    """Hex sha256 of the modules' parameters and buffers (names, dtypes, shapes, values in
    standard layout), in order: what a table's values are a function of."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def describe(weights: str, child: str, code: torch.Tensor | None, table) -> dict:
    """What a table file is of (its name is the sha256 of this): the weights' sha256
    (`weights_sha256`), the child's id and identity code (k,) (None: the model's default child
    of a plain model), the table's grid (not its tolerance: a node's value does not depend on
    which cells were cut) and torch's build."""
    code_sha = None if code is None else hashlib.sha256(
        code.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    return {"format": FORMAT, "weights_sha256": weights, "child": child,
            "identity_code_sha256": code_sha, "cells": table.cells, "levels": table.levels,
            "width": table.values.shape[1],
            "torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def table_file(folder: str | Path, about: dict) -> Path:
    """The file of the table `about` (`describe`) describes, in `folder`."""
    key = hashlib.sha256(json.dumps(about, sort_keys=True).encode()).hexdigest()
    return Path(folder) / f"{key}.npz"


def read_into(table, path: Path, warn: bool = True) -> int:
    """Take the nodes kept in `path` into `table` (only those it has not computed) and return
    how many it took; 0, with a warning naming the file (unless not `warn`), if the file cannot
    be trusted (see the module doc). A missing file is not an error."""
    kept = _trusted(table, Path(path), warn)
    return 0 if kept is None else _take(table, *kept)


def _trusted(table, path: Path, warn: bool):
    """The node ids (m,) kept in `path` if the file can be trusted for `table`, with their
    values (m, width); None if it is missing or cannot be trusted (warned about if `warn`)."""
    if not path.is_file():
        return None
    try:
        ids, values = _read(path)
        if values.shape[1:] != table.values.shape[1:] or (
                len(ids) and (ids.min() < 0 or ids.max() >= len(table.values))):
            raise ValueError(f"nodes of another grid ({values.shape[1:]}, ids up to "
                             f"{ids.max() if len(ids) else '-'})")
        check = ids[:CHECKED]
        if len(check):
            again = np.asarray(table.fn(table.nodes(check)), dtype=np.float64)
            worst = float(np.abs(np.exp(again) - np.exp(values[:CHECKED])).max())
            if not worst <= CHECK_TOLERANCE:
                raise ValueError(f"its nodes are not this model's: recomputed, they move by "
                                 f"{worst:.2g} in probability")
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        if warn:
            warnings.warn(f"observer table {path} not used ({err}); the table is built anew "
                          "(delete the file to silence this)", stacklevel=3)
        return None
    return ids, values


def _take(table, ids: np.ndarray, values: np.ndarray) -> int:
    """Put the kept nodes `ids` (m,) with `values` (m, width) that `table` has not computed
    into it; how many."""
    new = ~table.known[ids]
    table.values[ids[new]] = values[new]
    table.known[ids[new]] = True
    return int(new.sum())


def write(table, path: Path, about: dict) -> int:
    """Join the nodes `table` has computed with those kept in `path` (written by anyone since
    it was read) and write the union atomically; return how many nodes the file now holds.
    The table also takes in the file's nodes it lacked; a file that cannot be trusted is
    replaced, and one that already holds every node the table has is left as it is."""
    from vae.files import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(path.name + ".lock")):
        kept = _trusted(table, path, warn=False)
        if kept is not None:
            _take(table, *kept)
            if len(kept[0]) == table.n_computed:  # nothing new: no rewrite, no fsync
                return len(kept[0])
        ids = np.flatnonzero(table.known)
        buffer = io.BytesIO()
        np.savez(buffer, ids=ids, values=table.values[ids],
                 about=np.array(json.dumps(about, sort_keys=True)))
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return len(ids)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        ids = np.asarray(data["ids"], dtype=np.int64)
        values = np.asarray(data["values"], dtype=np.float64)
    if values.ndim != 2 or len(values) != len(ids):
        raise ValueError(f"ids {ids.shape} and values {values.shape} do not match")
    return ids, values


@contextmanager
def _locked(lock: Path):
    """An exclusive advisory lock on the file `lock` (created if missing) while inside."""
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
