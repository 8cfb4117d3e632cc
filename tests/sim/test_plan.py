"""mcmcp.plan and mcmcp.sim.sweeps: the planner measures what the report measures, a Dask sweep
gives the serial results, and the CLI prints a verdict and a figure."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import chain_states, diagnostics, load_trials
from analysis.checks import judge_states, stationary_states
from mcmcp import plan
from mcmcp.agents import LatentAgent
from mcmcp.config import config_from_dict
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate
from mcmcp.sampling.sphere import fibonacci_sphere
from mcmcp.sim import planner, sweeps
from mcmcp.sim.chains import simulate_chains
from mcmcp.sim.layout import Block, block_columns, session_columns
from mcmcp.sim.study import GroundTruth, make_design
from mcmcp.store import SessionStore

M = np.array([0.0, 0.6, 0.8])


@pytest.mark.parametrize("anneal", [None, 0.4], ids=["constant gamma", "annealed"])
def test_planner_judges_the_states_the_report_reads(tmp_path, anneal):
    """The planner works on the simulated arrays; the report on the written files: the same
    states table, so the same R-hat and the same verdicts (an annealed chain keeps only what it
    sampled with the gate off)."""
    agent = LatentAgent({"happy": VMFMixture.single(M, 15.0)})
    gate = Gate(VMFMixture.single([1.0, 0.0, 0.0], 4.0), 1.0, anneal)
    trace = simulate_chains(fibonacci_sphere(6), 60, 8.0, agent, "happy", gate,
                            np.random.default_rng(4))
    block = block_columns(Block("happy", trace, gate.gamma), 0, 60, agent, 0.0, None,
                          np.random.default_rng(5))
    columns, n = session_columns([block], "sim001", "latent", "2026-01-01T00:00:00Z")
    store = SessionStore.create(tmp_path, "sim001", 1, 3, {})
    store.append_columns(columns, n)
    store.finish()
    written = chain_states(load_trials(tmp_path))
    simulated = planner.trace_states(trace, ["sim001"], "happy", 6)
    for column in ("step", "n_steps", "x_0", "x_1", "x_2", "accepted", "shown", "log_gate",
                   "gate_gamma"):
        np.testing.assert_allclose(simulated[column].to_numpy(float),
                                   written[column].to_numpy(float, na_value=np.nan), atol=1e-12,
                                   err_msg=column)
    report = diagnostics.convergence(stationary_states(written), 0, by=[]).iloc[0]
    chains, _ = planner.kept_states(trace)
    rhat, ess = planner.group_rhat(chains)
    assert rhat == pytest.approx(report["rhat_max"], rel=1e-12)
    assert ess == pytest.approx(report["ess_bulk_min"], rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = judge_states(simulated, 5.0).set_index("participant")
        theirs = judge_states(written, 5.0).set_index("participant")
    for column in ("headline", "cone95_deg", "mean_0", "mean_1", "mean_2"):
        assert ours[column].equals(theirs[column]), column


def _shared(participants=2):
    cfg = config_from_dict({
        "name": "plan_test", "seed": 2, "emotions": ["happy", "sad"],
        "chains": {"per_emotion": 2, "kappa_proposal": 8.0},
        "trials": {"per_chain": 20, "catch_rate": 0.05},
        "gate": {"kind": "manual", "mean": [0.0, 0.0, 1.0], "kappa": 3.0, "gamma": 0.5},
        "agent": {"kind": "latent", "lapse": 0.05}}, "<plan test>", require_checkpoint=False)
    truth = GroundTruth("file", {"happy": VMFMixture.single(M, 12.0),
                                 "sad": VMFMixture.single(-M, 12.0)})
    design = make_design(cfg, None, truth, None, None, "<plan test>")
    return planner.Shared(design, participants, {e: d.mode() for e, d in truth.densities.items()},
                          0.5, 5.0, judge_states)


@pytest.mark.slow
def test_a_dask_sweep_gives_the_serial_results():
    shared = _shared()
    cells = [planner.Cell(t, c, s) for t, c in ((15, 2), (30, 3)) for s in range(2)]
    serial = sweeps.run(planner.simulate_cell, cells, shared, workers=0, progress=False)
    on_dask = sweeps.run(planner.simulate_cell, cells, shared, workers=2, progress=False)
    assert pd.DataFrame(sum(on_dask, [])).equals(pd.DataFrame(sum(serial, [])))
    # a running scheduler, as --scheduler ADDRESS reaches a real cluster
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster:
        remote = sweeps.run(planner.simulate_cell, cells, shared, cluster.scheduler_address,
                            progress=False)
    assert pd.DataFrame(sum(remote, [])).equals(pd.DataFrame(sum(serial, [])))
    rows = pd.DataFrame(sum(serial, []))
    assert len(rows) == len(cells) * 2 * 3  # two participants and the group per emotion
    groups = rows["participant"] == "all"
    assert rows.loc[groups, "rhat"].gt(0.9).all() and rows.loc[~groups, "rhat"].isna().all()
    assert rows["error_deg"].between(0, 90).all() and rows["minutes"].gt(0).all()
    assert set(rows["verdict"]) <= {"precise enough", "needs more", "no estimate",
                                    "several modes", "drift"}


def test_plan_cli_recommends_within_the_budget_and_draws_the_figure(tmp_path, capsys):
    config = tmp_path / "design.yaml"
    config.write_text("name: design\nseed: 4\nemotions: [happy, sad]\n"
                      "chains: {per_emotion: 2, kappa_proposal: 8}\n"
                      "trials: {per_chain: 30, catch_rate: 0.05, practice: 0}\n"
                      "gate: {kind: none}\nagent: {kind: latent, lapse: 0.05}\n"
                      "analysis: {precision: 20}\n")
    out = tmp_path / "plan"
    assert plan.main(["--config", str(config), "--truth", "manual", "--participants", "2",
                      "--trials", "60", "--chains", "3", "--seeds", "2", "--workers", "0",
                      "--minutes", "30", "--spread", "30", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "<- the config's design" in text
    assert re.search(r"the config's design \(30 trials x 2 chains, 120 shown trials per "
                     r"participant\): \d+% of participants within 20°", text)
    assert re.search(r"recommended: (\d+ trials per chain x \d+ chains per emotion, 2 emotion"
                     r"\(s\) per participant .* \d+ participants per emotion \(a group whose "
                     r"prototypes scatter with concentration 30|no design in the grid)", text)
    results = pd.read_csv(out / "plan.csv")
    grid = results[~results["check"]]
    # trials {30 (the config's), 60} x chains {2 (the config's), 3} x 2 seeds x 2 emotions x
    # (2 participants + the group)
    assert len(grid) == 2 * 2 * 2 * 2 * 3
    assert set(grid["trials"]) == {30, 60} and set(grid["chains"]) == {2, 3}
    assert (out / "plan.png").read_bytes().startswith(b"\x89PNG")


def test_recommend_fits_the_budget_or_says_what_it_would_take():
    table = pd.DataFrame({"trials": [100, 200], "chains": [4, 4], "precise": [0.95, 0.99],
                          "cone_q": [4.5, 3.0], "minutes": [8.0, 16.0], "group_precise": [1.0, 1.0],
                          "group_needed": [np.nan, np.nan]})
    table["meets"] = table["precise"] >= 0.9
    best = planner.recommend(table, 7, 30.0, 10, 5.0, 0.9)
    assert (best.trials, best.chains, best.emotions, best.participants, best.total) == (
        100, 4, 3, 10, 30)
    assert best.minutes <= 30
    short = planner.recommend(table, 7, 5.0, 10, 5.0, 0.9)
    assert short.trials is None and "cannot" in short.words and "8 min" in short.words
    none = planner.recommend(table.assign(meets=False), 7, 30.0, 10, 2.0, 0.9)
    assert none.trials is None and "3.0°" in none.words


def test_plan_across_compares_designs_for_the_same_participant_time(capsys):
    """`--across`: participants of M minutes give each emotion its share of the time; the table
    and the answer are the simulated studies' (`mcmcp.sim.across.compare`, the same seeds), and
    the design needing fewer people is named the best within one."""
    from mcmcp.sim.across import compare

    argv = ["--config", "experiments/shared_demo.yaml", "--truth", "manual", "--across",
            "--minutes", "20", "--precision", "8", "--seeds", "3", "--people", "5", "20",
            "--confidence", "0.6"]
    assert plan.main(argv) == 0
    text = capsys.readouterr().out
    assert "participants of 20 min = 60 trials per emotion each" in text  # 480 / 7, by 10s
    rows = compare(60, 8, 10, 3, 30.0, 30.0, [5, 20], 3, 8.0, 0.6)
    for r in rows:
        need = r["people_needed"]
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {r['label']} |"))
        assert line.endswith(f"| {need or '> 20'} | {f'{need * 20:g}' if need else '-'} |")
    across = rows[-1]["people_needed"]
    assert (f"across (across, 8 shared chains, holds of 10): {across} participants of 20 min"
            in text) if across else "more than 20 participants" in text
    with pytest.raises(SystemExit):
        plan.main(argv[:5] + ["--precision", "8"])  # --across without --minutes
