"""Within- vs across-participant designs (mcmcp.sim.across): each design's group prototype
against the group mean it is simulated around, and the people-needed rule."""

from __future__ import annotations

import numpy as np
import pytest

from mcmcp.sim.across import group_error, people_needed

M = np.array([0.6, 0.0, 0.8])


@pytest.mark.parametrize("design, chains", [("within", 2), ("across", 8)])
def test_many_people_find_the_group_mean(design, chains):
    """120 people of 60 trials each, scattered with kappa_between 30: the group prototype is
    within 4 degrees of the group mean in 4 of 5 studies (the mean of 120 people's prototypes
    alone is ~1.4 degrees off), and further off with 10 people."""
    many = [group_error(design, 120, 60, chains, M, 30.0, 30.0, np.random.default_rng([s, 1]))
            for s in range(5)]
    few = [group_error(design, 10, 60, chains, M, 30.0, 30.0, np.random.default_rng([s, 2]))
           for s in range(5)]
    assert np.mean(np.array(many) < 4.0) >= 0.8, many
    assert np.median(few) > np.median(many)


def test_a_study_is_its_seed():
    a = group_error("across", 20, 60, 8, M, 30.0, 30.0, np.random.default_rng(3))
    b = group_error("across", 20, 60, 8, M, 30.0, 30.0, np.random.default_rng(3))
    assert a == b


def test_people_needed_takes_the_fewest_that_stay_within_target():
    errors = {10: [6, 7, 2, 8], 20: [2, 3, 4, 1], 40: [6, 6, 6, 1], 80: [1, 2, 1, 1]}
    assert people_needed(errors, 5.0, share=0.75) == 80  # 20 passes, but 40 does not
    assert people_needed(errors, 10.0, share=0.75) == 10
    assert people_needed(errors, 0.5) is None
