"""mcmcp.sampling.chain: shapes, the vMF proposal, and the stationary distribution of agent-driven chains.

A latent agent whose category is vMF(m, k) and who chooses with Luce exponent g makes the chain
target p^g ∝ vMF(m, g k); samples after burn-in are compared with scipy's vMF samples.
"""

import numpy as np
import pytest
from scipy.stats import ks_2samp, vonmises_fisher

from mcmcp.agents import LatentAgent
from mcmcp.sampling import chain
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import fibonacci_sphere, geodesic, normalize, spherical_mean
from mcmcp.sim.chains import simulate_chains

P_MIN = 1e-3
M = normalize(np.array([0.3, -0.5, 0.8]))


def azimuth(x, mu):
    """Angle of x around mu in a fixed tangent basis, radians."""
    q, _ = np.linalg.qr(np.column_stack([mu, np.eye(3)]))
    return np.arctan2(x @ q[:, 2], x @ q[:, 1])


def assert_vmf(samples, mu, kappa, seed=0):
    """Two-sample KS on mu·x and on the azimuth around mu against scipy vMF(mu, kappa)."""
    ref = vonmises_fisher(mu, kappa).rvs(len(samples), random_state=seed)
    p_w = ks_2samp(1 - samples @ mu, 1 - ref @ mu).pvalue
    p_az = ks_2samp(azimuth(samples, mu), azimuth(ref, mu)).pvalue
    assert p_w > P_MIN and p_az > P_MIN, (p_w, p_az)


def test_shapes_one_chain_and_arrays():
    rng = np.random.default_rng(0)
    for pos in (np.array([0, 0, 1.0]), fibonacci_sphere(6), fibonacci_sphere(6).reshape(2, 3, 3)):
        s = chain.init(pos, 10.0)
        assert s.iteration.shape == s.kappa.shape == pos.shape[:-1]
        prop = chain.propose(s, rng)
        assert prop.shape == pos.shape
        np.testing.assert_allclose(np.linalg.norm(prop, axis=-1), 1.0)
        chose = np.ones(pos.shape[:-1], dtype=bool)
        s2 = chain.step(s, prop, chose)
        np.testing.assert_array_equal(s2.position, prop)
        assert np.all(s2.iteration == 1) and np.all(s2.n_accepted == 1)
        s3 = chain.step(s2, chain.propose(s2, rng), np.zeros(pos.shape[:-1], dtype=bool))
        np.testing.assert_array_equal(s3.position, prop)
        assert np.all(s3.iteration == 2) and np.all(s3.n_accepted == 1)


def test_proposal_is_vmf_around_current():
    rng = np.random.default_rng(1)
    x = normalize(np.array([-1.0, 0.2, 0.4]))
    s = chain.init(np.tile(x, (5000, 1)), 25.0)
    assert_vmf(chain.propose(s, rng), x, 25.0)


def test_barker_probability():
    np.testing.assert_allclose(chain.barker_probability(np.log(1.0), np.log(3.0)), 0.75)
    assert chain.barker_probability(-1000.0, 0.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "k, g, kappa_prop, burn_in",
    [(5.0, 1.0, 20.0, 100), (10.0, 2.0, 10.0, 100), (30.0, 1.0, 100.0, 200), (3.0, 0.5, 5.0, 100)],
)
def test_latent_agent_chain_samples_vmf_with_kappa_times_exponent(k, g, kappa_prop, burn_in):
    agent = LatentAgent({"happy": VMFMixture.single(M, k)}, exponent=g)
    rng = np.random.default_rng(int(k * 10 + g))
    tr = simulate_chains(fibonacci_sphere(600), burn_in + 300, kappa_prop, agent, "happy",
                         None, rng)
    x = tr.current[burn_in::15].reshape(-1, 3)  # thinned: 20 nearly independent draws per chain
    assert_vmf(x, M, g * k)
    assert np.degrees(geodesic(spherical_mean(x), M)) < 2.0


def test_a_wrong_exponent_is_detected():
    """The test above can fail: samples of vMF(m, g k) are not vMF(m, k)."""
    agent = LatentAgent({"happy": VMFMixture.single(M, 10.0)}, exponent=2.0)
    tr = simulate_chains(fibonacci_sphere(600), 300, 10.0, agent, "happy", None,
                         np.random.default_rng(2))
    x = tr.current[100::15].reshape(-1, 3)
    ref = vonmises_fisher(M, 10.0).rvs(len(x), random_state=0)
    assert ks_2samp(x @ M, ref @ M).pvalue < 1e-6


def test_adaptation_freezes_after_burn_in_and_keeps_the_target():
    agent = LatentAgent({"happy": VMFMixture.single(M, 10.0)}, exponent=1.0)
    burn = 60
    tr = simulate_chains(fibonacci_sphere(600), 400, 200.0, agent, "happy", None,
                         np.random.default_rng(3), adapt=(0.4, burn))
    # kappa moved during burn-in (200 is far too concentrated for a k = 10 category) ...
    assert np.median(tr.kappa[burn]) < 100.0
    # ... and is constant from iteration burn_in + 1 on, per chain
    np.testing.assert_array_equal(tr.kappa[burn + 1 :], np.broadcast_to(tr.kappa[burn + 1],
                                                                        tr.kappa[burn + 1 :].shape))
    acc = tr.accepted[burn + 1 :].mean()
    assert 0.25 < acc < 0.55
    assert_vmf(tr.current[150::15].reshape(-1, 3), M, 10.0)


def test_adapt_kappa_direction():
    s = chain.init(fibonacci_sphere(2), 10.0)
    s = s._replace(iteration=np.array([1, 1]))
    up = chain.adapt_kappa(s, np.array([False, True]), target=0.5, burn_in=10)
    assert up.kappa[0] > 10.0 > up.kappa[1]
    late = s._replace(iteration=np.array([11, 11]))
    np.testing.assert_array_equal(chain.adapt_kappa(late, np.array([True, True]), 0.5, 10).kappa,
                                  late.kappa)
