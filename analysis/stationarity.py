"""Did the participant's prototype move during the session? Stretches of the chains compared.

The estimates use the kept states (`analysis.checks.stationary_states`: the second half of each
chain, or later with an annealed gate). A prototype that moved before them is invisible to every
estimate, one that moved among them blurs it. So the mean direction of an earlier stretch is
compared with that of a later one, each with its calibrated cone (`analysis.cones.mcse_cone`) and
Hotelling's T² on their difference (`analysis.deguiding.compare_means`):
- the kept states of every chain split at a quarter, a half and three quarters of their length
  (a move among the kept states, wherever it falls);
- the stretch just before the kept states (each chain's steps from half its first kept step up
  to it; see the end) against the kept states (a move
  half-way through the session, when the kept states begin after it).
The smallest p-value times the number of comparisons (Bonferroni) is the check's p-value.
Neighbouring stretches of one chain are positively correlated, so adding their covariances
overstates the error of the difference and each test is conservative on stationary chains.
Chains still on their way from their starts come from different sides: their spread enters
the between-chain variance of the earlier stretch's cone, not a coherent move.

With an annealed gate, `analysis.checks` keeps in the earlier stretch the states sampled while
the gate still pulled weakly (γ·κ_gate at most half the category's κ), with their weights.

Pure numpy; angles in degrees in outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from analysis.cones import mcse_cone
from analysis.deguiding import compare_means

DRIFT_ALPHA = 0.01  # docs/verdicts.md: 0-2.5% false alarms on stationary participants


SPLITS = (0.25, 0.5, 0.75)  # where the kept states of each chain are cut in two


class Drift(NamedTuple):
    """early, late (d,): the prototypes of the two stretches of the comparison that differed
    most (smallest p-value); angle_deg between them; p_value: Bonferroni over the comparisons
    whose stretches both have a cone (NaN, and early, late NaN, where '': none has);
    moved: p_value < alpha; where: 'before' (the stretch
    before the kept states against them) or 'kept at 25%' (50%, 75%): the kept states cut
    there."""

    early: np.ndarray
    late: np.ndarray
    angle_deg: float
    p_value: float
    moved: bool
    where: str


def split(chain_index: np.ndarray, at: float) -> np.ndarray:
    """(n,) bool: the states from the fraction `at` of their chain on (states contiguous per
    chain, in step order; the cut rounds half up)."""
    chain_index = np.asarray(chain_index)
    out = np.zeros(len(chain_index), bool)
    for c in np.unique(chain_index):
        rows = np.flatnonzero(chain_index == c)
        out[rows[int(np.floor(at * len(rows) + 0.5)):]] = True
    return out


def drift(x: np.ndarray, chain_index: np.ndarray, weights: np.ndarray | None,
          before: np.ndarray, before_index: np.ndarray, before_weights: np.ndarray | None,
          alpha: float = DRIFT_ALPHA) -> Drift:
    """Kept states x (n, d) of one participant's chains `chain_index` (n,) with importance
    weights (n,) or None, and the stretch before them: `before` (m, d), its chain labels (m,)
    (the same labels as the kept states') and weights (m,) or None."""
    pick = (lambda w, rows: None if w is None else w[rows])  # noqa: E731
    pairs = {}
    for at in SPLITS:
        late = split(chain_index, at)
        pairs[f"kept at {at:.0%}"] = (
            mcse_cone(x[~late], chain_index[~late], pick(weights, ~late)),
            mcse_cone(x[late], chain_index[late], pick(weights, late)))
    if len(before):
        pairs["before"] = (mcse_cone(before, before_index, before_weights),
                           mcse_cone(x, chain_index, weights))
    pairs = {k: v for k, v in pairs.items() if np.isfinite([v[0].cone_deg, v[1].cone_deg]).all()}
    if not pairs:  # chains too short for any comparison
        nan = np.full(x.shape[1], np.nan)
        return Drift(nan, nan, float("nan"), float("nan"), False, "")
    tests = {k: compare_means(a, b) for k, (a, b) in pairs.items()}
    where = min(tests, key=lambda k: np.nan_to_num(tests[k].p_value, nan=2.0))
    p = min(1.0, len(tests) * tests[where].p_value)
    a, b = pairs[where]
    return Drift(a.mean, b.mean, tests[where].angle_deg, float(p), bool(p < alpha), where)
