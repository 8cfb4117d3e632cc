"""Confidence cones for a (weighted) mean direction that account for autocorrelation and weights.

Two estimators of the same linearised error (below), for two kinds of data:
- `mcse_cone`, one participant's chains (the report's cone, the verdicts' precision): the Monte
  Carlo standard error of each tangent coordinate of the mean from the multi-chain effective
  sample size of Vehtari et al. (2021) (ArviZ `ess(method="mean")`: split chains, between-chain
  variance inside the variance, Geyer's initial monotone sequence), and a t-type quantile with
  ESS - 1 degrees of freedom. With 4 chains of 50 kept states the ESS is often 6-20; a normal
  quantile then covers 85-92%, the F quantile 93-97% (docs/verdicts.md, the coverage table).
- `mean_cone`, units that are independent of each other (participants for a group estimate;
  batches of independent draws in the tests): Hotelling's T² over the units.
Resampling the 4 chains of a participant (the old bootstrap cone) has only 4 units to draw
from and covers far less than 95%; batch means with 5 batches per chain (the previous cone)
covered 67-85% at 4 x 100 trials for narrow categories, whose chains move rarely.

The weighted mean m̄ = sum_i w_i x_i / W is a ratio estimator; linearised, its
error in the tangent plane at the estimate m̂ = m̄ / |m̄| is

    t = E' (m̄ - E[m̄]) / |m̄| ≈ sum_b E' (R_b - W_b m̄) / (W |m̄|),

with R_b, W_b the weighted sum and total weight of unit b and E (d, d-1) an orthonormal basis of
the tangent plane. Per state, t is the mean of z_i = N w_i E'(x_i - m̄) / (W |m̄|), whose Monte
Carlo error `mcse_cone` estimates along each tangent axis; the cone's radius r solves
r² = F_{p, ν}(level) · tr(S), S the covariance of t and ν = ESS - 1 (for an isotropic normal
error and ν -> ∞ this is the circle holding `level` of it: r² = σ² χ²_p(level)). In `mean_cone`
the B unit terms u_b = E'(R_b - W_b m̄) give the covariance
S = B / (B - 1) sum_b u_b u_b' / (W |m̄|)^2 of t, and Hotelling's T² gives the region
t' S^-1 t <= p (B - 1) / (B - p) F_{p, B-p}(level), p = d - 1. The cone reported is that
ellipse's largest semi-axis, an angle around m̂ (small-angle: a tangent length is an angle).

Pure numpy/scipy; angles in degrees in outputs.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import arviz as az
import numpy as np
from scipy.stats import f as f_dist
from scipy.stats import norm

from mcmcp.sampling import sphere

BATCHES_PER_CHAIN = 5  # units of the jackknife of kappa (`kappa_interval`) within a participant
MIN_UNITS = 10  # fewer chains get more, shorter batches: T² with 4 units has almost no power
# mcse_cone: fewer kept states in a chain and its split halves are too short for an ESS (a
# 2 x 10-trial design, 5 states per chain, gave 4° cones for 4° errors)
MIN_CHAIN_STATES = 10


class Cone(NamedTuple):
    """mean (d,) unit vector; cone_deg: half-angle of the confidence cone (NaN with too few
    units); cov (d-1, d-1): covariance of the tangent error (radians^2) in `basis` (d, d-1);
    n_units: the units it rests on (`mcse_cone`: the effective sample size, rounded down)."""

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


def mcse_cone(x: np.ndarray, chain_index: np.ndarray, weights: np.ndarray | None = None,
              level: float = 0.95) -> Cone:
    """The (weighted) mean direction of one participant's chains and its calibrated cone.

    x (n, d) unit vectors, each chain's states contiguous and in chain order; chain_index (n,)
    ints naming the chain; weights (n,) importance weights (any scale) or None. Chains of
    unequal length: the ESS is measured on each chain's last `shortest` states (the ones
    furthest from the start) and scaled to all n states. NaN cone when a chain has fewer than
    MIN_CHAIN_STATES states or the ESS is not finite; NaN mean too when there is no state."""
    x = np.asarray(x, float)
    n, d = x.shape
    if n == 0:  # a stretch with no state (a drift comparison of very short chains)
        return Cone(np.full(d, np.nan), float("nan"), np.full((d - 1, d - 1), np.nan),
                    np.full((d, d - 1), np.nan), 0)
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    chain_index = np.unique(chain_index, return_inverse=True)[1]
    total = w.sum()
    mbar = (w @ x) / total
    length = float(np.linalg.norm(mbar))
    mean = mbar / length
    basis = tangent_basis(mean)
    p = d - 1
    z = (n * w / total)[:, None] * ((x - mbar) @ basis) / length  # (n, p), mean 0
    counts = np.bincount(chain_index)
    shortest = int(counts.min())
    if shortest < MIN_CHAIN_STATES:
        return Cone(mean, float("nan"), np.full((p, p), np.nan), basis, 0)
    ends = np.cumsum(counts)
    draws = np.stack([z[end - shortest:end] for end in ends])  # (C, shortest, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a coordinate that never moved
        relative = np.array([az.ess(draws[:, :, j], method="mean", relative=True)
                             for j in range(p)], float)
    ess = relative * n
    var = z.var(axis=0, ddof=1) / ess  # (p,): squared MCSE of each tangent coordinate
    if not np.all(np.isfinite(var)):
        return Cone(mean, float("nan"), np.full((p, p), np.nan), basis, 0)
    nu = max(float(ess.mean()) - 1.0, 1.0)
    radius = np.sqrt(f_dist.ppf(level, p, nu) * var.sum())
    return Cone(mean, float(np.degrees(min(radius, np.pi))), np.diag(var), basis,
                int(ess.mean()))


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
