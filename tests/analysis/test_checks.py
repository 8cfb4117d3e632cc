"""analysis.checks: which states an estimate may use (annealed, constant-gamma and control
chains); the end-to-end verdicts are in test_issue_cases.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import vonmises_fisher

from analysis.checks import FACT_COLUMNS, inference_checks, stationary_states, trial_facts
from mcmcp.schema import latent_columns


def chain_rows(chain: int, gamma: np.ndarray) -> pd.DataFrame:
    n = len(gamma)
    return pd.DataFrame({"participant": "p1", "session": 1, "chain": chain, "emotion": "sad",
                         "step": np.arange(n), "n_steps": n - 1, "x_0": 0.0, "x_1": 0.0,
                         "x_2": 1.0, "gate_gamma": pd.array(gamma, dtype="Float64"),
                         "shown": np.arange(n) > 0, "log_gate": np.nan})


def test_annealed_chains_keep_only_states_sampled_with_the_gate_off():
    annealed = np.r_[np.linspace(1, 0.1, 70), np.zeros(31)]  # gate off from step 70
    constant = np.full(101, 0.5)
    states = pd.concat([chain_rows(0, annealed), chain_rows(1, constant),
                        chain_rows(2, np.full(101, np.nan))], ignore_index=True)
    kept = stationary_states(states, 0.5)
    by = kept.groupby("chain")
    assert by["step"].min().tolist() == [70, 51, 51]  # annealed: burn-in outlasted by annealing
    assert by["sampler"].unique().map(list).tolist() == [["p"], ["guided"], ["p"]]


def test_a_chain_whose_gate_never_went_off_is_left_out_with_a_warning():
    never = np.linspace(1, 0.01, 101)
    states = pd.concat([chain_rows(0, never), chain_rows(1, np.full(101, np.nan))],
                       ignore_index=True)
    with pytest.warns(UserWarning, match="never sampled with the gate off"):
        kept = stationary_states(states, 0.5)
    assert kept["chain"].unique().tolist() == [1]


def test_trial_facts_count_catch_and_repeat_trials():
    rng = np.random.default_rng(0)
    n = 40
    coords = {c: rng.normal(size=n) for c in latent_columns("current", 3)
              + latent_columns("proposal", 3)}
    trials = pd.DataFrame({"participant": "p1", "session": 1, "row": np.arange(n),
                           "emotion": "sad", "kind": ["chain"] * 34 + ["repeat"] * 2
                           + ["catch"] * 4, "chose_proposal": [True, False] * 17 + [True, True]
                           + [None] * 4, "repeat_of": [None] * 34 + [0, 1] + [None] * 4,
                           "correct": [None] * 36 + [True, True, True, False],
                           "kappa_proposal": 5.0, **coords})
    facts = trial_facts(trials).iloc[0]
    assert (facts["n_chain_trials"], facts["acceptance"]) == (34, 0.5)
    assert (facts["n_catch"], facts["n_catch_correct"]) == (4, 3)
    assert (facts["n_repeat"], facts["n_repeat_disagree"]) == (2, 1)  # row 1 was False
    assert facts["kappa_proposal"] == 5.0


def test_a_short_session_is_called_too_short_not_two_modes():
    """Two chains of 9 kept states each, far apart (still where they started): no modes are
    claimed, the verdict says the states are too few; with 60 states each and the chains still
    apart, the mixture finds the two clusters."""
    rng = np.random.default_rng(3)

    def states(n):
        parts = []
        for chain, centre in ((0, [0.0, 0.0, 1.0]), (1, [1.0, 0.0, 0.0])):
            x = vonmises_fisher(np.array(centre), 50.0).rvs(2 * n, random_state=rng)
            part = chain_rows(chain, np.full(2 * n, np.nan))
            part[["x_0", "x_1", "x_2"]] = x
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    facts = pd.DataFrame(columns=FACT_COLUMNS)
    short = inference_checks(states(9), facts, group=False).iloc[0]
    assert np.isnan(short["n_modes"]) and "too few to look for modes" in short["verdict"]
    longer = inference_checks(states(60), facts, group=False).iloc[0]
    assert longer["n_modes"] == 2 and "two modes" in longer["verdict"]
