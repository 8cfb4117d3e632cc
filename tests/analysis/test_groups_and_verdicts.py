"""analysis.groups (the between-participant concentration beyond each prototype's own error)
and analysis.verdicts (which verdict wins, and how much more data a wide cone needs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, vonmises_fisher

from analysis.cones import mcse_cone
from analysis.groups import between_concentration
from analysis.verdicts import MORE, PRECISE, cone_radius, cone_trace, judge, more_needed
from mcmcp.sampling.sphere import normalize

MU = normalize(np.array([0.3, -0.5, 0.8]))


def noisy(x: np.ndarray, sd: np.ndarray, rng) -> np.ndarray:
    """x (P, d) moved by a normal tangent error of sd (P,) radians per axis."""
    step = rng.normal(size=x.shape) * sd[:, None]
    step -= np.sum(step * x, axis=1, keepdims=True) * x
    return normalize(x + step)


@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_between_participant_interval_covers_beyond_the_prototypes_errors(kappa):
    """20 prototypes from vMF(MU, kappa), each estimated with a Monte Carlo error of 2-6
    degrees per axis (about the spread of a kappa-100 group): the interval holds kappa about
    95% of the time; ignoring the errors it holds a kappa of 100 only about half the time."""
    rng = np.random.default_rng(int(kappa))
    hits = naive = 0
    reps = 400
    for _ in range(reps):
        sd = np.radians(rng.uniform(2.0, 6.0, 20))
        x = noisy(vonmises_fisher(MU, kappa).rvs(20, random_state=rng), sd, rng)
        found = between_concentration(x, 2 * sd**2)
        hits += found.low <= kappa <= found.high
        plain = between_concentration(x, np.zeros(20))
        naive += plain.low <= kappa <= plain.high
    ci = binomtest(hits, reps).proportion_ci(0.95)
    assert ci.low < 0.97 and ci.high > 0.93, hits / reps
    if kappa == 100.0:
        assert naive / reps < 0.8


def test_no_spread_beyond_the_errors_is_infinitely_concentrated():
    x = np.repeat(MU[None], 5, axis=0)
    assert between_concentration(x, np.full(5, 1e-4)).kappa == math.inf


def test_judge_names_the_first_problem_then_the_precision():
    clean = {"cone95_deg": 3.0, "cone_units": 30, "n_modes": 1}
    assert judge(clean, 5.0, 100, False).code == PRECISE
    assert judge({**clean, "drift_moved": True, "drift_angle_deg": 31.0}, 5.0, 100,
                 False).words.startswith("drift: the prototype moved by 31°")
    assert judge({**clean, "n_modes": 2, "drift_moved": True}, 5.0, 100, False).code == \
        "several modes"
    assert judge({**clean, "responses_random": True, "n_modes": 2}, 5.0, 100, False).code == \
        "no category"
    wide = judge({**clean, "cone95_deg": 8.0}, 5.0, 100, False)
    assert wide.code == MORE and wide.needed > 100 and "trials per chain" in wide.words
    assert "participants" in judge({**clean, "cone95_deg": 8.0}, 5.0, 12, True).words
    assert judge({**clean, "cone95_deg": 180.0}, 5.0, 3, True).code == "no estimate"


def test_more_needed_reaches_the_target_by_its_own_rule():
    """The k found makes the cone of k times the data (ESS x k, trace / k) just reach the
    target; a cone four times too wide needs about 16 times the trials."""
    trace = cone_trace(10.0, 40.0)
    assert math.degrees(cone_radius(trace, 40.0, 2)) == pytest.approx(10.0)
    needed = more_needed(10.0, 40.0, 100, 2.5)
    k = needed / 100
    assert math.degrees(cone_radius(trace / k, 40 * k, 2)) <= 2.5
    assert math.degrees(cone_radius(trace / (k - 0.02), 40 * (k - 0.02), 2)) > 2.5
    assert 14 * 100 < needed < 17 * 100


def test_more_needed_is_borne_out_by_longer_independent_data():
    """Independent draws (ESS = count): the data more_needed asks for give a cone at the
    target, within sampling noise."""
    rng = np.random.default_rng(3)
    x = vonmises_fisher(MU, 20.0).rvs(80, random_state=rng)
    cone = mcse_cone(x, np.repeat(np.arange(4), 20))
    needed = more_needed(cone.cone_deg, cone.n_units, 20, cone.cone_deg / 2)
    y = vonmises_fisher(MU, 20.0).rvs(4 * int(needed), random_state=rng)
    longer = mcse_cone(y, np.repeat(np.arange(4), int(needed)))
    assert longer.cone_deg == pytest.approx(cone.cone_deg / 2, rel=0.15)


def test_participants_for_a_group_cone_matches_the_report_s_group_cone():
    """Groups of the size participants_for asks for (prototypes from vMF(MU, 30), no Monte
    Carlo error) have a report group cone (participants as units) whose median is at the
    target; groups half that size miss it."""
    from analysis.cones import mean_cone
    from analysis.groups import participants_for

    n = participants_for(30.0, 0.0, 6.0)
    rng = np.random.default_rng(7)

    def median_cone(size: int) -> float:
        cones = [mean_cone(vonmises_fisher(MU, 30.0).rvs(size, random_state=rng),
                           np.arange(size)).cone_deg for _ in range(300)]
        return float(np.median(cones))

    assert 5.4 < median_cone(n) <= 6.3
    assert median_cone(n // 2) > 6.5
