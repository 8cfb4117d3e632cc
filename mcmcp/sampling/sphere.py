"""Vectorised geometry and von Mises-Fisher maths on the unit sphere S^(d-1), in numpy.

Points are arrays of shape (..., d) with unit norm; d is the ambient dimension (3 = the ordinary
sphere, 2 = the ring). kappa is a concentration (0 = uniform). Angles are radians.
Everything here is pure: arrays and an explicit `numpy.random.Generator` in, arrays out.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, ive

LOG_2PI = float(np.log(2.0 * np.pi))


def normalize(x: np.ndarray) -> np.ndarray:
    """Project (..., d) vectors onto the unit sphere."""
    # what np.linalg.norm(x, axis=-1, keepdims=True) computes, bit for bit, without its
    # argument checks (a third of a small simulation step)
    return x / np.sqrt(np.add.reduce(x * x, axis=-1, keepdims=True))


def sample_uniform(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """n points uniform on S^(d-1), shape (n, d)."""
    return normalize(rng.standard_normal((n, d)))


def _sample_w_s2(kappa: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """w = mu·x for vMF on S^2 by the exact inverse CDF (no rejection), shape of kappa.

    The CDF of w on [-1, 1] is (exp(k w) - exp(-k)) / (exp(k) - exp(-k)); inverting it and
    writing it with log1p/expm1 keeps it exact from kappa ~ 0 (w ~ 2u - 1) to kappa ~ 1e5.
    """
    u = rng.random(kappa.shape)
    k = np.maximum(kappa, 1e-12)
    w = 1.0 + np.log1p(-u * -np.expm1(-2.0 * k)) / k
    return np.minimum(np.maximum(w, -1.0), 1.0)  # = np.clip, without its overhead


def _sample_w_wood(kappa: np.ndarray, d: int, rng: np.random.Generator) -> np.ndarray:
    """w = mu·x for vMF on S^(d-1) by Wood's (1994) rejection algorithm, vectorised."""
    k = np.maximum(kappa.astype(float), 1e-12)
    b = (d - 1.0) / (2.0 * k + np.sqrt(4.0 * k**2 + (d - 1.0) ** 2))
    x0 = (1.0 - b) / (1.0 + b)
    c = k * x0 + (d - 1.0) * np.log(1.0 - x0**2)
    w = np.empty_like(k)
    todo = np.arange(k.size)
    kf, bf, x0f, cf = k.ravel(), b.ravel(), x0.ravel(), c.ravel()
    wf = w.ravel()
    while todo.size:
        z = rng.beta((d - 1) / 2.0, (d - 1) / 2.0, size=todo.size)
        u = rng.random(todo.size)
        bb, xx, kk, cc = bf[todo], x0f[todo], kf[todo], cf[todo]
        wt = (1.0 - (1.0 + bb) * z) / (1.0 - (1.0 - bb) * z)
        ok = kk * wt + (d - 1.0) * np.log(1.0 - xx * wt) - cc >= np.log(u)
        wf[todo[ok]] = wt[ok]
        todo = todo[~ok]
    return np.clip(w, -1.0, 1.0)


def sample_vmf(mu: np.ndarray, kappa: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """One draw from vMF(mu_i, kappa_i) for each row: mu (n, d) unit, kappa scalar or (n,) -> (n, d).

    d = 3 uses the exact inverse CDF; other d use Wood's algorithm. The tangent direction is
    uniform, and e1 is rotated onto mu by a Householder reflection.
    """
    mu = np.atleast_2d(np.asarray(mu, dtype=float))
    n, d = mu.shape
    kappa = np.broadcast_to(np.asarray(kappa, dtype=float), (n,))
    w = _sample_w_s2(kappa, rng) if d == 3 else _sample_w_wood(kappa, d, rng)
    v = normalize(rng.standard_normal((n, d - 1))) if d > 2 else rng.choice([-1.0, 1.0], (n, 1))
    x = np.concatenate([w[:, None], np.sqrt(np.maximum(1.0 - w**2, 0.0))[:, None] * v], axis=1)
    # Householder H = I - 2uu^T applied to each x without forming H.
    e1 = np.zeros(d)
    e1[0] = 1.0
    u = e1 - mu
    norm2 = np.sum(u * u, axis=1, keepdims=True)
    u = np.where(norm2 > 1e-24, u / np.sqrt(np.maximum(norm2, 1e-300)), 0.0)
    return normalize(x - 2.0 * np.sum(u * x, axis=1, keepdims=True) * u)


def log_vmf_normaliser(kappa: np.ndarray | float, d: int) -> np.ndarray:
    """log C_d(kappa), with vMF density C_d(kappa) exp(kappa mu·x) on S^(d-1) (w.r.t. surface area).

    Computed in log space with exponentially scaled Bessel functions so that kappa from 0 to 1e5
    neither overflows nor loses precision; kappa = 0 gives the uniform density 1/area.
    """
    k = np.asarray(kappa, dtype=float)
    nu = d / 2.0 - 1.0
    log_area = np.log(2.0) + (d / 2.0) * np.log(np.pi) - gammaln(d / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # kappa = 0 is replaced below
        if d == 3:
            # C_3 = k / (2 pi (1 - exp(-2k))) * exp(-k), written with expm1 for small k.
            out = np.log(k) - LOG_2PI - np.log(-np.expm1(-2.0 * k)) - k
        else:
            out = nu * np.log(k) - (d / 2.0) * LOG_2PI - (np.log(ive(nu, k)) + k)
    return np.where(k < 1e-8, -log_area, out)


def vmf_logpdf(x: np.ndarray, mu: np.ndarray, kappa: np.ndarray | float) -> np.ndarray:
    """log density of vMF(mu, kappa) at x: x (..., d), mu broadcastable (..., d) -> (...)."""
    d = x.shape[-1]
    return log_vmf_normaliser(kappa, d) + np.asarray(kappa) * np.sum(x * mu, axis=-1)


def geodesic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distance in radians between unit vectors a and b, broadcast over (..., d)."""
    # atan2 of |a x b| and a.b is accurate at 0 and pi, where arccos(a.b) is not.
    dot = np.sum(a * b, axis=-1)
    cross = np.linalg.norm(a[..., :, None] * b[..., None, :] - b[..., :, None] * a[..., None, :],
                           axis=(-2, -1)) / np.sqrt(2.0)
    return np.arctan2(cross, dot)


def spherical_mean(x: np.ndarray, weights: np.ndarray | None = None, axis: int = 0) -> np.ndarray:
    """Mean direction (normalised resultant) of unit vectors x along `axis`; optional weights."""
    if weights is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        x = x * np.reshape(weights, shape)
    return normalize(np.sum(x, axis=axis))


def mean_resultant_length(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Length of the mean of unit vectors along `axis`: 1 = all identical, ~0 = spread out."""
    return np.linalg.norm(np.mean(x, axis=axis), axis=-1)


def fibonacci_sphere(n: int, d: int = 3) -> np.ndarray:
    """n points spread evenly over S^(d-1), shape (n, d): a Fibonacci lattice for d = 3,
    equally spaced angles for d = 2. Deterministic (used for chain start points)."""
    if d == 2:
        t = 2.0 * np.pi * (np.arange(n) + 0.5) / n
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if d != 3:
        raise ValueError(f"fibonacci_sphere supports d = 2 or 3, got d = {d}")
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + np.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def to_lonlat(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(longitude, latitude) in radians of points on S^2, x (..., 3)."""
    return np.arctan2(x[..., 1], x[..., 0]), np.arcsin(np.clip(x[..., 2], -1.0, 1.0))


def rotate_towards(a: np.ndarray, b: np.ndarray, angle: float) -> np.ndarray:
    """The point `angle` radians from unit vector a along the great circle towards b (d any)."""
    t = normalize(b - np.sum(a * b, axis=-1, keepdims=True) * a)
    return np.cos(angle) * a + np.sin(angle) * t


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A rotation matrix (3, 3) taking unit vector a to unit vector b in R^3 (Rodrigues)."""
    v, c = np.cross(a, b), float(a @ b)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else -np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)
