"""The verdict on each prototype: is it precise enough for the study's stated precision, and if
not, why not. One function for the report, the experimenter page and the planner, so they never
disagree.

A prototype is a mean direction; how precisely the chains pin it down is its Monte Carlo error,
summarised by the calibrated 95% cone (`analysis.cones.mcse_cone`, participants as units for the
group: `analysis.cones.mean_cone`). R-hat < 1.1 asks another question (has every chain explored
the whole category?) that short chains of a narrow category answer "no" while their prototype is
within a few degrees (issue 20): it stays in the report as a check, not as the headline.

Verdicts, first match wins (the checks come from `analysis.checks.inference_checks`):
- no category: the responses do not depend on the faces;
- several modes: the category has two or more modes, so its mean is no face anybody chose;
- unreliable de-guiding: the gate stayed on and its weights cannot reach the category, or the
  control chains disagree with the de-guided estimate;
- drift: the prototype moved during the session (`analysis.stationarity`);
- precise enough: the 95% cone is within the target precision (degrees);
- needs more trials (a participant) or needs more participants (the group), with an estimate of
  how many from the measured Monte Carlo error (`more_needed`);
- no estimate: too few states for a cone, or a cone of 90° or more (nothing to extrapolate
  from).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

from scipy.stats import f as f_dist

PRECISION_DEG = 5.0  # the target when a study states none (YAML analysis.precision)
NO_CATEGORY, MODES, DEGUIDING, DRIFT = ("no category", "several modes", "unreliable de-guiding",
                                        "drift")
PRECISE, MORE, NO_ESTIMATE = "precise enough", "needs more", "no estimate"
MAX_FACTOR = 1000  # more than 1000 times the data: say "far more", not a number
# a cone this wide says the error is barely bounded (a 180° cone is the whole sphere): the
# Monte Carlo error behind it is no basis for extrapolating how much more data would do
WIDEST_DEG = 90.0


class Verdict(NamedTuple):
    """code: one of the verdicts above; words: the sentence the report shows; needed: for
    'needs more', the trials per chain (a participant) or participants (the group) expected to
    reach the target (inf: far more than 1000 times the current amount), else NaN."""

    code: str
    words: str
    needed: float


def cone_radius(trace: float, ess: float, p: int, level: float = 0.95) -> float:
    """Radius (radians) of `mcse_cone`'s cone for a tangent covariance of trace `trace`
    (radians²) resting on an effective sample size `ess`, in p = d - 1 tangent dimensions."""
    return math.sqrt(f_dist.ppf(level, p, max(ess - 1.0, 1.0)) * trace)


def cone_trace(cone_deg: float, ess: float, p: int = 2, level: float = 0.95) -> float:
    """The trace (radians²) of the tangent covariance behind a `mcse_cone` cone of `cone_deg`
    resting on `ess` effective units: `cone_radius` inverted (NaN for a NaN cone)."""
    if not cone_deg == cone_deg or not ess == ess:
        return float("nan")
    return math.radians(cone_deg) ** 2 / f_dist.ppf(level, p, max(ess - 1.0, 1.0))


def more_needed(cone_deg: float, ess: float, now: float, target_deg: float, p: int = 2,
                level: float = 0.95) -> float:
    """How much data (in the unit of `now`: trials per chain, or participants) a cone of
    `cone_deg` resting on `ess` effective units needs to shrink to `target_deg`: the smallest
    k·now with radius(k) <= target, where k times the data multiply the ESS by k and divide the
    covariance's trace by k (Monte Carlo error ∝ 1/√n). inf beyond MAX_FACTOR."""
    trace = cone_trace(cone_deg, ess, p, level)
    target = math.radians(target_deg)
    lo, hi = 1.0, float(MAX_FACTOR)
    if cone_radius(trace / hi, ess * hi, p, level) > target:
        return math.inf
    for _ in range(60):  # bisection on k: the radius falls monotonically with k
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if cone_radius(trace / mid, ess * mid, p, level) <= target else (mid,
                                                                                            hi)
    return float(math.ceil(hi * now))


def judge(row: Mapping, target_deg: float, now: float, group: bool, p: int = 2) -> Verdict:
    """The verdict for one participant x emotion (group False: `now` is the shown trials per
    chain) or one emotion's group (group True: `now` is the number of participants).

    row: a row of `analysis.checks.inference_checks` (responses_random, n_modes,
    deguided_unreliable, control_disagrees, drift_moved, drift_angle_deg, cone95_deg,
    cone_units); missing checks count as passed."""
    nan = float("nan")
    get = lambda key, default=None: row.get(key, default)  # noqa: E731
    if get("responses_random") is True:
        return Verdict(NO_CATEGORY, "no category: the responses do not depend on the faces",
                       nan)
    n_modes = get("n_modes", nan)
    if n_modes == n_modes and n_modes is not None and n_modes >= 2:
        return Verdict(MODES, f"several modes ({int(n_modes)}): the prototype (their mean) is "
                              "not one face; see the modes", nan)
    if get("deguided_unreliable") is True or get("control_disagrees") is True:
        return Verdict(DEGUIDING, "unreliable de-guiding: the gate's pull cannot be removed "
                                  "from these chains (see the checks)", nan)
    if get("drift_moved") is True:
        return Verdict(DRIFT, f"drift: the prototype moved by {get('drift_angle_deg'):.0f}° "
                              "during the session; the estimate describes the later one", nan)
    cone = get("cone95_deg", nan)
    if cone is None or not cone == cone:
        return Verdict(NO_ESTIMATE, "no estimate: too few kept states for a cone", nan)
    if cone >= WIDEST_DEG:
        return Verdict(NO_ESTIMATE, f"no estimate: the 95% cone is {cone:.0f}°, too little data "
                                    "to say how much more would do", nan)
    if cone <= target_deg:
        return Verdict(PRECISE, f"precise enough: 95% cone {cone:.1f}° (target {target_deg:g}°)",
                       nan)
    unit = "participants" if group else "trials per chain"
    needed = more_needed(cone, float(get("cone_units", nan)), now, target_deg, p)
    how = (f"far more than {MAX_FACTOR} times as many {unit}" if math.isinf(needed) else
           f"about {needed:.0f} {unit} (now {now:.0f})") if needed == needed else "more data"
    return Verdict(MORE, f"needs more {'participants' if group else 'trials'}: 95% cone "
                         f"{cone:.1f}°, target {target_deg:g}°; {how} should reach it", needed)
