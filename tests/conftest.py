"""Shared fixtures. Analysis fixtures (prefix `analysis_`) write small simulated studies in the
trial schema with the real chain step (`mcmcp.chain`) and sphere maths (`mcmcp.sphere`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mcmcp import chain, schema, sphere


def analysis_truth(emotions: list[str], kappa: float) -> dict[str, dict]:
    """Well-separated true prototypes (a Fibonacci lattice) with one concentration."""
    means = sphere.fibonacci_sphere(max(len(emotions), 2), 3)
    return {e: {"mean": means[i].tolist(), "kappa": kappa} for i, e in enumerate(emotions)}


def analysis_simulate_session(
    root: Path,
    participant: str,
    truth: dict[str, dict],
    seed: int,
    n_chains: int = 4,
    n_iter: int = 200,
    kappa_proposal: float = 30.0,
    lapse: float = 0.0,
    n_catch: int = 20,
    gate: dict | None = None,
    starts: np.ndarray | None = None,
    checkpoint_sha256: str | None = None,
    session: int = 1,
) -> Path:
    """Simulate one participant-session of a Luce agent whose category density is vMF(truth)
    and write `trials.csv` + `session.json` as the lab writer does; returns the folder.

    gate: {emotion: {"mean": [...], "kappa": k}, "gamma": g} screens proposals (guided MCMCP).
    lapse: probability of answering at random (chain and catch trials alike).
    """
    rng = np.random.default_rng(seed)
    emotions = list(truth)
    d = 3
    names = schema.header(d)
    rows: list[dict] = []
    base = {"participant": participant, "session": session, "agent": "latent"}
    for block, emotion in enumerate(emotions):
        mu, kappa = np.asarray(truth[emotion]["mean"]), truth[emotion]["kappa"]
        start = sphere.fibonacci_sphere(n_chains, d) if starts is None else starts
        state = chain.init(start, kappa_proposal)
        for t in range(n_iter):
            prop = chain.propose(state, rng)
            cur = state.position
            row_gate = {}
            passed = np.ones(n_chains, bool)
            if gate is not None:
                gmu, gk = np.asarray(gate[emotion]["mean"]), gate[emotion]["kappa"]
                lg_cur, lg_prop = sphere.vmf_logpdf(cur, gmu, gk), sphere.vmf_logpdf(prop, gmu, gk)
                prob = chain.barker_probability(gate["gamma"] * lg_cur, gate["gamma"] * lg_prop)
                passed = rng.random(n_chains) < prob
            p_choose = chain.barker_probability(sphere.vmf_logpdf(cur, mu, kappa),
                                                sphere.vmf_logpdf(prop, mu, kappa))
            p_choose = (1 - lapse) * p_choose + lapse * 0.5
            chose = (rng.random(n_chains) < p_choose) & passed
            right_is_prop = rng.random(n_chains) < 0.5
            rts = rng.lognormal(np.log(0.9), 0.3, n_chains)
            for c in range(n_chains):
                if gate is not None:
                    row_gate = {"log_gate_current": lg_cur[c], "log_gate_proposal": lg_prop[c],
                                "gate_gamma": gate["gamma"], "gate_prob": prob[c]}
                row = {**base, "block": block, "emotion": emotion, "chain": block * n_chains + c,
                       "iteration": t, "kappa_proposal": kappa_proposal, **row_gate,
                       **{f"current_{i}": cur[c, i] for i in range(d)},
                       **{f"proposal_{i}": prop[c, i] for i in range(d)}}
                if passed[c]:
                    sides = ("current", "proposal") if right_is_prop[c] else ("proposal", "current")
                    row.update(kind="chain", left_role=sides[0], right_role=sides[1],
                               response="right" if chose[c] == right_is_prop[c] else "left",
                               chose_proposal=bool(chose[c]), accepted=bool(chose[c]), rt=rts[c])
                else:
                    row.update(kind="gate", accepted=False)
                rows.append(row)
            state = chain.step(state, prop, chose)
        others = [e for e in emotions if e != emotion] or [emotion]
        for _ in range(n_catch):
            foil_emotion = others[rng.integers(len(others))]
            target = sphere.sample_vmf(mu[None], 50.0, rng)[0]
            foil = sphere.sample_vmf(np.asarray(truth[foil_emotion]["mean"])[None], 50.0, rng)[0]
            p_target = chain.barker_probability(sphere.vmf_logpdf(foil, mu, kappa),
                                                sphere.vmf_logpdf(target, mu, kappa))
            correct = rng.random() < (1 - lapse) * p_target + lapse * 0.5
            rows.append({**base, "block": block, "emotion": emotion, "kind": "catch",
                         "left_role": "target", "right_role": "foil",
                         "response": "left" if correct else "right", "correct": bool(correct),
                         "foil_emotion": foil_emotion, "rt": rng.lognormal(np.log(0.8), 0.3),
                         **{f"current_{i}": target[i] for i in range(d)},
                         **{f"proposal_{i}": foil[i] for i in range(d)}})
    trial = 0
    for i, row in enumerate(rows):
        row["row"] = i
        if row["kind"] != "gate":
            trial += 1
            row["trial"] = trial
    folder = Path(root) / f"sub-{participant}" / f"ses-{session:02d}"
    folder.mkdir(parents=True)
    with open(folder / "trials.csv", "w", encoding="utf-8") as f:
        f.write(",".join(names) + "\n")
        # .item(): write numpy scalars as plain Python numbers, whatever format_row does with them
        f.writelines(schema.format_row({k: getattr(v, "item", lambda v=v: v)() for k, v in r.items()},
                                       names) for r in rows)
    config = {"name": "sim", "seed": seed, "emotions": emotions,
              "chains": {"per_emotion": n_chains, "kappa_proposal": kappa_proposal},
              "trials": {"per_chain": n_iter},
              "gate": {"kind": "manual", "gamma": gate["gamma"]} if gate else {"kind": "none"}}
    meta = {"participant": participant, "session": session, "d": d, "config": config,
            "checkpoint_sha256": checkpoint_sha256, "agent": {"kind": "latent", "lapse": lapse},
            "ground_truth": truth, "start_time": "2024-01-01T00:00:00Z", "status": "finished"}
    (folder / "session.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def analysis_small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two attentive participants and one inattentive one (lapse 0.9), two emotions, 4 chains x
    120 steps; returns the data root. Shared by many tests: never write into it."""
    truth = analysis_truth(["happy", "sad"], kappa=20.0)
    root = tmp_path_factory.mktemp("analysis") / "participants_data"
    for i, lapse in enumerate((0.0, 0.0, 0.9)):
        analysis_simulate_session(root, f"sim{i + 1:03d}", truth, seed=10 + i, n_iter=120,
                                  lapse=lapse)
    return root


@pytest.fixture
def analysis_simulate():
    """The session simulator above, for tests that need their own designs."""
    return analysis_simulate_session
