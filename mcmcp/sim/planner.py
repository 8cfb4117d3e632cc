"""The planner's core: simulate a grid of designs and judge each as the report would.

The command is `python -m mcmcp.plan` (its CLI parses, runs the grid here and prints).

For every cell of a grid (shown trials per chain x chains per emotion) the design of the config
is simulated --seeds times with its synthetic agents (the config's `agent:`, gate and starts, as
`python -m mcmcp.simulate` runs them), --participants participants per study, in parallel
through `mcmcp.sim.sweeps` (Dask). Every participant x emotion and every emotion's group is
judged by the report's own function (`Shared.judge`: `analysis.checks.inference_checks` handed
in by the command, since the simulation wing never imports analysis) against the target
precision: the verdict, the calibrated 95% cone, and for 'needs more' how much more. Besides:
- prototype error: degrees from each participant's prototype to their true prototype (latent
  agents only: the others have no known truth);
- R-hat: the group's split R-hat as the report computes it, a check on mixing, not a criterion;
- minutes: one participant's chain and catch trials of one emotion, fixation plus the agents'
  response times (`agents.RTModel`, median about 1 s). Instructions, practice and breaks come on
  top and people are slower than the agents, so take it as a lower bound.
`summarise` gives per design the share of participants whose verdict is 'precise enough', the
cone 90% of participants reach and the minutes; `recommend` picks, within a budget of minutes
per participant, the design, the emotions per participant and the number of participants.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pandas is imported where it is used: `mcmcp.plan --help` stays light
    import pandas as pd

RHAT_BAD = 1.1  # analysis.diagnostics.RHAT_BAD: above it the report says 'not converged'

BURN_IN = 0.5  # analysis.load.DEFAULT_BURN_IN: the first half of every chain is discarded


class Cell(NamedTuple):
    """One simulated study: shown trials per chain, chains per emotion, replicate seed."""

    trials: int
    chains: int
    seed: int


class Shared(NamedTuple):
    """What every cell needs (sent once to each worker): the study design
    (`mcmcp.sim.study.make_design`), participants per study, true prototypes (emotion -> (d,); None
    when the agent has no known truth), the fixation between trials (s), the target precision
    (degrees) and `judge(states, precision) -> table`: the report's verdicts of a states table
    (`trace_states`), one row per participant x emotion and per emotion's group ('all')."""

    design: object
    participants: int
    truth: dict | None
    fixation: float
    precision: float
    judge: Callable


def trace_states(trace, participants: list[str], emotion: str, chains: int) -> pd.DataFrame:
    """The chains of a trace as the report's states table (`analysis.load.chain_states`'s
    columns): chain i is participant participants[i // chains]'s chain i % chains (session 1).
    A chain of n steps has states 0..n: the start, then the state after each step, which carries
    that step's γ and log g (the start those of the first step)."""
    import pandas as pd

    frames = []
    for i in range(trace.active.shape[1]):
        n = int(trace.active[:, i].sum())
        moved = trace.accepted[:n, i]
        log_g = np.where(moved, trace.log_g_proposal[:n, i], trace.log_g_current[:n, i])
        x = np.concatenate([trace.current[:n, i], trace.final.position[i][None]])
        frame = pd.DataFrame(x, columns=[f"x_{j}" for j in range(x.shape[1])])
        frame.insert(0, "participant", participants[i // chains])
        frame.insert(1, "session", 1)
        frame.insert(2, "chain", i % chains)
        frame.insert(3, "emotion", emotion)
        frame.insert(4, "step", np.arange(n + 1))
        frame.insert(5, "n_steps", n)
        frame["accepted"] = np.concatenate([[False], moved])
        frame["shown"] = np.concatenate([[False], trace.shown[:n, i]])
        frame["log_gate"] = np.concatenate([trace.log_g_current[:1, i], log_g])
        frame["gate_gamma"] = np.concatenate([trace.gate_gamma[:1, i], trace.gate_gamma[:n, i]])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def kept_states(trace, burn_in: float = BURN_IN) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each chain's kept states (k_i, d) and the gate γ each was sampled with (k_i,; 0 without
    a gate): the states `analysis.checks.stationary_states` keeps.

    A chain of n steps has states 0..n (the start, then the state after each step, which carries
    that step's γ); steps above floor(n * burn_in) are kept, and in a chain whose γ changed (an
    annealed gate) only the states after the last one sampled with the gate on.
    """
    states, gammas = [], []
    for i in range(trace.active.shape[1]):
        n = int(trace.active[:, i].sum())
        x = np.concatenate([trace.current[:n, i], trace.final.position[i][None]])
        g = np.nan_to_num(np.concatenate([trace.gate_gamma[:1, i], trace.gate_gamma[:n, i]]))
        first = int(np.floor(n * burn_in)) + 1
        if g.max() > g.min():
            first = max(first, int(np.flatnonzero(g > 0).max()) + 1)
        states.append(x[first:])
        gammas.append(g[first:])
    return states, gammas


def group_rhat(chains: list[np.ndarray]) -> tuple[float, float]:
    """(worst-coordinate split R-hat, smallest bulk ESS) of chains' kept states, each chain cut
    to the shortest's last draws (as `analysis.load.to_draws` does)."""
    import arviz as az

    n = min(len(c) for c in chains)
    draws = np.stack([c[len(c) - n:] for c in chains])
    rhat = max(float(az.rhat(draws[:, :, j])) for j in range(draws.shape[2]))
    ess = min(float(az.ess(draws[:, :, j], method="bulk")) for j in range(draws.shape[2]))
    return rhat, ess


def simulate_cell(cell: Cell, shared: Shared) -> list[dict]:
    """One simulated study of a grid cell: a row per participant x emotion and a row per
    emotion's group (participant 'all'), see the module doc."""
    from mcmcp.sampling.sphere import geodesic
    from mcmcp.sim.chains import simulate_chains
    from mcmcp.sim.layout import n_catch_trials
    from mcmcp.sim.study import joint_gate, simulated_ids, start_points

    design = shared.design
    design.agent.reset()  # a cell's result must not depend on the cells a worker ran before
    cfg, P, C, T = design.cfg, shared.participants, cell.chains, cell.trials
    E = len(cfg.emotions)
    adapt = None if cfg.chains.adapt is None else (cfg.chains.adapt.target,
                                                   cfg.chains.adapt.burn_in)
    # every chain of the study at once: emotion b, participant p, chain c is b*P*C + p*C + c
    rng = np.random.default_rng([cfg.seed, T, C, cell.seed])
    start = np.concatenate([start_points(cfg.chains.start, C, design.d, e, design.centroids, rng)
                            for e in cfg.emotions for _ in range(P)])
    ids = simulated_ids(P)
    identity = None  # each participant's children, as `mcmcp.simulate` gives sim001, ...
    if design.identities is not None:
        from mcmcp.identities import assignment

        kids = [assignment(cfg, pid, design.identities.default) for pid in ids]
        identity = np.array([kids[p].chain(b * C + c) for b in range(E) for p in range(P)
                             for c in range(C)], dtype=object)
    guided = np.tile(np.arange(C) < C - cfg.chains.unguided, E * P)  # control chains: last
    trace = simulate_chains(start, T, cfg.chains.kappa_proposal, design.agent,
                            np.repeat(np.array(cfg.emotions, dtype=object), P * C),
                            joint_gate(design.gates, cfg.emotions, P * C), rng, adapt, identity,
                            guided=guided)
    n_catch = n_catch_trials(cfg.trials.catch_rate, C, T)
    rt = np.nan_to_num(trace.rt).sum(axis=0).reshape(E, P, C).sum(axis=2)  # (E, P) seconds
    minutes = (rt + (C * T + n_catch) * shared.fixation + n_catch * np.nanmean(trace.rt)) / 60
    rows = []
    for b, emotion in enumerate(cfg.emotions):
        block = trace.chains(slice(b * P * C, (b + 1) * P * C))
        chains, _ = kept_states(block)
        rhat, _ = group_rhat(chains)
        judged = shared.judge(trace_states(block, ids, emotion, C), shared.precision)
        truth = None if shared.truth is None else shared.truth[emotion]
        for row in judged.itertuples():
            mean = np.array([getattr(row, f"mean_{j}") for j in range(design.d)])
            person = row.participant != "all"
            rows.append({
                "trials": T, "chains": C, "seed": cell.seed, "emotion": emotion,
                "participant": row.participant, "verdict": row.headline,
                "cone_deg": row.cone95_deg, "cone_units": row.cone_units, "needed": row.needed,
                "error_deg": np.nan if truth is None else float(np.degrees(geodesic(mean,
                                                                                    truth))),
                "rhat": np.nan if person else rhat,
                "minutes": float(minutes[b, ids.index(row.participant)]) if person
                else float(np.median(minutes[b]))})
    design.agent.save_tables()  # the other workers' next cells start from this one's nodes
    return rows


def summarise(results: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Per design (trials, chains): precise (share of participant x emotion verdicts 'precise
    enough'), cone_q (the cone that a share `confidence` of participants reach: that quantile of
    their cones, inf where cones are missing), cone_median, error_deg (median), group_precise
    (share of simulated groups 'precise enough'), group_needed (median participants a group
    needs: the simulated count where precise), rhat (the group's, median), minutes (median per
    participant and emotion) and meets: precise >= confidence."""
    people = results[results["participant"] != "all"]
    groups = results[results["participant"] == "all"]
    cones = people["cone_deg"].fillna(np.inf)
    table = people.assign(cone=cones, precise=people["verdict"].eq("precise enough")).groupby(
        ["trials", "chains"]).agg(
        precise=("precise", "mean"), cone_q=("cone", lambda c: float(np.quantile(c, confidence))),
        cone_median=("cone", "median"), error_deg=("error_deg", "median"),
        minutes=("minutes", "median")).reset_index()
    g = groups.assign(precise=groups["verdict"].eq("precise enough")).groupby(
        ["trials", "chains"]).agg(group_precise=("precise", "mean"),
                                  group_needed=("needed", "median"), rhat=("rhat", "median"))
    table = table.merge(g.reset_index(), on=["trials", "chains"], how="left")
    table["meets"] = table["precise"] >= confidence
    return table


class Recommendation(NamedTuple):
    """trials, chains: the design (None when none fits); emotions: per participant; minutes:
    per participant (all their emotions); participants: per emotion (the group's precision) and
    in all (`total`); words: what to do, or why it cannot be done and what it would take."""

    trials: int | None
    chains: int | None
    emotions: int
    minutes: float
    participants: int
    total: int
    words: str


def recommend(table: pd.DataFrame, n_emotions: int, budget: float | None, simulated: int,
              precision: float, confidence: float) -> Recommendation:
    """The design of `summarise`'s table to run: among the designs whose participants reach
    `precision` in at least `confidence` of cases, the one taking the fewest minutes per
    emotion, with as many emotions per participant as fit in `budget` minutes (None: all of
    them). Participants per emotion: the simulated count when the simulated groups were
    precise in at least `confidence` of studies, else the groups' median 'needed'."""
    ok = table[table["meets"]].sort_values(["minutes", "chains", "trials"])
    if ok.empty:
        best = table.sort_values("cone_q").iloc[0]
        return Recommendation(None, None, 0, np.nan, 0, 0, (
            f"no design in the grid brings {confidence:.0%} of participants within "
            f"{precision:g}°: the closest, {best['trials']} trials x {best['chains']} chains "
            f"({best['minutes']:.0f} min per emotion), brings them within {best['cone_q']:.1f}°;"
            " try longer chains (--trials) or more chains (--chains)"))
    best = ok.iloc[0]
    fits = n_emotions if budget is None else min(n_emotions, int(budget // best["minutes"]))
    if fits < 1:
        within = table[table["minutes"] <= budget].sort_values("cone_q")
        reach = "" if within.empty else (
            f"; within {budget:g} min the best design ({within.iloc[0]['trials']} trials x "
            f"{within.iloc[0]['chains']} chains) brings {confidence:.0%} of participants within "
            f"{within.iloc[0]['cone_q']:.1f}°")
        return Recommendation(None, None, 0, np.nan, 0, 0, (
            f"cannot: one emotion at the cheapest design that reaches {precision:g}° "
            f"({best['trials']} trials x {best['chains']} chains) takes {best['minutes']:.0f} "
            f"min, more than the {budget:g} min budget; it would take {best['minutes']:.0f} "
            f"min per participant{reach}"))
    if best["group_precise"] >= confidence or not np.isfinite(best["group_needed"]):
        people = simulated
    else:
        people = int(max(simulated, best["group_needed"]))
    total = int(np.ceil(n_emotions / fits)) * people
    return Recommendation(int(best["trials"]), int(best["chains"]), fits,
                          float(fits * best["minutes"]), people, total, (
        f"{best['trials']} trials per chain x {best['chains']} chains per emotion, {fits} "
        f"emotion(s) per participant (about {fits * best['minutes']:.0f} min + instructions, "
        f"practice, breaks), {people} participants per emotion, {total} in all: "
        f"{best['precise']:.0%} of simulated participants reached {precision:g}°"))


def figure(table: pd.DataFrame, own: tuple[int, int], precision: float, confidence: float,
           budget: float | None, path: Path) -> None:
    """plan.png: the precision a share `confidence` of participants reach (their cone's
    quantile) and the share reaching the target, against minutes per participant and emotion;
    a line per number of chains (points: trials per chain); the config's design circled, the
    target and the budget drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    panels = (("cone_q", f"95% cone reached by {confidence:.0%} of participants (deg)"),
              ("precise", f"share of participants within {precision:g}°"))
    for ax, (column, label) in zip(axes, panels, strict=True):
        for k, (chains, rows) in enumerate(table.groupby("chains")):
            rows = rows.sort_values("minutes")
            ax.plot(rows["minutes"], rows[column], marker="o", ms=4, color=f"C{k}",
                    label=f"{chains} chains per emotion")
            for r in rows.itertuples():
                ax.annotate(str(r.trials), (r.minutes, getattr(r, column)), fontsize=7,
                            xytext=(3, 3), textcoords="offset points", color=f"C{k}")
        mine = table[(table["trials"] == own[0]) & (table["chains"] == own[1])]
        ax.plot(mine["minutes"], mine[column], "o", ms=13, mfc="none", mec="k",
                label="the config's design")
        if budget is not None:
            ax.axvline(budget, color="r", ls=":", lw=1, label=f"budget ({budget:g} min)")
        ax.set_xlabel("minutes per participant for one emotion (lower bound)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].axhline(precision, color="k", ls="--", lw=1, label=f"target ({precision:g}°)")
    axes[0].set_ylim(0, None)
    axes[1].axhline(confidence, color="k", ls="--", lw=1, label=f"required ({confidence:.0%})")
    axes[1].set_ylim(-0.05, 1.05)
    axes[0].legend(fontsize=8)
    fig.suptitle("Precision against time (numbers: trials per chain; simulated with the "
                 "config's agents, judged by the report's verdicts)", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
