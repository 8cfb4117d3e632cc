"""analysis.diagnostics on simulated studies whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import vonmises_fisher

from analysis import chain_states, load_trials
from analysis import diagnostics as dg
from mcmcp.sampling.densities import VMFMixture


def test_rhat_flags_short_far_apart_chains_and_passes_long_mixed_ones(tmp_path,
                                                                       analysis_simulate):
    truth = {"happy": VMFMixture.single([0.0, 0.0, 1.0], 20.0)}
    # Tight proposals (about 3 degrees a step) from starts spread over the sphere, 40 steps:
    # the chains are still far apart.
    [short] = analysis_simulate(tmp_path / "a", ["sim001"], truth, seed=1, n_shown=40,
                                kappa_proposal=300.0)
    conv = dg.convergence(chain_states(load_trials(short)))
    assert conv["rhat_max"].iloc[0] > 1.1
    assert conv["verdict"].iloc[0].startswith("not converged")
    [long] = analysis_simulate(tmp_path / "b", ["sim001"], truth, seed=2, n_shown=1500,
                               kappa_proposal=30.0)
    conv = dg.convergence(chain_states(load_trials(long)))
    assert conv["rhat_max"].iloc[0] < 1.05
    assert conv["ess_bulk_min"].iloc[0] > 100
    assert conv["verdict"].iloc[0] == "converged"


def test_rhat_ess_of_independent_draws():
    x = vonmises_fisher([0.0, 0.6, 0.8], 5.0).rvs((4, 500), random_state=np.random.default_rng(0))
    stats = dg.rhat_ess(x)
    assert stats["rhat_max"] < 1.01
    assert 1400 < stats["ess_bulk_min"] < 2600  # iid: ESS near the 2000 draws


def test_catch_trials_flag_the_inattentive_participant(analysis_small_study):
    trials = load_trials(analysis_small_study)
    flags = dg.participant_flags(trials)
    assert flags.set_index("participant")["flagged"].to_dict() == {
        "sim001": False, "sim002": False, "sim003": True}
    row = flags.set_index("participant").loc["sim003"]
    assert row["accuracy"] < 0.8 and "catch accuracy" in row["reasons"]
    catch = trials[(trials["kind"] == "catch") & (trials["participant"] == "sim001")]
    assert flags.set_index("participant").loc["sim001", "n_catch"] == len(catch) == 40


def test_response_times_and_fast_flag(analysis_small_study):
    trials = load_trials(analysis_small_study)
    shown = trials["kind"].isin(["chain", "catch", "repeat"]) & (trials["participant"] == "sim002")
    trials.loc[shown[shown].index[::4], "rt"] = 0.15  # a quarter of answers too fast
    rts = trials.loc[shown, "rt"].astype(float).to_numpy()
    table = dg.response_times(trials).set_index("participant")
    q25, med, q75 = np.percentile(rts, [25, 50, 75])
    assert table.loc["sim002", "median"] == pytest.approx(med)
    assert table.loc["sim002", "iqr"] == pytest.approx(q75 - q25)
    assert table.loc["sim002", "frac_fast"] == pytest.approx(np.mean(rts < 0.2))
    flags = dg.participant_flags(trials).set_index("participant")
    assert flags.loc["sim002", "flagged"] and "faster than 0.2 s" in flags.loc["sim002", "reasons"]
    assert not flags.loc["sim001", "flagged"]


def test_acceptance_counts_shown_trials(tmp_path, analysis_simulate):
    truth = {"sad": VMFMixture.single([0.0, 1.0, 0.0], 10.0)}
    gate = {"kind": "manual", "mean": [0.0, 1.0, 0.0], "kappa": 5.0, "gamma": 2.0}
    trials = load_trials(analysis_simulate(tmp_path, ["sim001"], truth, seed=4, n_shown=60,
                                           gate=gate)[0])
    table = dg.acceptance(trials).set_index("chain")
    for chain, rows in trials.groupby("chain"):
        shown = rows[rows["kind"] == "chain"]
        assert len(shown) == 60  # every chain runs until 60 trials were shown
        assert table.loc[chain, "acceptance"] == pytest.approx(shown["accepted"].mean())
        assert table.loc[chain, "gate_pass"] == pytest.approx(60 / len(rows))
    assert (table["gate_pass"] < 1).all()


def test_autocorrelation_matches_direct_formula(analysis_small_study):
    states = chain_states(load_trials(analysis_small_study))
    acf = dg.autocorrelation(states, max_lag=5)
    one = states[(states["participant"] == "sim001") & (states["chain"] == 0)]
    x = one["x_2"].to_numpy()[one["step"].to_numpy() > 60]
    x = x - x.mean()
    direct = [np.sum(x[: len(x) - k] * x[k:]) / np.sum(x * x) for k in range(6)]
    got = acf[(acf["participant"] == "sim001") & (acf["chain"] == 0) &
              (acf["coordinate"] == "x_2")]["acf"].to_numpy()
    np.testing.assert_allclose(got, direct, atol=1e-10)
