"""Groups as groups: how far apart the participants' prototypes are, beyond their own errors.

Participants' true prototypes scatter around the group's mean direction; model them as
vMF(μ, κ_b), κ_b the between-participant concentration. A concentrated vMF on S^(d-1) is, in
the tangent plane at μ, a normal with variance τ² = 1/κ_b per axis (Watson 1983: 2κ(1 - μ·x)
~ χ²_{d-1}); each estimated prototype m̂_i adds its own Monte Carlo error, variance
s_i² = tr(S_i)/(d-1) per axis (S_i from its calibrated cone). So the tangent deviations t_i of
the prototypes from their mean direction are normal with variance τ² + s_i²: the random-effects
model of a meta-analysis. With weights w_i = 1 / (τ² + s_i²) the generalised Q statistic

    Q(τ²) = Σ w_i |t_i - t̄_w|²,   t̄_w = Σ w_i t_i / Σ w_i,

is χ² with ν = (d-1)(P-1) degrees of freedom at the true τ² and falls as τ² grows, so the
interval for τ² solves Q(τ²) = χ²_ν(0.975) and χ²_ν(0.025) (the Q-profile method, Viechtbauer
2007) and the estimate Q(τ²) = ν (Paule-Mandel); κ_b = 1/τ² (inf when the prototypes are no
more spread than their own errors explain). t_i is m̂_i projected on the tangent plane at the
mean direction and scaled to length √(2(1 - cos θ_i)), θ_i its angle from the mean, which keeps
2κ(1 - cos θ) exact for a vMF. Coverage: tests/analysis/test_groups_and_verdicts.py and
docs/verdicts.md.

Pure numpy/scipy; κ is a concentration (0 = uniform).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq
from scipy.stats import chi2
from scipy.stats import f as f_dist

from analysis.cones import tangent_basis


class Between(NamedTuple):
    """kappa: the between-participant concentration κ_b with its 95% interval [low, high]
    (inf: the prototypes are no more spread than their own errors explain); n: participants."""

    kappa: float
    low: float
    high: float
    n: int


def _deviations(x: np.ndarray) -> np.ndarray:
    """Tangent deviations (P, d-1) of unit vectors x (P, d) from their mean direction, each of
    length √(2(1 - cos θ))."""
    mean = x.sum(axis=0)
    mean = mean / np.linalg.norm(mean)
    t = x @ tangent_basis(mean)
    sin = np.linalg.norm(t, axis=1)
    chord = np.sqrt(np.clip(2.0 * (1.0 - x @ mean), 0.0, None))
    return t * np.where(sin > 1e-12, chord / np.maximum(sin, 1e-12), 1.0)[:, None]


def _q(tau2: float, t: np.ndarray, s2: np.ndarray) -> float:
    w = 1.0 / (tau2 + s2)
    centre = (w @ t) / w.sum()
    return float(w @ np.sum((t - centre) ** 2, axis=1))


def _solve(target: float, t: np.ndarray, s2: np.ndarray) -> float:
    """τ² with Q(τ²) = target (0 when Q(0) is below it already)."""
    if _q(0.0, t, s2) <= target:
        return 0.0
    hi = 1.0
    while _q(hi, t, s2) > target:
        hi *= 10.0
    return float(brentq(lambda v: _q(v, t, s2) - target, 0.0, hi, xtol=1e-14, rtol=1e-10))


def between_concentration(prototypes: np.ndarray, error: np.ndarray,
                          level: float = 0.95) -> Between:
    """κ_b from prototypes (P, d) unit vectors and their Monte Carlo error traces tr(S_i)
    (P,) in radians² (NaN counts as 0)."""
    x = np.asarray(prototypes, float)
    P, d = x.shape
    if P < 3:
        return Between(float("nan"), float("nan"), float("nan"), P)
    t = _deviations(x)
    s2 = np.maximum(np.nan_to_num(np.asarray(error, float)) / (d - 1), 1e-12)
    nu = (d - 1) * (P - 1)
    inv = lambda v: float("inf") if v <= 0 else 1.0 / v  # noqa: E731
    estimate = _solve(nu, t, s2)
    wide = _solve(chi2.ppf((1 - level) / 2, nu), t, s2)  # largest τ²: smallest κ
    narrow = _solve(chi2.ppf((1 + level) / 2, nu), t, s2)
    return Between(inv(estimate), inv(wide), inv(narrow), P)


def participants_for(kappa_between: float, within: float, precision_deg: float, d: int = 3,
                     level: float = 0.95, seed: int = 0, most: int = 2000) -> int:
    """The fewest participants (>= d) whose group cone (`analysis.cones.mean_cone`: Hotelling's
    T² over participants, the largest axis of its ellipse) is at most `precision_deg` in at
    least half of studies, when their prototypes scatter with between-participant concentration
    `kappa_between` and each carries a Monte Carlo variance `within` (radians² per tangent
    axis): each participant's deviation from the group mean is then about normal with variance
    1/κ_b + within per axis. The cone's median at n participants is simulated (400 studies of
    n normal deviations, seeded), bisecting on n; `most` + 1 when even `most` do not reach it."""
    p = d - 1
    per_axis = 1.0 / kappa_between + within
    target = np.radians(precision_deg)
    rng = np.random.default_rng(seed)

    def median_cone(n: int) -> float:
        dev = rng.normal(scale=np.sqrt(per_axis), size=(400, n, p))
        centred = dev - dev.mean(axis=1, keepdims=True)
        cov = np.einsum("snp,snq->spq", centred, centred) / (n - 1) / n
        t2 = p * (n - 1) / (n - p) * f_dist.ppf(level, p, n - p)
        return float(np.median(np.sqrt(t2 * np.linalg.eigvalsh(cov)[:, -1])))

    if median_cone(most) > target:
        return most + 1
    lo, hi = d, most  # median_cone falls with n
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if median_cone(mid) <= target else (mid + 1, hi)
    return lo
