"""Responders without a category: do a participant's choices depend on the faces at all?

Catch trials reveal a person pressing keys at random, but a study without catch trials (or a
guided one, whose gate alone pulls the chains into the model's idea of the emotion and makes a
random responder's "prototype" look like a sad face) needs a test on the chain trials themselves.

Under the choice model of MCMCP a person picks the proposal x' over the current x with
probability expit(log p(x') - log p(x)) (plus lapses, which only flatten it). A log density on
the sphere expanded to second order, log p(x) ≈ η·x + x'Ax (the Fisher-Bingham family: one mode,
two antipodal modes, a girdle), makes that a logistic regression of chose_proposal on the
differences of the features x_i and x_i x_j between proposal and current. A random responder's
choices do not depend on those differences: the likelihood-ratio test of all their coefficients
being 0 (an intercept, a bias toward the proposal or the current face, stays free) is chi-square
with k = d + d(d+1)/2 - 1 degrees of freedom (one square term is dropped: sum x_i² = 1). Its
linear part alone (the vMF, d degrees of freedom) has more power for one-mode categories, so
both are tested and the smaller p-value is doubled (Bonferroni). The gate only chooses which
pairs are shown, never the answer given a pair, so the test holds for guided chains too.

Absence of evidence is evidence only when the test could have seen a category: a narrow gate
shows pairs of nearly the same face, between which even an attentive person answers almost at
random. So the test's power against a broad category (vMF with κ = KAPPA_DETECT centred on the
participant's prototype) is computed from the pairs actually shown (noncentral chi-square,
noncentrality sum_i (κ m·(x'_i - x_i))² / 4, the Fisher information of a logistic at p = 1/2).
Flag "random" only when p >= RANDOM_ALPHA and that power is >= MIN_POWER; "inconclusive" when
the power is lower. tests/test_responders.py measures how often it flags random and attentive
agents.

Pure numpy/scipy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit, log_expit
from scipy.stats import chi2, ncx2

RANDOM_ALPHA = 0.01
# trials per coefficient the test needs (intercept included): with fewer the logistic fit
# separates the few answers it has and the likelihood-ratio statistic is far from chi-square
# (16 trials of a lab demo gave p = 0.0009 for 10 coefficients)
TRIALS_PER_COEFFICIENT = 10
KAPPA_DETECT = 5.0  # a broad category: the one the test must be able to see
MIN_POWER = 0.8


def quadratic_features(x: np.ndarray) -> np.ndarray:
    """(n, k) features of unit vectors x (n, d): x_i, x_i x_j (i < j) and x_i² (i < d - 1)."""
    n, d = x.shape
    iu = np.triu_indices(d, 1)
    return np.column_stack([x, x[:, iu[0]] * x[:, iu[1]], x[:, : d - 1] ** 2])


def min_trials(d: int) -> int:
    """Chain trials the test needs in R^d (TRIALS_PER_COEFFICIENT per coefficient)."""
    return TRIALS_PER_COEFFICIENT * (quadratic_features(np.zeros((1, d))).shape[1] + 1)


def _fit_logistic(z: np.ndarray, y: np.ndarray, iterations: int = 100,
                  ridge: float = 1e-6) -> float:
    """Maximised log-likelihood of a logistic regression of y (n,) bool on z (n, k) plus an
    intercept (Newton's method; the tiny ridge keeps it finite when the classes separate)."""
    design = np.column_stack([np.ones(len(z)), z])
    beta = np.zeros(design.shape[1])
    sign = np.where(y, 1.0, -1.0)
    for _ in range(iterations):
        eta = design @ beta
        prob = expit(eta)
        grad = design.T @ (y - prob) - ridge * beta
        hess = (design * (prob * (1 - prob))[:, None]).T @ design + ridge * np.eye(len(beta))
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    return float(np.sum(log_expit(sign * (design @ beta))))


class Dependence(NamedTuple):
    """n chain trials; acceptance (share of proposals chosen); p_value of "choices do not depend
    on the faces" (Bonferroni over the linear and the quadratic test; NaN with fewer than
    TRIALS_PER_COEFFICIENT trials per coefficient, or one answer throughout); power: of the linear test
    against a vMF(KAPPA_DETECT) category at `centre`; random: p_value >= RANDOM_ALPHA with
    enough power; inconclusive: p_value >= RANDOM_ALPHA without it."""

    n: int
    acceptance: float
    p_value: float
    power: float
    random: bool
    inconclusive: bool


def choice_dependence(current: np.ndarray, proposal: np.ndarray, chose_proposal: np.ndarray,
                      centre: np.ndarray) -> Dependence:
    """The test on shown chain trials: current, proposal (n, d) unit vectors, chose_proposal
    (n,) bool; centre (d,): the participant's prototype (where the power is computed)."""
    y = np.asarray(chose_proposal, bool)
    current, proposal = np.asarray(current, float), np.asarray(proposal, float)
    z = quadratic_features(proposal) - quadratic_features(current)
    n, d = len(y), current.shape[1]
    rate = float(y.mean()) if n else float("nan")
    if n < min_trials(d) or rate in (0.0, 1.0):
        return Dependence(n, rate, float("nan"), float("nan"), False, False)
    null = n * (rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    p = [chi2.sf(max(2.0 * (_fit_logistic(part, y) - null), 0.0), part.shape[1])
         for part in (z[:, :d], z)]  # the linear features come first
    p_value = float(min(1.0, 2.0 * min(p)))
    noncentrality = float(np.sum((KAPPA_DETECT * (proposal - current) @ centre) ** 2) / 4.0)
    power = float(ncx2.sf(chi2.isf(RANDOM_ALPHA / 2, d), d, noncentrality))
    quiet = p_value >= RANDOM_ALPHA
    return Dependence(n, rate, p_value, power, quiet and power >= MIN_POWER,
                      quiet and power < MIN_POWER)
