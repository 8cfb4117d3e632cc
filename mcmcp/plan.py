"""Plan a study before running it: how many trials per chain and chains per emotion it needs.

    python -m mcmcp.plan --config experiments/simulate_demo.yaml --participants 4

For every cell of a grid (shown trials per chain x chains per emotion) the design of the config
is simulated --seeds times with its synthetic agents (the config's `agent:`, gate and starts, as
`python -m mcmcp.simulate` runs them), in parallel through `mcmcp.sweeps` (Dask), and each cell
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

import argparse
import sys
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
    (`simulate.make_design`), participants per study, true prototypes (emotion -> (d,); None
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
    from mcmcp.layout import n_catch_trials
    from mcmcp.simulate import joint_gate, simulate_chains, simulated_ids, start_points
    from mcmcp.sphere import geodesic

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mcmcp.plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML whose design is planned")
    p.add_argument("--participants", type=int, default=1,
                   help="participants per simulated study; the group R-hat pools their chains "
                        "(default: 1)")
    p.add_argument("--trials", type=int, nargs="+", default=[100, 150, 200, 250, 300, 400, 500],
                   help="shown trials per chain to try; the config's own is added "
                        "(default: 100 150 200 250 300 400 500)")
    p.add_argument("--chains", type=int, nargs="+", default=[2, 4, 6, 8],
                   help="chains per emotion to try; the config's own is added (default: 2 4 6 8)")
    p.add_argument("--seeds", type=int, default=10,
                   help="simulated studies per cell (default: 10)")
    p.add_argument("--rhat", type=float, default=RHAT_BAD,
                   help=f"convergence criterion: every emotion's group R-hat below this "
                        f"(default: {RHAT_BAD}, the report's 'not converged' line)")
    p.add_argument("--confidence", type=float, default=0.9,
                   help="share of simulated studies that must meet the criterion (default: 0.9)")
    p.add_argument("--truth", default="data",
                   help="the latent agent's categories, as in mcmcp.simulate: data, manual or a "
                        "JSON file (default: data)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. "
                                       "tcp://10.0.0.5:8786 (default: a local cluster)")
    p.add_argument("--workers", type=int,
                   help="local worker processes, 0 = serial in this process (default: one per "
                        "core)")
    p.add_argument("--out", help="folder for plan.csv and plan.png (default: "
                                 "reports/plan/<config name>)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if min(args.trials) < 1 or min(args.chains) < 2 or args.participants < 1 or args.seeds < 1:
        parser.error("--trials >= 1, --chains >= 2 (R-hat compares chains), --participants >= 1 "
                     "and --seeds >= 1")
    if not 0 < args.confidence <= 1 or not args.rhat > 1:
        parser.error("--confidence must be in (0, 1] and --rhat above 1")
    # Parsed: now the heavy imports (the model's torch among them).
    import pandas as pd

    from mcmcp import sweeps
    from mcmcp.config import ROOT, load_config
    from mcmcp.simulate import ground_truth, make_design, open_model_parts

    try:
        cfg = load_config(args.config, require_checkpoint=False)
        model = open_model_parts(cfg, args.config, args.truth)
        truth = ground_truth(args.truth, cfg, model)
        design = make_design(cfg, Path("."), truth, model, None, args.config)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    own = (cfg.trials.per_chain, cfg.chains.per_emotion)
    trials = sorted({*args.trials, own[0]})
    chains = sorted({*args.chains, own[1]})
    modes = None if truth is None else {e: dens.mode() for e, dens in truth.densities.items()}
    shared = Shared(design, args.participants, modes, cfg.display.fixation)
    cells = [Cell(t, c, s) for t in trials for c in chains for s in range(args.seeds)]
    print(f"planning {cfg.name}: {len(trials)} x {len(chains)} designs x {args.seeds} simulated "
          f"studies of {args.participants} participant(s), {len(cfg.emotions)} emotion(s), agent "
          f"{design.agent.name!r}, gate {cfg.gate.kind!r}", flush=True)
    rows = sweeps.run(simulate_cell, cells, shared, args.scheduler, args.workers, desc="studies")
    results = pd.DataFrame([r for study in rows for r in study])
    table = summarise(results, args.rhat, args.confidence, len(cfg.emotions))
    out = Path(args.out) if args.out else ROOT / "reports" / "plan" / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "plan.csv", index=False)
    figure(table, own, args.rhat, args.confidence, out / "plan.png")
    _print(table, own, args, len(cfg.emotions))
    print(f"\nwritten: {out / 'plan.csv'}, {out / 'plan.png'}")
    return 0


def _print(table, own, args, n_emotions: int) -> None:
    print(f"\n{'trials/chain':>12} {'chains':>6} {'shown/person':>12} {'R-hat':>6} "
          f"{'converged':>9} {'error deg':>9} {'group deg':>9} {'minutes':>7}")
    for r in table.itertuples():
        mark = " <- the config's design" if (r.trials, r.chains) == own else ""
        print(f"{r.trials:>12} {r.chains:>6} {r.shown:>12} {r.rhat:>6.3f} {r.converged:>9.0%} "
              f"{r.error_deg:>9.1f} {r.group_error_deg:>9.1f} {r.minutes:>7.1f}{mark}")
    ok = table[table["meets"]].sort_values(["shown", "chains", "trials"])
    mine = table[(table["trials"] == own[0]) & (table["chains"] == own[1])].iloc[0]
    verdict = "meets" if mine["meets"] else "does NOT meet"
    print(f"\ncriterion: every emotion's group R-hat < {args.rhat} ({args.participants} "
          f"participant(s) pooled, burn-in {BURN_IN:.0%}) in at least {args.confidence:.0%} of "
          f"{args.seeds} simulated studies")
    print(f"the config's design ({own[0]} trials x {own[1]} chains, {own[0] * own[1] * n_emotions}"
          f" shown trials per participant) {verdict} it: {mine['converged']:.0%} of studies")
    if ok.empty:
        print("no design in the grid meets it: try more trials per chain or more chains")
    else:
        best = ok.iloc[0]
        print(f"cheapest design that meets it: {best['trials']} trials per chain x "
              f"{best['chains']} chains per emotion = {best['shown']} shown trials per "
              f"participant, about {best['minutes']:.0f} min (+ instructions, practice, breaks)")


if __name__ == "__main__":
    sys.exit(main())
