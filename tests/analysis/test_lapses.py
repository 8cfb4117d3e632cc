"""analysis.lapses: lapse rates from catch and repeat trials (closed forms, simulated agents) and
the width correction (simulated truth): directions unchanged, kappa corrected."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, vonmises_fisher

from analysis.lapses import corrected_kappa, lapse_bound_from_repeats, lapse_from_catch
from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sim.chains import simulate_chains

M = np.array([0.0, 0.6, 0.8])


def test_lapse_from_catch_is_twice_the_error_rate():
    lapse = lapse_from_catch(18, 20)
    ci = binomtest(2, 20).proportion_ci(0.95, method="exact")
    assert lapse.estimate == pytest.approx(0.2) and lapse.n == 20
    assert (lapse.low, lapse.high) == pytest.approx((2 * ci.low, 2 * ci.high))
    assert lapse_from_catch(20, 20).estimate == 0.0 and lapse_from_catch(3, 20).high == 1.0
    assert np.isnan(lapse_from_catch(0, 0).estimate)


def test_lapses_of_an_agent_are_recovered_from_catch_and_repeat_trials():
    """An agent with lapse 0.1 answers clear pairs (target vs a far foil) twice: catch accuracy
    estimates the lapse, disagreement between the two answers bounds it (tight for clear pairs)."""
    agent = LatentAgent({"sad": VMFMixture.single(M, 50.0)}, lapse=0.1)
    rng = np.random.default_rng(0)
    n = 4000
    target, foil = np.tile(M, (n, 1)), np.tile(-M, (n, 1))
    first = agent.choose("sad", foil, target, rng).chose_right
    again = agent.choose("sad", target, foil, rng).chose_right  # sides swapped
    catch = lapse_from_catch(int(first.sum()), n)
    assert catch.low < 0.1 < catch.high and catch.estimate == pytest.approx(0.1, abs=0.03)
    repeat = lapse_bound_from_repeats(int(np.sum(first == again)), n)  # same side = disagree
    assert repeat.low < 0.1 < repeat.high


def test_lapse_keeps_the_direction_and_the_width_is_corrected():
    """The issue's case: category kappa 20, lapse 0.05, kappa_proposal 5. The stationary law is
    flatter (kappa ~13) but centred on the truth; the correction, calibrated on separately
    simulated chains, gives back ~20."""
    agent = LatentAgent({"sad": VMFMixture.single(M, 20.0)}, lapse=0.05)
    rng = np.random.default_rng(11)
    start = vonmises_fisher(M, 20.0).rvs(300, random_state=rng)
    trace = simulate_chains(start, 400, 5.0, agent, "sad", None, rng)
    mu, kappa = vonmises_fisher.fit(trace.current[100:].reshape(-1, 3))
    assert np.degrees(np.arccos(mu @ M)) < 1.0
    assert 11.5 < kappa < 15.5
    assert corrected_kappa(kappa, 0.05, 5.0) == pytest.approx(20.0, rel=0.1)
    assert corrected_kappa(kappa, 0.0, 5.0) == pytest.approx(kappa, rel=0.1)
    assert corrected_kappa(1e4, 0.05, 5.0) == np.inf  # beyond any kappa under this lapse
