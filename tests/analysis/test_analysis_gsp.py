"""Analysis of GSP data and of mixed MCMCP + GSP studies, simulated with the real simulator."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.diagnostics import convergence
from analysis.load import chain_states, load_sessions, load_trials
from analysis.prototypes import prototypes
from analysis.report import main as report
from mcmcp.config import config_from_dict
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import geodesic, normalize
from mcmcp.sim.study import GroundTruth, simulate_study

M = normalize(np.array([0.2, 0.6, -0.7]))
TRUTH = {"happy": VMFMixture.single(M, 20.0)}


def simulate(root, participant, paradigm, n_shown, gate=None, unguided=0):
    cfg = config_from_dict({
        "name": f"mixed_{paradigm}", "seed": 3, "emotions": ["happy"], "paradigm": paradigm,
        "chains": {"per_emotion": 4, "kappa_proposal": 5.0, "start": "fibonacci",
                   "unguided": unguided},
        "trials": {"per_chain": n_shown, "practice": 0, "catch_rate": 0.0},
        "gate": gate or {"kind": "none"},
        "agent": {"kind": "latent", "exponent": 1.0, "lapse": 0.05},
    }, "<test>", require_checkpoint=False)
    return simulate_study(cfg, root, [participant], GroundTruth("file", TRUTH)).folders[0]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "participants_data"
    simulate(root, "sim001", "mcmcp", 300)
    simulate(root, "sim002", "gsp", 60)
    simulate(root, "sim003", "gsp", 60, gate={"kind": "manual", "mean": [1.0, 0.0, 0.0],
                                               "kappa": 5.0, "gamma": 0.5, "anneal": None})
    return root


def test_gsp_chains_load_converge_and_find_the_prototype(mixed):
    trials = load_trials(mixed)
    gsp = trials[trials["paradigm"] == "gsp"]
    assert (gsp["kind"] == "chain").all() and gsp["gsp_choice"].notna().all()
    assert (trials.loc[trials["paradigm"] == "mcmcp", "gsp_choice"].isna()).all()
    states = chain_states(trials)
    # a GSP chain has one state per trial plus its start, each the point it confirmed (or stayed)
    n = states[states["participant"] == "sim002"].groupby("chain").size()
    assert (n == 61).all()
    conv = convergence(states[states["participant"] != "sim003"], by=["participant"])
    assert (conv["rhat_max"] < 1.1).all(), conv
    protos = prototypes(states, by=["participant"], n_boot=20)
    for participant in ("sim001", "sim002"):
        row = protos[(protos["participant"] == participant)].iloc[0]
        mean = row[[f"mean_{i}" for i in range(3)]].to_numpy(float)
        assert np.degrees(geodesic(mean, M)) < 8.0, (participant, row)
    # the gated GSP chains are de-guided like guided MCMCP ones
    gated = protos[protos["participant"] == "sim003"]
    assert set(gated["estimate"]) == {"guided (as sampled)", "de-guided (PSIS)"}
    deguided = gated[gated["estimate"] == "de-guided (PSIS)"].iloc[0]
    assert np.degrees(geodesic(deguided[[f"mean_{i}" for i in range(3)]].to_numpy(float), M)) \
        < 10.0 and deguided["khat"] < 0.7
    sessions = load_sessions(mixed)
    assert sessions["paradigm"].tolist() == ["mcmcp", "gsp", "gsp"]


def test_an_annealed_gate_fades_on_gsp_chains_and_spares_control_chains(tmp_path):
    """γ falls with each chain's slider trials and reaches 0 at `until`; control chains are
    never screened; the kept states then estimate p itself (no de-guiding)."""
    folder = simulate(tmp_path, "sim004", "gsp", 50,
                      gate={"kind": "manual", "mean": [1.0, 0.0, 0.0], "kappa": 5.0,
                            "gamma": 0.5, "anneal": {"until": 0.4}}, unguided=1)
    trials = load_trials(folder)
    assert len(trials) == 4 * 50
    trials = trials.sort_values(["chain", "iteration"])
    gamma = trials.groupby("chain")["gate_gamma"].apply(lambda g: g.to_numpy(float))
    for chain, g in gamma.items():
        if chain == 3:  # the control chain
            assert np.isnan(g).all()
            assert trials.loc[trials["chain"] == 3, "gate_prob"].isna().all()
        else:
            np.testing.assert_allclose(g, 0.5 * np.clip(1 - np.arange(50) / 50 / 0.4, 0, 1))
    protos = prototypes(chain_states(trials), by=["participant"], n_boot=20)
    assert set(protos["estimate"]) == {"unguided"}


@pytest.mark.slow
def test_report_says_the_paradigm_of_a_mixed_study(mixed, tmp_path):
    assert report([str(mixed / "sub-sim002"), "--out", str(tmp_path / "g"), "--bootstrap",
                   "20"]) == 0
    assert "Paradigm: GSP (Gibbs Sampling with People" in (tmp_path / "g/index.html").read_text()
    assert report([str(mixed), "--out", str(tmp_path / "m"), "--bootstrap", "20"]) == 0
    page = (tmp_path / "m/index.html").read_text()
    assert "Mixed study: 2 session(s) GSP, 1 session(s) MCMCP" in page
