"""Gibbs Sampling with People (GSP) on the sphere: the step as pure, vectorised functions.

One GSP trial: from the chain's state x, draw a uniformly random unit tangent direction u ⊥ x;
the great circle c(θ) = cos θ·x + sin θ·u is cut into K points θ_k = 2πk/K (k = 0 is x itself);
the respondent moves a slider along them and confirms one point, and the chain moves there.
A respondent who picks point k with probability ∝ p(c_k)^g makes the chain sample p^g on the
sphere exactly (docs/methods.md, "Gibbs Sampling with People").

Optional gate: after the choice, the move x -> c_k is kept with Barker probability
g(c_k)^γ / (g(x)^γ + g(c_k)^γ) (`mcmcp.sampling.gate.Gate.screen`), else the chain stays at x; the chain
then samples p^g·g^γ exactly, and analysis removes g with the same weights g^-γ as for MCMCP.

The slider shows the K points in circle order from a random first point (`shift`), and its
handle starts at a random position (`start`), both recorded, so no slider position stands for
"the current face". People, agents, the engine, the simulator, tests and benchmarks all call
these functions. Shapes: n chains, d ambient dimension, K points; angles in radians.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import log_softmax

from mcmcp.sampling.chain import ChainState


class Circle(NamedTuple):
    """The circles of n trials: direction (n, d) unit tangents u ⊥ x; points (n, K, d), point k
    at angle 2πk/K from x (points[:, 0] is x); shift (n,) the circle point at the slider's left
    end; start (n,) the circle point the slider's handle starts on."""

    direction: np.ndarray
    points: np.ndarray
    shift: np.ndarray
    start: np.ndarray


def tangent_directions(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform unit tangent directions u ⊥ x, (n, d), for states x (n, d).

    A standard normal vector projected on the tangent space at x and normalised is uniform on
    the unit sphere of that space (rotation invariance of the Gaussian).
    """
    z = rng.standard_normal(x.shape)
    z -= np.sum(z * x, axis=-1, keepdims=True) * x
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def circle_points(x: np.ndarray, direction: np.ndarray, k: int) -> np.ndarray:
    """The K points (n, K, d) of the great circles through x (n, d) along `direction` (n, d)."""
    theta = 2.0 * np.pi * np.arange(k) / k
    return (np.cos(theta)[None, :, None] * x[:, None, :]
            + np.sin(theta)[None, :, None] * direction[:, None, :])


def draw_circle(x: np.ndarray, k: int, rng: np.random.Generator) -> Circle:
    """A trial's circle for each state x (n, d): direction, K points, slider shift and start."""
    direction = tangent_directions(x, rng)
    n = len(x)
    return Circle(direction, circle_points(x, direction, k), rng.integers(k, size=n),
                  rng.integers(k, size=n))


def slider_to_point(position: np.ndarray | int, shift: np.ndarray | int, k: int) -> np.ndarray:
    """Circle point shown at slider position(s) 0..K-1 (left to right)."""
    return (np.asarray(position) + np.asarray(shift)) % k


def point_to_slider(point: np.ndarray | int, shift: np.ndarray | int, k: int) -> np.ndarray:
    """Slider position (0 = left end) of circle point(s)."""
    return (np.asarray(point) - np.asarray(shift)) % k


def choice_probabilities(log_density: np.ndarray, exponent: float, lapse: float = 0.0
                         ) -> np.ndarray:
    """P(choose point k) (n, K) from log p at the K points (n, K): softmax of exponent·log p,
    mixed with a lapse uniform over the K points."""
    soft = np.exp(log_softmax(exponent * np.asarray(log_density, dtype=float), axis=-1))
    return (1.0 - lapse) * soft + lapse / soft.shape[-1]


def sample_choice(prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One point index (n,) per row of choice probabilities (n, K) (inverse-CDF draw)."""
    cdf = np.cumsum(prob, axis=-1)
    u = rng.random(len(prob)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=-1), prob.shape[-1] - 1)


def step(state: ChainState, points: np.ndarray, choice: np.ndarray,
         moved: np.ndarray | bool = True) -> ChainState:
    """The chains after one GSP trial: they move to points[i, choice[i]] where `moved` (False
    where a gate refused the move). A choice of point 0 (x itself) counts as not moving."""
    choice = np.asarray(choice)
    chosen = np.take_along_axis(points, choice[:, None, None], axis=1)[:, 0]
    moved = np.asarray(moved, dtype=bool) & (choice != 0)
    return ChainState(
        position=np.where(moved[:, None], chosen, state.position),
        iteration=state.iteration + 1,
        n_accepted=state.n_accepted + moved,
        kappa=state.kappa,
    )
