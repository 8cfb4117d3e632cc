"""Anti-aliased drawing primitives that give the same bits on every IEEE-754 CPU.

Why this module exists: numpy's transcendental functions (exp, sin, power, arctan2...) take
different code paths on different CPUs (AVX512, AVX2, plain SSE; glibc picks FMA variants of
its own), and their last bits differ between paths. Images drawn with them hash differently on
another machine, and a committed model then no longer recognises its training data. Here
everything is float64 arithmetic (+ - * /), sqrt, floor, abs, min/max and comparisons: IEEE 754
rounds each of these exactly, so every vectorised or scalar path gives the same bits. Never
call np.exp, np.sin, np.power (other than ** 2), np.arctan2, or a BLAS routine (np.dot,
matmul, einsum) from drawing code; never reduce (sum, mean) inside it either, since a
reduction's order may depend on the SIMD width.

Distances are in face units, negative inside a shape; px is the size of one pixel in the same
units, so every edge is a one-pixel coverage ramp and pictures are anti-aliased at any size.
"""

from __future__ import annotations

import numpy as np


def ramp(d: np.ndarray, px) -> np.ndarray:
    """Coverage in [0, 1] of a shape with signed distance d, blurred over one pixel of size px."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def stroke(dist: np.ndarray, width, px) -> np.ndarray:
    """Coverage of a stroke `width` wide at unsigned distance dist from its centre line.

    Strokes thinner than a pixel are drawn one pixel wide and proportionally fainter, so they
    keep their ink at small sizes instead of flickering between rows.
    """
    return ramp(dist - 0.5 * np.maximum(width, px), px) * np.minimum(1.0, width / px)


def bump(x: np.ndarray, s) -> np.ndarray:
    """Smooth bell, 1 at x = 0, close to exp(-x^2 / (2 s^2)) and exactly 0 beyond |x| = 2.83 s.

    (1 - x^2 / (8 s^2))^4 is the exponential's own limit form (1 + y/n)^n at n = 4.
    """
    t = x / s
    t = np.clip(1.0 - 0.125 * t * t, 0.0, 1.0)
    t = t * t
    return t * t


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, the cubic 3x^2 - 2x^3 in between."""
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ellipse(x: np.ndarray, y: np.ndarray, a, b) -> np.ndarray:
    """Approximate signed distance to the ellipse x^2/a^2 + y^2/b^2 = 1 (first order)."""
    xa, yb = x / a, y / b
    k = np.sqrt(xa * xa + yb * yb)
    ga, gb = xa / a, yb / b
    grad = np.sqrt(ga * ga + gb * gb)
    return (k - 1.0) * k / (grad + 1e-9)


def mix(img: np.ndarray, colour, alpha) -> np.ndarray:
    """Paint `colour` over img with coverage alpha (all broadcast)."""
    return img + alpha * (colour - img)


def sincos(x):
    """(sin x, cos x) by Taylor series, for |x| <= pi/2 (error < 1e-10); scalars or arrays."""
    x2 = x * x
    s, c = 1.0, 1.0
    for k in (156, 110, 72, 42, 20, 6):  # Horner form of x - x^3/3! + x^5/5! ...
        s = 1 - x2 / k * s
    for k in (182, 132, 90, 56, 30, 12, 2):
        c = 1 - x2 / k * c
    return x * s, c


def wave(x: np.ndarray) -> np.ndarray:
    """A sine-like periodic wave in [-1, 1] with period 1 (a smoothed triangle wave)."""
    t = x - np.floor(x)  # [0, 1)
    t = np.abs(2.0 * t - 1.0)  # triangle 1 -> 0 -> 1
    return 1.0 - 2.0 * smoothstep(t)


def hash01(n: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) for each (integer-valued) float n."""
    p = n * 0.1031
    p = p - np.floor(p)
    p = p * (p + 33.33)
    p = p * (p + p)
    return p - np.floor(p)


def noise(x: np.ndarray, seed) -> np.ndarray:
    """Smooth 1-d value noise in [0, 1] with unit lattice spacing; seed shifts the lattice."""
    i = np.floor(x)
    t = smoothstep(x - i)
    base = i + 1000.0 * seed
    lo, hi = hash01(base), hash01(base + 1.0)
    return lo + t * (hi - lo)
