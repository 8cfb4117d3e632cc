"""Simulated across-participant studies through the CLI: people who differ, lapse, leave and
answer late take turns on the study's shared chains (engine + chain store + session files)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_trials
from mcmcp import simulate
from mcmcp.chainstore import ChainStore

ARGS = ["--truth", "manual", "--gate", "none", "--seed", "4"]


@pytest.fixture(scope="module")
def shared_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "shared.yaml"
    path.write_text(json.dumps({
        "name": "shared_test", "emotions": ["happy", "sad"],
        "chains": {"across_participants": True, "per_emotion": 3, "lease_seconds": 60},
        "trials": {"per_chain": 200, "per_hold": 5, "per_participant": 20, "practice": 1},
        "agent": {"kind": "latent", "lapse": 0.05}}))
    return path


def run(config, out, participants=30, **flags):
    extra = [x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return simulate.main(["--config", str(config), *ARGS, "--participants", str(participants),
                          "--out", str(out), *extra])


def most_at_once(started: np.ndarray, ended: np.ndarray) -> int:
    """The most intervals [started, ended) open at one time (ended NaN: still open)."""
    times = np.r_[started, np.nan_to_num(ended, nan=np.inf)]
    steps = np.r_[np.ones(len(started)), -np.ones(len(ended))]
    order = np.lexsort((steps, times))  # an end before a start at the same time
    return int(np.cumsum(steps[order]).max())


def test_shared_study_rows_are_the_chains(shared_config, tmp_path):
    """30 people (20% leave, 10% late once): the chain store says every chain is one line
    held by one person at a time; the participants' files hold exactly the chains' steps, each
    with its lease and step; late answers are only in the audit table; nobody held more than
    two chains at once."""
    summary = run(shared_config, tmp_path / "out", dropout=0.2, late=0.1)
    assert summary["left"] > 0 and summary["late"] > 0
    store = ChainStore(summary["chain_store"])
    assert store.check("shared_test") == []
    trials = load_trials(tmp_path / "out")
    steps = trials[trials["kind"].isin(["chain", "gate"])]
    assert steps["lease"].notna().all() and steps["chain_step"].notna().all()
    assert (steps["chain_step"] == steps["iteration"]).all()
    chain_rows = pd.DataFrame(store.steps("shared_test"))
    files = set(zip(steps["participant"], steps["chain"], steps["chain_step"], strict=True))
    db = set(zip(chain_rows["participant"], chain_rows["chain"], chain_rows["chain_step"],
                 strict=True))
    assert files == db and len(files) == len(steps)
    late = store.late("shared_test")
    assert len(late) == summary["late"]
    leases = store.leases("shared_test")
    held = [most_at_once(m["started"].to_numpy(float), m["ended"].to_numpy(float))
            for _, m in leases.groupby("participant")]
    assert max(held) == 2
    assert leases.groupby("chain")["participant"].nunique().min() >= 5  # chains change hands


def test_shared_study_is_reproducible(shared_config, tmp_path):
    """The same seed writes the same rows (wall-clock and lease ids aside)."""
    frames = []
    for k in range(2):
        run(shared_config, tmp_path / f"out{k}", participants=8, dropout=0.2, late=0.1)
        t = load_trials(tmp_path / f"out{k}")
        frames.append(t.drop(columns=["timestamp", "date", "lease"]))
    pd.testing.assert_frame_equal(frames[0], frames[1])
