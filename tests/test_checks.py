"""analysis.checks: which states an estimate may use (annealed, constant-gamma and control
chains); the end-to-end verdicts are in test_issue_cases.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.checks import stationary_states


def chain_rows(chain: int, gamma: np.ndarray) -> pd.DataFrame:
    n = len(gamma)
    return pd.DataFrame({"participant": "p1", "session": 1, "chain": chain, "emotion": "sad",
                         "step": np.arange(n), "n_steps": n - 1, "x_0": 0.0, "x_1": 0.0,
                         "x_2": 1.0, "gate_gamma": pd.array(gamma, dtype="Float64")})


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
