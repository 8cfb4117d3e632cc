"""Lapses: how often a participant answered at random, and what that does to the width.

With lapse rate λ a person picks the proposal with probability (1 - λ)·p'/(p + p') + λ/2. The
chain's detailed balance then fails (docs/methods.md, "Lapses"): its stationary law is
flatter than p and has no closed form, except in the small-step limit, where the chain is a
diffusion with drift (1 - λ)∇log p and the stationary law is p^(1-λ) (for a vMF, κ(1 - λ)). With
steps of tens of degrees it is much flatter: κ 20 looks like κ 13.4 at λ = 0.05 with
κ_proposal 5. Directions are unbiased for a rotationally symmetric unimodal category (the kernel
commutes with rotations about the mean axis); widths are not.

- `lapse_from_catch`: if an attentive answer to a catch trial is always the target, accuracy is
  1 - λ/2, so λ̂ = 2·(1 - accuracy), with a Clopper-Pearson interval.
- `lapse_bound_from_repeats`: a repeated pair is answered differently with probability
  2π(1 - π) at a choice probability π, which is at least λ(1 - λ/2) (π = λ/2 or 1 - λ/2), so a
  disagreement rate D bounds λ <= 1 - sqrt(1 - 2D).
- `stationary_kappa` / `corrected_kappa`: the fitted κ of the stationary law of the same kernel
  (vMF random walk with the session's κ_proposal, Luce choice with lapse λ) simulated over a grid
  of true κ, inverted by monotone interpolation. Where the map flattens out (large κ, large λ)
  no width fits the data better than a bound: `corrected_kappa` then returns inf as the upper end.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy.stats import binomtest, vonmises_fisher

from analysis.prototypes import fit_vmf

KAPPA_GRID = np.geomspace(0.5, 1000.0, 22)


class Lapse(NamedTuple):
    """estimate in [0, 1] and its 95% interval [low, high]; n trials it rests on."""

    estimate: float
    low: float
    high: float
    n: int


def lapse_from_catch(n_correct: int, n: int) -> Lapse:
    """λ from catch-trial accuracy (NaN with no catch trials)."""
    if n == 0:
        return Lapse(float("nan"), float("nan"), float("nan"), 0)
    errors = n - n_correct
    ci = binomtest(errors, n).proportion_ci(0.95, method="exact")
    clip = lambda v: float(min(max(2.0 * v, 0.0), 1.0))  # noqa: E731
    return Lapse(clip(errors / n), clip(ci.low), clip(ci.high), n)


def lapse_bound_from_repeats(n_disagree: int, n: int) -> Lapse:
    """Upper bound on λ from repeat trials answered differently from their originals: the
    estimate is the bound at the observed rate, [low, high] the bound over its 95% interval."""
    if n == 0:
        return Lapse(float("nan"), float("nan"), float("nan"), 0)
    ci = binomtest(n_disagree, n).proportion_ci(0.95, method="exact")
    bound = lambda rate: float(1.0 - np.sqrt(max(1.0 - 2.0 * min(rate, 0.5), 0.0)))  # noqa: E731
    return Lapse(bound(n_disagree / n), bound(ci.low), bound(ci.high), n)


@lru_cache(maxsize=64)
def _stationary_map(lapse: float, kappa_proposal: float, d: int, seed: int) -> np.ndarray:
    """Fitted κ of the stationary law for each true κ in KAPPA_GRID (cached; about a second):
    N_CHAINS chains per κ, all simulated at once, started in the category (a lapse only widens
    it, so little burn-in is needed)."""
    from mcmcp.agents import LuceAgent
    from mcmcp.sim.chains import simulate_chains

    class GridAgent(LuceAgent):
        """Chain i's category is vMF(e_1, kappa[i]). Without a gate every chain is shown every
        trial, so the rows `choose` scores (left then right) are the chains in order."""

        def log_preference(self, emotion: str, x: np.ndarray, identity=None) -> np.ndarray:
            return np.tile(kappa, 2) * x[:, 0]

    n_chains, n_steps = 500, 300
    kappa = np.repeat(KAPPA_GRID, n_chains)
    rng = np.random.default_rng(seed)
    start = np.concatenate([vonmises_fisher(np.eye(d)[0], k).rvs(n_chains, random_state=rng)
                            .reshape(n_chains, d) for k in KAPPA_GRID])
    trace = simulate_chains(start, n_steps, kappa_proposal, GridAgent(lapse=lapse), "any", None,
                            rng)
    kept = trace.current[n_steps // 3:].reshape(-1, len(KAPPA_GRID), n_chains, d)
    out = np.array([fit_vmf(kept[:, i].reshape(-1, d))[1] for i in range(len(KAPPA_GRID))])
    return np.maximum.accumulate(out)  # monotone in κ up to simulation noise


def stationary_kappa(kappa: float, lapse: float, kappa_proposal: float, d: int = 3,
                     seed: int = 0) -> float:
    """The κ a vMF fit to the chain's stationary law gives for a category of concentration
    `kappa` answered with lapse rate `lapse` (interpolated on KAPPA_GRID in log κ)."""
    table = _stationary_map(round(float(lapse), 3), float(kappa_proposal), d, seed)
    return float(np.exp(np.interp(np.log(kappa), np.log(KAPPA_GRID), np.log(table))))


def corrected_kappa(kappa_hat: float, lapse: float, kappa_proposal: float, d: int = 3,
                    seed: int = 0) -> float:
    """The category κ whose stationary law under lapse `lapse` has fitted κ `kappa_hat`:
    inf when kappa_hat is at or beyond what any κ on the grid produces (the map has flattened
    out: the data say only that κ is large), NaN with NaN lapse. Give it the ends of λ's
    interval too: where the map is flat the corrected κ moves a lot with λ."""
    if not np.isfinite(lapse):
        return float("nan")
    table = _stationary_map(round(float(lapse), 3), float(kappa_proposal), d, seed)
    if kappa_hat >= table[-1]:
        return float("inf")
    if kappa_hat <= table[0]:
        return float(KAPPA_GRID[0])
    rising = np.concatenate([[True], np.diff(table) > 0])
    return float(np.exp(np.interp(np.log(kappa_hat), np.log(table[rising]),
                                  np.log(KAPPA_GRID[rising]))))
