"""Can the gate be removed? The weight guard and the control-chain test.

Guided chains sample q ∝ p·g^γ; de-guiding re-weights their states by w ∝ g^-γ, which is
importance sampling from q back to p. It can only re-weight the region the chains visited: on
the sphere the weights are bounded, so PSIS k-hat can look fine while the weights cannot reach
the part of p the gate kept the chains away from. Two checks that do not rely on the weights:

Guard (expected weight ESS). With a vMF category p = vMF(η_p) and gate g = vMF(η_g) (natural
parameters η = κμ), q = vMF(η_q), η_q = η_p + γη_g, and the relative ESS of exact weights is
1 / E_q[w²] with

    E_q[w²] = ∫ p² / q = C(|η_p|)² / (C(|η_q|) · C(|2η_p - η_q|)),

C(κ) the vMF normaliser on S^(d-1). With η̂_q from a vMF fit to the guided states and η_g from
the gate (a least-squares fit of the recorded log g(x) ≈ a + η_g·x, exact for vMF gates), the
implied η_p = η̂_q - γη_g gives the expected ESS the weights can reach. The flat-space limit says
why the boundary sits near γ·κ_gate = κ_p: for an aligned gate, E_q[w²] is infinite (Gaussian
weights of infinite variance) once κ_q ≥ 2κ_p. The report flags "unreliable" when the gate pulls
at least as hard as the category (γ·κ_gate ≥ κ̂_p) or the expected relative ESS is below
MIN_ESS_FRACTION.

Control chains (config `chains.unguided`): their states sample p itself. `compare_means` tests
whether two mean directions (each with its `analysis.cones.Cone`) differ by more than their joint
uncertainty: Hotelling's T² on the difference in a common tangent plane, with the F reference
distribution on the smaller number of units (conservative).

Pure functions of arrays; angles in degrees in outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import f as f_dist

from analysis.cones import Cone, tangent_basis
from analysis.prototypes import angle_deg
from mcmcp.sampling.sphere import log_vmf_normaliser

MIN_ESS_FRACTION = 0.1
CONTROL_ALPHA = 0.01


def log_expected_w2(eta_p: np.ndarray, eta_q: np.ndarray) -> float:
    """log E_q[w²] for importance sampling from vMF(eta_q) to vMF(eta_p), w = p / q (natural
    parameters (d,), any length). log ESS/n = -this."""
    eta_p, eta_q = np.asarray(eta_p, float), np.asarray(eta_q, float)
    d = len(eta_p)
    norm = lambda eta: float(log_vmf_normaliser(np.linalg.norm(eta), d))  # noqa: E731
    return 2.0 * norm(eta_p) - norm(eta_q) - norm(2.0 * eta_p - eta_q)


def gate_natural_parameter(x: np.ndarray, log_g: np.ndarray) -> tuple[np.ndarray, float]:
    """η_g (d,) of the best log-linear fit log g(x) ≈ a + η_g·x to recorded values at x (m, d)
    (least squares), and the fit's R² (1 for a vMF gate; lower for a mixture or classifier gate,
    whose η_g is then a local summary over the visited states)."""
    x, log_g = np.asarray(x, float), np.asarray(log_g, float)
    ok = np.isfinite(log_g)
    design = np.column_stack([np.ones(ok.sum()), x[ok]])
    coef, *_ = np.linalg.lstsq(design, log_g[ok], rcond=None)
    resid = log_g[ok] - design @ coef
    spread = np.sum((log_g[ok] - log_g[ok].mean()) ** 2)
    return coef[1:], float(1.0 - resid @ resid / spread) if spread > 0 else 1.0


class Guard(NamedTuple):
    """The weight guard of one guided estimate.

    pull: γ·κ_gate, the gate's concentration as the chains felt it; kappa_category: |η̂_p|, the
    category's concentration implied by the guided states; gate_offset_deg: angle between the
    gate's and the implied category's directions; ess_fraction: expected relative ESS of exact
    weights (0..1); unreliable: pull >= kappa_category or ess_fraction < MIN_ESS_FRACTION.
    """

    pull: float
    kappa_category: float
    gate_offset_deg: float
    ess_fraction: float
    unreliable: bool

    def words(self) -> str:
        """The verdict in plain words (empty when the weights can cover the category)."""
        if not self.unreliable:
            return ""
        if self.pull >= self.kappa_category:
            return (f"de-guided estimate unreliable: the gate's pull (γ·κ_gate = {self.pull:.3g}) "
                    f"is stronger than the category (κ ≈ {self.kappa_category:.3g})")
        return (f"de-guided estimate unreliable: the gate sits {self.gate_offset_deg:.0f}° from "
                f"the category and its weights can keep only about {self.ess_fraction:.0%} of "
                "the states")


def guard(eta_q: np.ndarray, eta_g: np.ndarray, gamma: float) -> Guard:
    """The guard for guided states fitted as vMF(η̂_q) (eta_q = κ̂_q μ̂_q, (d,)), a gate of
    natural parameter eta_g (d,) and exponent gamma (the constant γ the states were sampled
    with)."""
    eta_q, eta_g = np.asarray(eta_q, float), np.asarray(eta_g, float)
    eta_p = eta_q - gamma * eta_g
    kappa_p, pull = float(np.linalg.norm(eta_p)), float(gamma * np.linalg.norm(eta_g))
    offset = float(angle_deg(eta_p, eta_g)) if kappa_p > 0 and pull > 0 else float("nan")
    frac = float(np.exp(-log_expected_w2(eta_p, eta_q)))
    return Guard(pull, kappa_p, offset, frac, bool(pull >= kappa_p or frac < MIN_ESS_FRACTION))


class Comparison(NamedTuple):
    """Two mean directions compared: angle_deg between them, Hotelling's t2, p_value,
    disagree (p_value < alpha)."""

    angle_deg: float
    t2: float
    p_value: float
    disagree: bool


def compare_means(a: Cone, b: Cone, alpha: float = CONTROL_ALPHA) -> Comparison:
    """Test whether the true directions behind two independent estimates differ.

    Each cone's tangent covariance is moved to the tangent plane at the normalised midpoint of
    the two means; the difference t of the means there has covariance S_a + S_b and
    T² = t' (S_a + S_b)^-1 t is referred to p (ν) / (ν - p + 1) F_{p, ν-p+1} with
    ν = min(units) - 1 and p = d - 1. NaN p-value when either has too few units.
    """
    d = len(a.mean)
    p = d - 1
    mid = a.mean + b.mean
    mid = mid / np.linalg.norm(mid)
    basis = tangent_basis(mid)
    cov = np.zeros((p, p))
    for cone in (a, b):
        move = basis.T @ cone.basis  # (p, p): the cone's tangent coordinates in the common plane
        cov += move @ cone.cov @ move.T
    t = basis.T @ (a.mean - b.mean)
    angle = float(angle_deg(a.mean, b.mean))
    nu = min(a.n_units, b.n_units) - 1
    if nu < p or not np.all(np.isfinite(cov)):
        return Comparison(angle, float("nan"), float("nan"), False)
    t2 = float(t @ np.linalg.solve(cov, t))
    pval = float(f_dist.sf(t2 * (nu - p + 1) / (p * nu), p, nu - p + 1))
    return Comparison(angle, t2, pval, bool(pval < alpha))
