"""mcmcp.sampling.gate: the guided chain targets p^g_a * g^gamma, and gate rows rebuild the chain exactly."""

import csv
import io
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import ks_2samp, vonmises_fisher

from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate, make_gate
from mcmcp.sampling.sphere import fibonacci_sphere, geodesic, normalize, rotate_towards, spherical_mean
from mcmcp.schema import format_columns, header, latent_columns
from mcmcp.sim.chains import simulate_chains
from mcmcp.sim.layout import Block, block_columns, session_columns

P_MIN = 1e-3
M = normalize(np.array([0.2, 0.9, -0.3]))


def azimuth(x, mu):
    q, _ = np.linalg.qr(np.column_stack([mu, np.eye(3)]))
    return np.arctan2(x @ q[:, 2], x @ q[:, 1])


def gate_away(angle_deg):
    return rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.radians(angle_deg))


@pytest.mark.parametrize(
    "k, g_a, k_g, gamma, angle",
    [(10.0, 1.0, 10.0, 1.0, 0.0), (10.0, 1.0, 5.0, 1.0, 30.0), (5.0, 2.0, 8.0, 0.5, 45.0),
     (20.0, 1.0, 10.0, 2.0, 60.0)],
)
def test_guided_chain_targets_the_product_vmf(k, g_a, k_g, gamma, angle):
    m_g = gate_away(angle)
    agent = LatentAgent({"sad": VMFMixture.single(M, k)}, exponent=g_a)
    gate = Gate(VMFMixture.single(m_g, k_g), gamma)
    tr = simulate_chains(fibonacci_sphere(800), 300, 15.0, agent, "sad", gate,
                         np.random.default_rng(int(angle) + 1))
    # Only iterations every chain reached: conditioning on "still running" would bias.
    t_all = int(tr.active.all(axis=1).sum())
    assert t_all > 250
    x = tr.current[100:t_all:12].reshape(-1, 3)
    eta = g_a * k * M + gamma * k_g * m_g
    mu, kappa = normalize(eta), np.linalg.norm(eta)
    ref = vonmises_fisher(mu, kappa).rvs(len(x), random_state=0)
    assert ks_2samp(1 - x @ mu, 1 - ref @ mu).pvalue > P_MIN
    assert ks_2samp(azimuth(x, mu), azimuth(ref, mu)).pvalue > P_MIN
    if angle > 0:  # the gate really pulls: the sample mean sits at mu, not at the category's M
        mean = spherical_mean(x)
        assert geodesic(mean, mu) < 0.25 * geodesic(M, mu)


def test_screen_probability_is_barker_on_g_to_the_gamma():
    dens = VMFMixture.single(M, 4.0)
    gate = Gate(dens, 2.0)
    cur, prop = fibonacci_sphere(50), fibonacci_sphere(50)[::-1]
    res = gate.screen(cur, prop, np.random.default_rng(0))
    g_c, g_p = np.exp(dens.logpdf(cur)), np.exp(dens.logpdf(prop))
    np.testing.assert_allclose(res.prob, g_p**2 / (g_c**2 + g_p**2), rtol=1e-10)
    many = Gate(dens, 2.0).screen(np.tile(cur[:1], (20000, 1)), np.tile(prop[:1], (20000, 1)),
                                  np.random.default_rng(1))
    assert many.passed.mean() == pytest.approx(res.prob[0], abs=0.015)


def test_gate_rows_rebuild_the_engine_chain_exactly():
    agent = LatentAgent({"sad": VMFMixture.single(M, 10.0), "happy": VMFMixture.single(-M, 5.0)})
    gate = Gate(VMFMixture.single(gate_away(40.0), 6.0), 1.0)
    C, n_shown = 3, 40
    centroids = {"sad": M, "happy": -M}
    blocks, traces = [], []
    for b, emotion in enumerate(("sad", "happy")):
        tr = simulate_chains(fibonacci_sphere(C), n_shown, 10.0, agent, emotion, gate,
                             np.random.default_rng(len(emotion)))
        traces.append(tr)
        blocks.append(block_columns(Block(emotion, tr, gate.gamma), b, n_shown, agent, 0.1,
                                    centroids, np.random.default_rng(7 + b)))
    columns, n = session_columns(blocks, "sim001", agent.name, "2026-01-01T00:00:00Z")
    text = format_columns(columns, n, header(3))
    prow = list(csv.DictReader(io.StringIO(",".join(header(3)) + "\n" + text)))
    cur_cols, prop_cols = latent_columns("current", 3), latent_columns("proposal", 3)
    assert [int(r["row"]) for r in prow] == list(range(len(prow)))
    kinds = [r["kind"] for r in prow]
    assert kinds.count("gate") > 0 and kinds.count("catch") == 2 * round(0.1 * C * n_shown / 0.9)
    assert kinds.count("chain") == len(blocks) * C * n_shown
    for b, tr in enumerate(traces):
        for j in range(C):
            events = [r for r in prow if r["chain"] == str(b * C + j)]
            # file order is iteration order, with no gaps
            assert [int(r["iteration"]) for r in events] == list(range(len(events)))
            assert sum(r["kind"] == "chain" for r in events) == n_shown
            assert events[-1]["kind"] == "chain"  # a chain stops at its last shown trial
            state = np.array([float(events[0][c]) for c in cur_cols])
            for t, r in enumerate(events):
                np.testing.assert_array_equal([float(r[c]) for c in cur_cols], state)
                np.testing.assert_array_equal(state, tr.current[t, j])
                if r["kind"] == "gate":
                    assert r["accepted"] == "False" and r["response"] == "" and r["rt"] == ""
                if r["accepted"] == "True":
                    state = np.array([float(r[c]) for c in prop_cols])
            np.testing.assert_array_equal(state, tr.final.position[j])
    shown = [r for r in prow if r["kind"] != "gate"]
    assert [int(r["trial"]) for r in shown] == list(range(1, len(shown) + 1))
    onsets = [float(r["onset"]) for r in shown]
    assert all(np.diff(onsets) > 0)
    for r in prow:
        if r["kind"] == "chain":
            side = "right" if r["right_role"] == "proposal" else "left"
            assert (r["response"] == side) == (r["chose_proposal"] == "True")
        if r["kind"] == "catch":
            target_side = "right" if r["right_role"] == "target" else "left"
            assert (r["response"] == target_side) == (r["correct"] == "True")
            assert r["chain"] == "" and r["foil_emotion"] in centroids


def test_make_gate_kinds():
    dens = {"happy": VMFMixture.single(M, 3.0)}
    spec = SimpleNamespace(kind="none", gamma=1.0, components=3, mean=None, kappa=None)
    assert make_gate(spec, "happy") is None
    g = make_gate(SimpleNamespace(**{**vars(spec), "kind": "vmf", "gamma": 2.0}), "happy", dens)
    assert g.gamma == 2.0 and g.density is dens["happy"]
    man = make_gate(SimpleNamespace(**{**vars(spec), "kind": "manual", "mean": (0, 0, 2.0),
                                       "kappa": 7.0}), "happy")
    np.testing.assert_allclose(man.density.means[0], [0, 0, 1.0])
    with pytest.raises(ValueError, match="fitted"):
        make_gate(SimpleNamespace(**{**vars(spec), "kind": "mixture"}), "sad", dens)
    with pytest.raises(ValueError, match="gamma"):
        Gate(dens["happy"], 0.0)
