"""Simulated files are the same byte for byte (wall-clock columns aside) as the code made them
before the package was split into wings (issue 19): the digests below were recorded with the
pre-split code (commit 0bc1cb9) and the same commands. A change that alters what a seed
simulates fails here; if the change is meant, record the new digests and say why. The demo
design's digest was recorded again for each new default model (issue 23: the faces-3
generator, then the coarse flow term, then the templates, then the still reference): its model
fits the agents' and the gate's densities; the other two never open it.

Torch runs on two threads here: the encoder that fits the agents' and the gate's densities
sums in another order on more threads, so `densities.encode_faces` encodes on one; without that
the demo design's digest differs on two threads (its last bits move the chains).
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pytest
import torch

from mcmcp import simulate
from vae.store import write_store

WALL_CLOCK = {"timestamp", "date"}  # when the row was written: differs on every run
# Columns the schema gained after the digests were recorded: they are appended last and empty
# in these designs (a participant's own chains), so the digest is taken without them and the
# test asserts they are empty; every earlier column must still be equal byte for byte.
ADDED_SINCE = {"lease", "chain_step"}  # issue 22: across-participant chains

RUNS = {
    "manual, 7 emotions, lapse, catch trials": (
        ["--truth", "manual", "--gate", "none", "--emotion", "all", "--participants", "2",
         "--chains", "3", "--trials", "40", "--seed", "11", "--lapse", "0.05",
         "--catch-rate", "0.1"],
        "fa13e5cede20709770074094ea96965d8ab4956135e138b44bc83e09792a6020"),
    "GSP sliders": (
        ["--truth", "manual", "--gate", "none", "--paradigm", "gsp", "--emotion", "happy",
         "--participants", "1", "--chains", "2", "--trials", "20", "--seed", "5"],
        "40f76866badfccf9f329517bd32c64d15fc663c36f2fd95b2a1348c81e73f30d"),
    "the demo design: model, latent agent, annealed vMF gate": (
        ["--config", "experiments/simulate_demo.yaml", "--participants", "1", "--trials", "60",
         "--seed", "3", "--faces", "{faces}"],
        "8b1fbb70937714952285f7389a352985ae77dce0f97fcde682382b1908d2f1b2"),
}


def digest(folder: Path) -> str:
    """sha256 over every trials.csv under `folder` (sorted by path), without WALL_CLOCK columns
    and without the ADDED_SINCE columns, which must be empty."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("trials.csv")):
        rows = list(csv.reader(io.StringIO(path.read_text())))
        added = [i for i, name in enumerate(rows[0]) if name in ADDED_SINCE]
        assert len(added) == len(ADDED_SINCE), f"{path}: the schema lost {ADDED_SINCE}"
        assert all(row[i] == "" for row in rows[1:] for i in added), \
            f"{path}: a within-participant design wrote {ADDED_SINCE}"
        keep = [i for i, name in enumerate(rows[0])
                if name not in WALL_CLOCK and name not in ADDED_SINCE]
        h.update(str(path.relative_to(folder)).encode())
        for row in rows:
            h.update(",".join(row[i] for i in keep).encode() + b"\n")
    return h.hexdigest()


@pytest.fixture(scope="module")
def faces_store(default_faces, tmp_path_factory):
    return write_store(default_faces, tmp_path_factory.mktemp("faces") / "faces.h5")


@pytest.mark.parametrize("name", list(RUNS))
def test_simulated_files_are_unchanged(name, faces_store, tmp_path, monkeypatch):
    args, expected = RUNS[name]
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the config path is repo-relative
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the results must not depend on the machine's cores
    try:
        simulate.main([a.format(faces=faces_store) for a in args] + ["--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert digest(out) == expected
