"""analysis.modes: vMF mixtures by EM against scipy's vMF, BIC with effective samples, chains
split between modes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import vonmises_fisher

from analysis.modes import chain_shares, chains_split, choose_modes, fit_vmf_mixture, visited
from analysis.prototypes import angle_deg
from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import normalize, rotate_towards
from mcmcp.sim.chains import simulate_chains

M = normalize(np.array([0.2, 0.9, -0.3]))
FAR = rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.radians(159.0))


def mixture_sample(n, seed):
    """n iid draws: 0.7 vMF(M, 30) + 0.3 vMF(FAR, 10), drawn with scipy."""
    rng = np.random.default_rng(seed)
    k = rng.binomial(n, 0.7)
    return np.concatenate([vonmises_fisher(M, 30.0).rvs(k, random_state=rng),
                           vonmises_fisher(FAR, 10.0).rvs(n - k, random_state=rng)])


def test_one_component_is_scipys_mle():
    x = vonmises_fisher(M, 12.0).rvs(3000, random_state=1)
    mix, loglik = fit_vmf_mixture(x, 1)
    mu, kappa = vonmises_fisher.fit(x)
    assert angle_deg(mix.means[0], mu) < 1e-6 and mix.kappas[0] == pytest.approx(kappa, rel=1e-6)
    assert loglik == pytest.approx(vonmises_fisher(mu, kappa).logpdf(x).sum(), rel=1e-9)


def test_two_components_are_recovered():
    mix, _ = fit_vmf_mixture(mixture_sample(4000, 2), 2)
    heavy, light = np.argsort(-mix.weights)
    assert angle_deg(mix.means[heavy], M) < 1.5 and angle_deg(mix.means[light], FAR) < 3.0
    assert mix.kappas[heavy] == pytest.approx(30.0, rel=0.1)
    assert mix.kappas[light] == pytest.approx(10.0, rel=0.15)
    assert mix.weights[heavy] == pytest.approx(0.7, abs=0.03)


def test_bic_counts_modes_of_independent_samples():
    one = vonmises_fisher(M, 20.0).rvs(600, random_state=3)
    assert choose_modes(one, n_eff=600).n_modes == 1
    fit = choose_modes(mixture_sample(600, 4), n_eff=600)
    assert fit.n_modes == 2 and fit.k == 2
    assert angle_deg(fit.mixture.means[fit.modes[0]], M) < 3
    # the labels say which mode each state is nearest
    assert np.mean(fit.labels[angle_deg(mixture_sample(600, 4), M) < 20] == 0) > 0.99


def test_chains_in_two_modes_split_and_a_single_mode_does_not():
    """Chains of a two-mode category (modes 159 deg apart), two started 30 deg from each mode,
    stay there; chains of a one-mode category are one mode, though their states are
    autocorrelated (BIC on n_eff)."""
    two = VMFMixture(np.array([M, FAR]), np.array([20.0, 20.0]), np.array([0.5, 0.5]))
    side = np.array([0.0, 0.0, 1.0])
    starts = np.array([rotate_towards(m, s * side, np.radians(30)) for m in (M, FAR)
                       for s in (1, -1)])
    for truth, expect_modes in ((two, 2), (VMFMixture.single(M, 20.0), 1)):
        agent = LatentAgent({"sad": truth})
        rng = np.random.default_rng(5)
        trace = simulate_chains(starts, 250, 5.0, agent, "sad", None, rng)
        kept = trace.current[trace.current.shape[0] // 2:]  # (T, 4, 3), no gate: all active
        x = kept.reshape(-1, 3)
        chain = np.tile(np.arange(4), len(kept))
        fit = choose_modes(x, n_eff=60)
        assert fit.n_modes == expect_modes
        shares = chain_shares(fit.labels, chain, fit.n_modes)
        np.testing.assert_allclose(shares.sum(axis=1), 1.0)
        assert chains_split(shares) == (expect_modes == 2)


def test_visited():
    x = vonmises_fisher(M, 50.0).rvs(500, random_state=6)
    assert visited(x, M, 50.0) > 0.99 and visited(x, FAR, 200.0) == 0.0
