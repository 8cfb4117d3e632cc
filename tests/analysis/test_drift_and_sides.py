"""analysis.stationarity (a prototype that moves during the session) and analysis.sides (answers
that follow a side of the screen), on simulated participants whose behaviour is known."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, special_ortho_group

from analysis.lapses import lapse_from_catch
from analysis.sides import side_bias
from analysis.stationarity import drift, split
from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import fibonacci_sphere, normalize, rotate_towards
from mcmcp.sim.chains import simulate_chains
from mcmcp.sim.quirks import Moving, SidePress

M = normalize(np.array([0.3, -0.5, 0.8]))


def starts(reps: int, rng) -> np.ndarray:
    return np.concatenate([fibonacci_sphere(4) @ special_ortho_group.rvs(3, random_state=rng).T
                           for _ in range(reps)])


def flagged(angle: float, reps: int, seed: int, n_shown: int = 250) -> float:
    """Share of 4 x n_shown participants flagged when their category (vMF, kappa 20) turns by
    `angle` degrees after half of each chain's trials."""
    rng = np.random.default_rng(seed)
    late = rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.radians(angle))
    agent = Moving(LatentAgent({"sad": VMFMixture.single(M, 20.0)}),
                   LatentAgent({"sad": VMFMixture.single(late, 20.0)}), n_shown // 2)
    s = starts(reps, rng)
    trace = simulate_chains(s, n_shown, 5.0, agent, "sad", None, rng,
                            identity=np.arange(len(s)).astype(str).astype(object))
    x = np.concatenate([trace.current, trace.final.position[None]])  # (T + 1, n, d)
    first = n_shown // 2 + 1  # the kept states: steps after the first half
    hits = 0
    for r in range(reps):
        cols = range(4 * r, 4 * r + 4)
        kept = np.concatenate([x[first:, i] for i in cols])
        before = np.concatenate([x[first // 2:first, i] for i in cols])
        hits += drift(kept, np.repeat(np.arange(4), len(x) - first), None,
                      before, np.repeat(np.arange(4), first - first // 2), None).moved
    return hits / reps


def test_a_prototype_moving_30_degrees_half_way_is_flagged():
    assert flagged(30.0, 100, 1) >= 0.8


def test_a_stationary_prototype_is_rarely_flagged():
    hits = round(flagged(0.0, 200, 2) * 200)
    assert binomtest(hits, 200, 0.05, alternative="greater").pvalue > 0.05, hits


def test_each_chain_is_cut_at_the_same_fraction():
    chain = np.repeat([0, 1], [5, 4])
    np.testing.assert_array_equal(split(chain, 0.5), [0, 0, 0, 1, 1, 0, 0, 1, 1])


def test_side_bias_is_the_exact_binomial_test():
    found = side_bias(130, 200)
    assert found.side == "right" and np.isclose(found.bias, 0.3)
    assert np.isclose(found.p_value, binomtest(130, 200, 0.5).pvalue)
    assert found.low < 0.3 < found.high
    assert np.isnan(side_bias(0, 0).bias)


def presses(share: float, lapse: float, reps: int, seed: int):
    """(right answers, trials, catch correct, catch trials) of reps participants answering 4 x
    100 chain trials and 40 catch trials (the target's log preference far above the foil's)."""
    rng = np.random.default_rng(seed)
    base = LatentAgent({"sad": VMFMixture.single(M, 20.0)}, lapse=lapse)
    agent = SidePress(base, share, "left")
    out = []
    for _ in range(reps):
        trace = simulate_chains(starts(1, rng), 100, 5.0, agent, "sad", None, rng)
        right = trace.right_is_proposal == trace.chose_proposal
        target_right = rng.random(40) < 0.5
        foil = rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.pi / 2)
        target = np.repeat(M[None], 40, axis=0)
        others = np.repeat(foil[None], 40, axis=0)
        m = target_right[:, None]
        answer = agent.choose("sad", np.where(m, others, target), np.where(m, target, others), rng)
        out.append((int(right.sum() + answer.chose_right.sum()), right.size + 40,
                    int((answer.chose_right == target_right).sum()), 40))
    return out


def test_a_30_percent_side_press_is_flagged_and_kept_apart_from_lapses():
    """30% of answers 'left' whatever the faces, the rest with random lapses of 0.05: flagged in
    (nearly) every participant, the side share is about 0.30, and of the catch-trial estimate
    of answers that ignore the faces (0.3 + 0.7 * 0.05 = 0.335) the random lapses are what is
    left (0.035), where before the whole 0.335 was called a lapse rate."""
    rows = presses(0.3, 0.05, 100, 3)
    found = [side_bias(r, n) for r, n, _, _ in rows]
    assert np.mean([f.flagged and f.side == "left" for f in found]) >= 0.9
    bias = np.mean([f.bias for f in found])
    assert abs(bias - 0.3) < 0.03
    total = lapse_from_catch(sum(r[2] for r in rows), sum(r[3] for r in rows))
    assert total.low < 0.335 < total.high
    assert abs(total.estimate - bias - 0.035) < 0.04


def test_no_side_press_is_rarely_flagged():
    found = [side_bias(r, n).flagged for r, n, _, _ in presses(0.0, 0.05, 60, 4)]
    assert sum(found) <= 2


def test_chains_too_short_to_compare_are_not_called_drifting():
    """Three kept states per chain (an online session part-way through): no stretch has a cone,
    so nothing is compared and nothing is flagged, where it used to crash the experimenter page."""
    rng = np.random.default_rng(0)
    x = normalize(M + 0.1 * rng.normal(size=(12, 3)))
    found = drift(x, np.repeat(np.arange(4), 3), None, x[:0], np.zeros(0, int), None)
    assert not found.moved and np.isnan(found.p_value) and found.where == ""
