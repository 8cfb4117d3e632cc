"""Modes: how many separate regions a participant's chains settled in, and which chain is where.

A category with two modes breaks the one-mean summary: its spherical mean lands between the modes
(on a face nobody chose) and R-hat says "not converged, run longer" when the chains simply went
to different modes, which longer runs cannot fix. This module fits von Mises-Fisher mixtures with
K = 1..max_k components by EM (Banerjee et al. 2005, JMLR 6: the M-step is the vMF MLE of each
component's weighted states) from several seeded starts, and picks K by BIC.

Chain states are autocorrelated: n states are worth only n_eff independent ones, and a
log-likelihood summed over n correlated states overstates the evidence n / n_eff times, which
makes BIC split a single mode. `choose_modes` therefore scales the log-likelihood by n_eff / n
and charges the BIC penalty log(n_eff) per parameter (a mixture of K vMFs on S^(d-1) has
K(d - 1) mean directions, K concentrations and K - 1 weights). A component counts as a mode only
if it holds at least MIN_MODE_WEIGHT of the states and its mean is more than MIN_SEPARATION_DEG
from every heavier mode's: a run of rejected proposals (a chain sitting on one point for a while)
is a narrow cluster of identical states, not a mode.

Pure functions of arrays: x (n, d) unit vectors, optional importance weights (n,) and chain
labels (n,) ints 0..C-1. Angles in degrees in outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ive

from analysis.prototypes import angle_deg
from mcmcp.sampling import sphere
from mcmcp.sampling.densities import VMFMixture

MIN_MODE_WEIGHT = 0.1
MIN_SEPARATION_DEG = 45.0
# Concentration cap of a component: a chain stuck on one point is n identical states whose vMF
# MLE is infinite; 2000 is a 1.3-degree spread, finer than any face difference a person sees.
KAPPA_MAX = 2000.0
MAJORITY = 0.8  # a chain "sits in" a mode when this share of its states is there


def _kappa(rbar: np.ndarray, d: int) -> np.ndarray:
    """vMF MLE concentrations (K,) of mean resultant lengths rbar (K,), capped at KAPPA_MAX:
    Banerjee et al.'s approximation, then Newton on A_d(κ) = rbar (Sra 2012), vectorised."""
    r = np.clip(rbar, 1e-9, 1.0 - 1e-12)
    kappa = np.minimum(r * (d - r**2) / (1.0 - r**2), KAPPA_MAX)
    for _ in range(6):
        a = ive(d / 2.0, kappa) / ive(d / 2.0 - 1.0, kappa)
        kappa = kappa - (a - r) / (1.0 - a**2 - (d - 1.0) / kappa * a)
        kappa = np.clip(kappa, 1e-9, KAPPA_MAX)
    return kappa


def _log_components(x: np.ndarray, mix: VMFMixture) -> np.ndarray:
    """log(weight_k * vMF_k(x_i)), shape (n, K)."""
    d = x.shape[1]
    return (np.log(mix.weights) + sphere.log_vmf_normaliser(mix.kappas, d)
            + (x @ mix.means.T) * mix.kappas)


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """log sum exp over the components of (n, K) (numpy: scipy's is slow on small K)."""
    top = a.max(axis=1)
    return top + np.log(np.exp(a - top[:, None]).sum(axis=1))


def _em(x: np.ndarray, w: np.ndarray, start: np.ndarray, max_iter: int,
        tol: float) -> tuple[VMFMixture, float]:
    """EM from initial means start (K, d); w: state weights summing to n. (mixture, log-lik)."""
    n, d = x.shape
    k = len(start)
    mix = VMFMixture(start, np.full(k, 1.0), np.full(k, 1.0 / k))
    last = -np.inf
    for _ in range(max_iter):
        logc = _log_components(x, mix)
        norm = _logsumexp_rows(logc)
        loglik = float(w @ norm)
        resp = np.exp(logc - norm[:, None]) * w[:, None]  # (n, K)
        mass = resp.sum(axis=0)
        if np.any(mass <= 1e-9 * n):  # an empty component: this start is degenerate
            return mix, -np.inf
        resultant = resp.T @ x  # (K, d)
        length = np.linalg.norm(resultant, axis=1)
        kappas = _kappa(length / mass, d)
        mix = VMFMixture(resultant / length[:, None], kappas, mass / mass.sum())
        if loglik - last < tol * abs(loglik):
            break
        last = loglik
    return mix, float(w @ _logsumexp_rows(_log_components(x, mix)))


def fit_vmf_mixture(x: np.ndarray, k: int, weights: np.ndarray | None = None,
                    restarts: int = 4, seed: int = 0, max_iter: int = 200,
                    tol: float = 1e-7) -> tuple[VMFMixture, float]:
    """Maximum-likelihood mixture of k vMFs for unit vectors x (n, d), by EM from `restarts`
    k-means++ starts drawn with `seed`; the best log-likelihood wins.

    weights: importance weights (any scale; None = equal). Returns (mixture, log-likelihood
    sum_i w_i log f(x_i) with w scaled to sum to n). Concentrations are capped at KAPPA_MAX.
    """
    x = np.asarray(x, float)
    n = len(x)
    w = np.ones(n) if weights is None else np.asarray(weights, float) * n / np.sum(weights)
    rng = np.random.default_rng(seed)
    best: tuple[VMFMixture, float] | None = None
    for _ in range(1 if k == 1 else restarts):
        starts = [x[rng.choice(n, p=w / n)]]
        for _ in range(k - 1):  # k-means++: far from the starts so far, in proportion
            far = np.maximum(1.0 - np.max(x @ np.array(starts).T, axis=1), 0.0) * w
            starts.append(x[rng.choice(n, p=far / far.sum())] if far.sum() > 0 else starts[0])
        fit = _em(x, w, np.array(starts), max_iter, tol)
        if best is None or fit[1] > best[1]:
            best = fit
    return best


class ModeFit(NamedTuple):
    """The mixture BIC chose for one set of states.

    k: components chosen (1..max_k); bic: (max_k,) BIC of K = 1..max_k (lower is better;
    inf where EM failed); mixture: the chosen fit, components sorted by weight (heaviest first);
    modes: indices into mixture's components that count as modes (weight >= MIN_MODE_WEIGHT,
    separated by > MIN_SEPARATION_DEG from heavier modes), heaviest first; labels: (n,) the mode
    (index into `modes`) most responsible for each state.
    """

    k: int
    bic: np.ndarray
    mixture: VMFMixture
    modes: np.ndarray
    labels: np.ndarray

    @property
    def n_modes(self) -> int:
        return len(self.modes)


def choose_modes(x: np.ndarray, n_eff: float, weights: np.ndarray | None = None,
                 max_k: int = 3, seed: int = 0) -> ModeFit:
    """Fit K = 1..max_k vMF mixtures to x (n, d) and choose K by BIC with n_eff effective
    states (see the module docstring); n_eff <= n, e.g. the summed ESS of the chains."""
    x = np.asarray(x, float)
    n, d = x.shape
    n_eff = float(min(max(n_eff, 2.0), n))
    fits, bic = [], np.full(max_k, np.inf)
    for k in range(1, max_k + 1):
        mix, loglik = fit_vmf_mixture(x, k, weights, seed=seed + k)
        fits.append(mix)
        if np.isfinite(loglik):
            n_params = k * (d - 1) + k + (k - 1)
            bic[k - 1] = -2.0 * loglik * n_eff / n + n_params * np.log(n_eff)
    k = int(np.argmin(bic)) + 1
    mix = fits[k - 1]
    order = np.argsort(-mix.weights, kind="stable")
    mix = VMFMixture(mix.means[order], mix.kappas[order], mix.weights[order])
    modes: list[int] = []
    for j in range(k):
        if mix.weights[j] < MIN_MODE_WEIGHT:
            continue
        if all(angle_deg(mix.means[j], mix.means[i]) > MIN_SEPARATION_DEG for i in modes):
            modes.append(j)
    modes_arr = np.array(modes, dtype=int)
    # each state goes to the nearest counted mode (by component log density)
    logc = _log_components(x, mix)[:, modes_arr]
    return ModeFit(k, bic, mix, modes_arr, np.argmax(logc, axis=1))


def chain_shares(labels: np.ndarray, chain_index: np.ndarray, n_modes: int,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """(C, n_modes) share of each chain's states (weighted) in each mode."""
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, float)
    n_chains = int(chain_index.max()) + 1
    out = np.zeros((n_chains, n_modes))
    np.add.at(out, (chain_index, labels), w)
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-300)


def chains_split(shares: np.ndarray) -> bool:
    """True when chains that sit mostly (>= MAJORITY of their states) in one mode do not all sit
    in the same one: they agree within modes but not across, which is what R-hat then sees (a
    chain that crossed between modes sits in neither)."""
    sitting = shares.max(axis=1) >= MAJORITY
    return bool(len(np.unique(np.argmax(shares[sitting], axis=1))) > 1)


def visited(x: np.ndarray, centre: np.ndarray, kappa: float) -> float:
    """Share of the states x (n, d) inside the region of a vMF(centre, kappa) mode: within
    three of its angular standard deviations (sqrt(2 / kappa) radians on S^2), at least 10
    degrees."""
    radius = max(np.degrees(3.0 * np.sqrt(2.0 / max(kappa, 1e-9))), 10.0)
    return float(np.mean(angle_deg(x, centre) <= radius))
