"""Confidence cones for a (weighted) mean direction that account for autocorrelation and weights.

Resampling the 4 chains of a participant (the old bootstrap cone) has only 4 units to draw from,
so its 95% cone covers the truth far less than 95% of the time. Here the states are cut into
units that are nearly independent of each other: each chain's kept states into `n_batches`
contiguous batches (batch means, Flegal & Jones 2010), or, for a group estimate, the
participants. The weighted mean m̄ = sum_i w_i x_i / W is a ratio estimator; linearised, its
error in the tangent plane at the estimate m̂ = m̄ / |m̄| is

    t = E' (m̄ - E[m̄]) / |m̄| ≈ sum_b E' (R_b - W_b m̄) / (W |m̄|),

with R_b, W_b the weighted sum and total weight of unit b and E (d, d-1) an orthonormal basis of
the tangent plane. The B unit terms u_b = E'(R_b - W_b m̄) give the covariance
S = B / (B - 1) sum_b u_b u_b' / (W |m̄|)^2 of t, and Hotelling's T² gives the region
t' S^-1 t <= p (B - 1) / (B - p) F_{p, B-p}(level), p = d - 1. The cone reported is that
ellipse's largest semi-axis, an angle around m̂ (small-angle: a tangent length is an angle).

Pure numpy/scipy; angles in degrees in outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import f as f_dist
from scipy.stats import norm

from mcmcp.sampling import sphere

BATCHES_PER_CHAIN = 5  # benchmarks/bench_guided.py: 95% cones cover 95-98% (10 per chain: ~91%)
MIN_UNITS = 10  # fewer chains get more, shorter batches: T² with 4 units has almost no power


class Cone(NamedTuple):
    """mean (d,) unit vector; cone_deg: half-angle of the confidence cone (NaN with too few
    units); cov (d-1, d-1): covariance of the tangent error (radians^2) in `basis` (d, d-1);
    n_units: the units it rests on."""

    mean: np.ndarray
    cone_deg: float
    cov: np.ndarray
    basis: np.ndarray
    n_units: int


def tangent_basis(m: np.ndarray) -> np.ndarray:
    """An orthonormal basis (d, d-1) of the tangent plane at the unit vector m (d,)."""
    d = len(m)
    q, _ = np.linalg.qr(np.column_stack([m, np.eye(d)]))
    return q[:, 1:d]


def batch_units(chain_index: np.ndarray, n_batches: int | None = None) -> np.ndarray:
    """Unit labels (n,): each chain's states (in the order given, which must be the chain's
    order) cut into `n_batches` contiguous batches of (nearly) equal length; default
    BATCHES_PER_CHAIN, more when there are too few chains for MIN_UNITS units."""
    chain_index = np.asarray(chain_index)
    if n_batches is None:
        n_chains = len(np.unique(chain_index))
        n_batches = max(BATCHES_PER_CHAIN, -(-MIN_UNITS // n_chains))
    units = np.empty(len(chain_index), dtype=np.int64)
    for c in np.unique(chain_index):
        rows = np.flatnonzero(chain_index == c)
        k = min(n_batches, len(rows))
        units[rows] = c * n_batches + (np.arange(len(rows)) * k) // len(rows)
    return np.unique(units, return_inverse=True)[1]


def mean_cone(x: np.ndarray, units: np.ndarray, weights: np.ndarray | None = None,
              level: float = 0.95) -> Cone:
    """The (weighted) mean direction of x (n, d) and its confidence cone from `units` (n,) ints
    labelling nearly independent groups of states (`batch_units`, or participants)."""
    x = np.asarray(x, float)
    n, d = x.shape
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    _, units = np.unique(units, return_inverse=True)
    b = int(units.max()) + 1
    total = w.sum()
    mbar = (w @ x) / total
    length = float(np.linalg.norm(mbar))
    mean = mbar / length
    basis = tangent_basis(mean)
    sums = np.zeros((b, d))
    np.add.at(sums, units, w[:, None] * x)
    wsum = np.bincount(units, w, b)
    u = (sums - wsum[:, None] * mbar) @ basis  # (B, d-1), sums to 0
    p = d - 1
    cov = (b / max(b - 1, 1)) * (u.T @ u) / (total * length) ** 2
    if b <= p:
        return Cone(mean, float("nan"), cov, basis, b)
    t2 = p * (b - 1) / (b - p) * f_dist.ppf(level, p, b - p)
    radius = np.sqrt(t2 * np.linalg.eigvalsh(cov).max())
    return Cone(mean, float(np.degrees(min(radius, np.pi))), cov, basis, b)


def kappa_interval(x: np.ndarray, units: np.ndarray, level: float = 0.95
                   ) -> tuple[float, float]:
    """An interval for the vMF concentration of x (n, d) from the leave-one-unit-out jackknife
    over `units` (batches or participants): kappa-hat -+ z * SE, floored at 0."""
    from analysis.prototypes import fit_vmf  # prototypes imports nothing from here

    _, units = np.unique(units, return_inverse=True)
    b = int(units.max()) + 1
    kappa = fit_vmf(x)[1]
    if b < 3:
        return float("nan"), float("nan")
    loo = np.array([fit_vmf(x[units != u])[1] for u in range(b)])
    se = np.sqrt((b - 1) / b * np.sum((loo - loo.mean()) ** 2))
    z = float(norm.ppf(0.5 + level / 2))
    return max(kappa - z * se, 0.0), kappa + z * se


def inside(cone: Cone, truth: np.ndarray) -> bool:
    """True if `truth` (d,) lies within the cone's angle of its mean (what coverage counts)."""
    return bool(np.degrees(sphere.geodesic(cone.mean, np.asarray(truth, float))) <= cone.cone_deg)
