"""The planner's core: simulate a grid of designs and judge each as the report would.

The command is `python -m mcmcp.plan` (its CLI parses, runs the grid here and prints).

For every cell of a grid (shown trials per chain x chains per emotion) the design of the config
is simulated --seeds times with its synthetic agents (the config's `agent:`, gate and starts, as
`python -m mcmcp.simulate` runs them), in parallel through `mcmcp.sim.sweeps` (Dask), and each cell
gets:
- R-hat: the group's split R-hat, as `analysis.report` computes it (ArviZ, rank-normalised, worst
  coordinate, the kept states of every chain of an emotion: after the burn-in, and with an
  annealed gate after the gate was off), for the worst emotion,
  median over the simulated studies; and the share of studies in which every emotion's R-hat is
  below --rhat (the design's convergence criterion; 1.1 is the report's 'not converged' line);
- prototype error: degrees from each participant's prototype (mean direction of their kept
  states, de-guided with PSIS weights when there is a gate) to their true prototype, median over
  participants, emotions and studies, and the same for the group prototype (latent agents only:
  the others have no known truth);
- minutes: one participant's chain and catch trials, fixation plus the agents' response times
  (`agents.RTModel`, median about 1 s). Instructions, practice and breaks come on top and people
  are slower than the agents, so take it as a lower bound.
The cheapest design (fewest shown trials per participant) whose studies meet the criterion in at
least --confidence of the seeds is recommended. Writes OUT/plan.csv (every simulated study and
emotion) and OUT/plan.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

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
    when the agent has no known truth), the fixation between trials (s)."""

    design: object
    participants: int
    truth: dict | None
    fixation: float


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


def prototype(x: np.ndarray, log_g: np.ndarray | None,
              gamma: float | np.ndarray | None) -> np.ndarray:
    """Mean direction (d,) of states x (n, d); with a gate, de-guided by PSIS-smoothed weights
    g(x)^-gamma (the report's 'de-guided (PSIS)' estimate). gamma: scalar or (n,) (the γ each
    state was sampled with; states with γ 0 sampled the category itself)."""
    if log_g is None or not np.any(gamma):
        w = np.ones(len(x))
    else:
        import arviz as az

        smoothed, _ = az.psislw(-gamma * log_g)
        w = np.exp(smoothed - smoothed.max())
    resultant = w @ x
    return resultant / np.linalg.norm(resultant)


def simulate_cell(cell: Cell, shared: Shared) -> list[dict]:
    """One simulated study of a grid cell: a row per emotion (see the module doc)."""
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
    identity = None  # each participant's children, as `mcmcp.simulate` gives sim001, ...
    if design.identities is not None:
        from mcmcp.identities import assignment

        kids = [assignment(cfg, pid, design.identities.default) for pid in simulated_ids(P)]
        identity = np.array([kids[p].chain(b * C + c) for b in range(E) for p in range(P)
                             for c in range(C)], dtype=object)
    guided = np.tile(np.arange(C) < C - cfg.chains.unguided, E * P)  # control chains: last
    trace = simulate_chains(start, T, cfg.chains.kappa_proposal, design.agent,
                            np.repeat(np.array(cfg.emotions, dtype=object), P * C),
                            joint_gate(design.gates, cfg.emotions, P * C), rng, adapt, identity,
                            guided=guided)
    n_catch = n_catch_trials(cfg.trials.catch_rate, C, T)
    rt = np.nan_to_num(trace.rt).sum(axis=0).reshape(E, P, C).sum(axis=(0, 2))
    seconds = rt + E * ((C * T + n_catch) * shared.fixation + n_catch * np.nanmean(trace.rt))
    rows = []
    for b, emotion in enumerate(cfg.emotions):
        chains, gammas = kept_states(trace.chains(slice(b * P * C, (b + 1) * P * C)))
        rhat, ess = group_rhat(chains)
        row = {"trials": T, "chains": C, "seed": cell.seed, "emotion": emotion, "rhat": rhat,
               "ess_bulk": ess, "error_deg": np.nan, "group_error_deg": np.nan,
               "minutes": float(np.median(seconds)) / 60.0}
        if shared.truth is not None:
            gate = design.gates[emotion]

            def estimate(which, gate=gate, chains=chains, gammas=gammas):
                x, g = np.concatenate(chains[which]), np.concatenate(gammas[which])
                return prototype(x, None if gate is None else gate.density.logpdf(x), g)

            truth = shared.truth[emotion]
            own = [estimate(slice(p * C, (p + 1) * C)) for p in range(P)]
            row["error_deg"] = float(np.median(np.degrees(geodesic(np.array(own), truth))))
            row["group_error_deg"] = float(np.degrees(geodesic(estimate(slice(None)), truth)))
        rows.append(row)
    return rows


def summarise(results, rhat: float, confidence: float, n_emotions: int):
    """Per cell (trials, chains): shown trials per participant, median worst-emotion R-hat, the
    share of studies with every emotion below `rhat`, median errors and minutes, and `meets`."""

    studies = results.groupby(["trials", "chains", "seed"]).agg(
        worst_rhat=("rhat", "max"), error_deg=("error_deg", "median"),
        group_error_deg=("group_error_deg", "median"), minutes=("minutes", "first"))
    studies["converged"] = studies["worst_rhat"] < rhat
    table = studies.groupby(["trials", "chains"]).agg(
        rhat=("worst_rhat", "median"), converged=("converged", "mean"),
        error_deg=("error_deg", "median"), group_error_deg=("group_error_deg", "median"),
        minutes=("minutes", "median")).reset_index()
    table.insert(2, "shown", table["trials"] * table["chains"] * n_emotions)
    table["meets"] = table["converged"] >= confidence
    return table


def figure(table, own: tuple[int, int], rhat: float, confidence: float, path: Path) -> None:
    """plan.png: share converged, prototype error and minutes against trials per chain, a line
    per number of chains; the config's own design circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    panels = (("converged", f"share of studies with every R-hat < {rhat}"),
              ("error_deg", "participant's prototype error (deg)"),
              ("minutes", "minutes per participant (lower bound)"))
    for ax, (column, label) in zip(axes, panels, strict=True):
        for k, (chains, rows) in enumerate(table.groupby("chains")):
            ax.plot(rows["trials"], rows[column], marker="o", ms=4, color=f"C{k}",
                    label=f"{chains} chains per emotion")
        mine = table[(table["trials"] == own[0]) & (table["chains"] == own[1])]
        ax.plot(mine["trials"], mine[column], "o", ms=13, mfc="none", mec="k",
                label="the config's design")
        ax.set_xlabel("shown trials per chain")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].axhline(confidence, color="k", ls="--", lw=1, label=f"required share ({confidence:.0%})")
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].legend(fontsize=8)
    fig.suptitle("Planning the study: how many trials per chain and chains per emotion "
                 "(simulated with the config's agents)", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
