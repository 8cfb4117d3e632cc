"""The participant's own chains (the default chain source) behave as before the engine asked a
chain source which chain next: the rows of whole sessions, answered with prefetch, hash to the
digests recorded with the engine of commit 892b38c (before the seam), for MCMCP with a gate,
adaptation, catch, repeat and control chains, and for GSP sliders with a gate."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mcmcp.config import config_from_dict
from mcmcp.engine import Engine
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate
from mcmcp.schema import format_value

D = 3
CENTROIDS = {e: v for e, v in zip(("happy", "sad", "angry"), np.eye(3), strict=True)}

DESIGNS = {
    "mcmcp: gate, adaptation, catch, repeat, control chain": (
        {"chains": {"per_emotion": 3, "unguided": 1, "adapt": {"target": 0.4, "burn_in": 5}},
         "trials": {"per_chain": 12, "practice": 2, "catch_rate": 0.2, "repeat_rate": 0.15,
                    "break_every": 7},
         "gate": {"kind": "vmf", "gamma": 1.0}, "block_order": "random"},
        "dab25db3e73db742f4fc13ebbc97674e6c3612653397ecedcd2cc9e591c329f1"),
    "gsp: gate": (
        {"paradigm": "gsp", "gsp": {"points": 12}, "chains": {"per_emotion": 2},
         "trials": {"per_chain": 10, "practice": 1, "catch_rate": 0.0},
         "gate": {"kind": "vmf", "gamma": 1.0}},
        "19c57c4e04e57488df6b60d5c89c19e60a70bbe8463051628138098a04301f38"),
}


def answer(trial):
    rng = np.random.default_rng([7, trial.trial])
    if trial.is_slider:
        return int(rng.integers(len(trial.circle.points)))
    return "right" if rng.random() < 0.5 else "left"


def session_digest(cfg) -> str:
    """sha256 of every row of participant P003's session (timestamps aside; cells as the CSV
    writes them), asked with prefetch (trial t+1 drawn while t is on screen)."""
    gates = {e: Gate(VMFMixture.single(m, 4.0), 1.0, 0.5) for e, m in CENTROIDS.items()}
    engine = Engine(cfg, D, "P003", 1, gates, CENTROIDS)
    h = hashlib.sha256()
    pending = engine.ask()
    while pending is not None:
        nxt = engine.ask() if engine.can_ask() else None
        for row in engine.tell(pending, answer(pending), 0.5):
            h.update(repr(sorted((k, format_value(v)) for k, v in row.items()
                                 if k != "timestamp")).encode())
        pending = nxt if nxt is not None else engine.ask()
    return h.hexdigest()


@pytest.mark.parametrize("name", list(DESIGNS))
def test_own_chains_write_the_rows_they_always_wrote(name):
    design, expected = DESIGNS[name]
    cfg = config_from_dict({"name": "own", "seed": 9, "emotions": ["happy", "sad"], **design},
                           "<test>", require_checkpoint=False)
    assert session_digest(cfg) == expected
