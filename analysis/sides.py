"""Side bias: answers that follow the side of the screen, not the faces, kept apart from lapses.

The engine puts each face of a pair on the left or the right with probability 1/2, independently
of everything before (chain trials: current and proposal; catch trials: target and foil). So
whatever a side-unbiased person's choice probabilities, P(answer "right") = ½·a + ½·(1 - a) = ½
on every trial given the past: the number of "right" answers of n such trials is exactly
Binomial(n, ½), and an exact binomial test has its stated level. (Repeat trials are left out:
they swap the sides of an earlier trial, so their side is not independent of its answer.)

A participant who on a share s of trials presses one side regardless of the faces (and lapses
at random with rate λ, otherwise follows the faces) answers that side with probability
½ + s/2, so ŝ = |2·share − 1|. On a catch trial they are right with probability 1 − λ/2 − s/2,
so the usual lapse estimate 2·(1 − accuracy) measures λ + s: the share of answers that ignore
the faces, which is what flattens the chains (a side press accepts the proposal with probability
½ whatever it is, exactly like a lapse; `analysis.lapses` corrects the width for that share).
The random-lapse part alone is λ̂ = 2·(1 − accuracy) − ŝ, where the side bias is flagged (an
unflagged ŝ is mostly noise: |2·share − 1| is positive on average).

Pure functions; no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

from scipy.stats import binomtest

SIDE_ALPHA = 0.001  # a side-unbiased participant is flagged 0.1% of the time (exact test)


class SideBias(NamedTuple):
    """share_right: share of "right" answers (NaN with none); bias: ŝ = |2·share - 1|, the
    share of answers that follow a side, with its 95% interval [low, high] (Clopper-Pearson,
    mapped); side: 'left' or 'right' (the side favoured); p_value: exact binomial test of
    share ½; flagged: p_value < SIDE_ALPHA; n: trials it rests on."""

    share_right: float
    bias: float
    low: float
    high: float
    side: str
    p_value: float
    flagged: bool
    n: int


def side_bias(n_right: int, n: int, alpha: float = SIDE_ALPHA) -> SideBias:
    """Side bias from the number of "right" answers `n_right` of `n` two-face trials (chain and
    catch trials; not repeats)."""
    nan = float("nan")
    if n == 0:
        return SideBias(nan, nan, nan, nan, "", nan, False, 0)
    test = binomtest(n_right, n, 0.5)
    ci = test.proportion_ci(0.95, method="exact")
    share = n_right / n
    side = "right" if share >= 0.5 else "left"
    lo, hi = (2 * ci.low - 1, 2 * ci.high - 1) if side == "right" else (1 - 2 * ci.high,
                                                                        1 - 2 * ci.low)
    return SideBias(share, abs(2 * share - 1), max(lo, 0.0), hi, side, float(test.pvalue),
                    bool(test.pvalue < alpha), n)
