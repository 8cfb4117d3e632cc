"""mcmcp.sampling.gsp: the circle, and the stationary law of GSP chains against scipy's vMF.

A latent agent with category vMF(m, k) choosing points along the circle by softmax of g·log p
makes the chain sample p^g = vMF(m, g k), for any number of points K; with the gate (Barker on
g^γ after the choice) it samples p^g·g^γ, itself a vMF. Draws are the final states of many
independent chains (no thinning needed), compared with scipy by two-sample KS on m·x and on
the azimuth around m (tests/test_chain.py's `assert_vmf`).
"""

import numpy as np
import pytest
from scipy.stats import chisquare, ks_2samp, vonmises_fisher

from mcmcp.agents import LatentAgent
from mcmcp.sampling import gsp
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate
from mcmcp.sampling.sphere import fibonacci_sphere, geodesic, normalize, sample_uniform, spherical_mean
from mcmcp.sim.chains import simulate_gsp_chains
from tests.sampling.test_chain import M, assert_vmf


def test_circle_points_are_unit_great_circle_through_x():
    rng = np.random.default_rng(0)
    x = sample_uniform(50, 5, rng)
    c = gsp.draw_circle(x, 12, rng)
    np.testing.assert_allclose(np.sum(c.direction * x, axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(c.points, axis=-1), 1.0)
    np.testing.assert_array_equal(c.points[:, 0], x)
    # neighbouring points are 2π/K apart, all in the plane of x and u
    np.testing.assert_allclose(np.sum(c.points[:, 1] * c.points[:, 0], axis=1), np.cos(np.pi / 6))
    resid = c.points - (c.points @ x[:, :, None]) * x[:, None] \
        - (c.points @ c.direction[:, :, None]) * c.direction[:, None]
    np.testing.assert_allclose(resid, 0.0, atol=1e-12)
    assert ((0 <= c.shift) & (c.shift < 12) & (0 <= c.start) & (c.start < 12)).all()
    k = np.arange(12)
    np.testing.assert_array_equal(gsp.slider_to_point(gsp.point_to_slider(k, 5, 12), 5, 12), k)


def test_tangent_direction_is_uniform():
    """Around x = e_3 on S^2 the direction's angle is uniform on the circle."""
    rng = np.random.default_rng(1)
    x = np.tile([0.0, 0.0, 1.0], (4000, 1))
    u = gsp.tangent_directions(x, rng)
    angle = np.arctan2(u[:, 1], u[:, 0])
    assert ks_2samp(angle, rng.uniform(-np.pi, np.pi, 4000)).pvalue > 1e-3


def test_choice_probabilities_softmax_and_lapse():
    logp = np.log(np.array([[1.0, 2.0, 1.0, 4.0]]))
    np.testing.assert_allclose(gsp.choice_probabilities(logp, 1.0), [[1 / 8, 2 / 8, 1 / 8, 4 / 8]])
    p = gsp.choice_probabilities(logp, 2.0, lapse=0.2)
    np.testing.assert_allclose(p, 0.8 * np.array([[1, 4, 1, 16]]) / 22 + 0.05)
    draws = gsp.sample_choice(np.repeat(p, 20000, axis=0), np.random.default_rng(2))
    assert chisquare(np.bincount(draws, minlength=4), 20000 * p[0]).pvalue > 1e-3


def _final_states(agent, n, steps, points, gate=None, seed=0, start=None):
    start = fibonacci_sphere(n) if start is None else start
    return simulate_gsp_chains(start, steps, points, agent, "happy", gate,
                               np.random.default_rng(seed))


@pytest.mark.parametrize("k, g, points, from_target", [(5.0, 2.0, 32, False),
                                                       (20.0, 1.0, 6, True)])
def test_gsp_chain_samples_vmf_with_kappa_times_exponent(k, g, points, from_target):
    """From spread starts the chains converge to p^g; started at draws of p^g they stay there,
    even with 6 points 60 degrees apart (the law is exact for any K, only mixing is slower)."""
    agent = LatentAgent({"happy": VMFMixture.single(M, k)}, exponent=g)
    start = vonmises_fisher(M, g * k).rvs(3000, random_state=9) if from_target else None
    tr, extra = _final_states(agent, 3000, 40, points, seed=int(k), start=start)
    x = tr.final.position
    assert_vmf(x, M, g * k)
    assert np.degrees(geodesic(spherical_mean(x), M)) < 2.0
    # the rows say what the chain did: proposal = the confirmed point, state = it if accepted
    np.testing.assert_allclose(tr.current[1:], np.where(tr.accepted[:-1, :, None],
                                                        tr.proposal[:-1], tr.current[:-1]))
    assert extra["direction"].shape == tr.current.shape


def test_a_wrong_law_is_detected():
    """The test above can fail: GSP samples of vMF(m, 2k) are not vMF(m, k)."""
    agent = LatentAgent({"happy": VMFMixture.single(M, 5.0)}, exponent=2.0)
    x = _final_states(agent, 3000, 40, 32, seed=3)[0].final.position
    ref = vonmises_fisher(M, 5.0).rvs(len(x), random_state=0)
    assert ks_2samp(x @ M, ref @ M).pvalue < 1e-6


def test_gated_gsp_samples_p_times_g_to_the_gamma():
    """p = vMF(M, 5), g = vMF(m2, 8), γ = 0.5: p·g^γ = vMF(μ, |5 M + 4 m2|)."""
    m2 = normalize(np.array([0.8, 0.1, 0.2]))
    agent = LatentAgent({"happy": VMFMixture.single(M, 5.0)}, exponent=1.0)
    gate = Gate(VMFMixture.single(m2, 8.0), 0.5)
    tr, _ = _final_states(agent, 3000, 60, 32, gate=gate, seed=4)
    natural = 5.0 * M + 0.5 * 8.0 * m2
    assert_vmf(tr.final.position, normalize(natural), float(np.linalg.norm(natural)))
    refused = ~np.isnan(tr.gate_prob) & ~tr.accepted & ~np.all(tr.proposal == tr.current, axis=-1)
    assert refused.mean() > 0.05  # the gate really refused moves


def test_lapse_on_the_ring_mixes_in_the_uniform_law_exactly():
    """On S^1 the circle is the ring: from x the chain can only reach x rotated by 2πj/K, and
    every trial chooses among the same K points whatever the state, so the stationary law on
    them is exactly (1 - λ)·softmax(g log p) + λ/K."""
    points, lapse = 8, 0.3
    m = np.array([1.0, 0.0])
    agent = LatentAgent({"happy": VMFMixture.single(m, 2.0)}, exponent=1.0, lapse=lapse)
    start = np.tile(m, (20000, 1))
    tr, _ = simulate_gsp_chains(start, 5, points, agent, "happy", None,
                                np.random.default_rng(5))
    angle = np.mod(np.arctan2(tr.final.position[:, 1], tr.final.position[:, 0]), 2 * np.pi)
    j = np.rint(angle / (2 * np.pi / points)).astype(int) % points
    theta = 2 * np.pi * np.arange(points) / points
    expected = gsp.choice_probabilities(2.0 * np.cos(theta)[None], 1.0, lapse)[0]
    assert chisquare(np.bincount(j, minlength=points), len(j) * expected).pvalue > 1e-3


def test_lapse_flattens_the_law_on_the_sphere_but_keeps_its_mode():
    """On S^2 a lapse is a uniform move along the circle: the law is flatter than p^g (not
    exact), still centred on the prototype."""
    agent = LatentAgent({"happy": VMFMixture.single(M, 20.0)}, exponent=1.0, lapse=0.2)
    x = _final_states(agent, 3000, 40, 32, seed=6)[0].final.position
    ref = vonmises_fisher(M, 20.0).rvs(len(x), random_state=0)
    assert np.mean(x @ M) < np.mean(ref @ M) - 0.02
    assert np.degrees(geodesic(spherical_mean(x), M)) < 2.0


def test_agent_slides_to_its_best_point_and_longer_drags_take_longer():
    agent = LatentAgent({"happy": VMFMixture.single(M, 20.0)}, exponent=50.0)
    rng = np.random.default_rng(7)
    x = sample_uniform(4000, 3, rng)
    c = gsp.draw_circle(x, 16, rng)
    best = np.argmax(c.points @ M, axis=1)
    answer = agent.slide("happy", c.points, c.start, c.shift, rng)
    assert np.mean(answer.choice == best) > 0.97  # near-ties between two points aside
    steps = np.abs(gsp.point_to_slider(answer.choice, c.shift, 16)
                   - gsp.point_to_slider(c.start, c.shift, 16))
    slope = np.polyfit(steps, answer.rt, 1)[0]
    assert slope == pytest.approx(agent.slider_rt.drag, abs=0.02)
    assert np.median(answer.rt) > np.median(agent.rt.sample(np.full(4000, 0.5), rng))


def test_online_sessions_saved_before_gsp_still_match_their_config(tmp_path):
    """An unfinished online session whose saved config predates `paradigm`/`gsp` is the same
    MCMCP study; one saved with another paradigm is not."""
    from mcmcp.config import ConfigError, config_from_dict, config_to_dict
    from mcmcp.online.database import Database
    from mcmcp.online.study import check_database

    cfg = config_from_dict({"name": "s"}, "s.yaml", require_checkpoint=False)
    old = {k: v for k, v in config_to_dict(cfg).items() if k not in ("paradigm", "gsp")}
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    for pid, config in (("P1", old), ("P2", {**old, "paradigm": "gsp"})):
        db.create(uid=pid, study="s", participant=pid, session=1, token=pid * 8, d=3,
                  screen="consent", meta={"config": config, "checkpoint_sha256": "abc"},
                  now="2026-01-01T00:00:00")
        if pid == "P1":
            check_database(cfg, db, "abc", "s.yaml")  # no error
    with pytest.raises(ConfigError, match=r"differ in \['paradigm'\]"):
        check_database(cfg, db, "abc", "s.yaml")
