"""mcmcp.sim.study: a simulation whose catch rate yields no catch trials says so (issue 20: a
one-emotion truth file dropped every catch trial silently)."""

from __future__ import annotations

import numpy as np

from mcmcp.config import config_from_dict
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sim.study import GroundTruth, make_design

M = np.array([0.0, 0.6, 0.8])


def design(truth: dict, catch_rate: float):
    cfg = config_from_dict({"name": "catch", "emotions": ["sad"],
                            "chains": {"per_emotion": 2, "kappa_proposal": 5.0},
                            "trials": {"per_chain": 10, "catch_rate": catch_rate},
                            "gate": {"kind": "none"}, "agent": {"kind": "latent"}},
                           "<catch test>", require_checkpoint=False)
    return make_design(cfg, None, GroundTruth("file", truth), None, None, "<catch test>")


def test_a_one_emotion_truth_warns_that_catch_trials_are_lost(capsys):
    found = design({"sad": VMFMixture.single(M, 20.0)}, 0.05)
    [note] = found.metadata["warnings"]
    assert "catch_rate is 0.05" in note and "sad get no catch trials" in note
    assert note in capsys.readouterr().err


def test_two_emotions_or_no_catch_rate_warn_nothing(capsys):
    both = {"sad": VMFMixture.single(M, 20.0), "happy": VMFMixture.single(-M, 20.0)}
    assert design(both, 0.05).metadata["warnings"] == []
    assert design({"sad": VMFMixture.single(M, 20.0)}, 0.0).metadata["warnings"] == []
    assert "WARNING" not in capsys.readouterr().err
