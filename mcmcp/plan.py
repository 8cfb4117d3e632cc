"""CLI: plan a study before running it: how many trials per chain and chains per emotion it needs.

    python -m mcmcp.plan --config experiments/simulate_demo.yaml --participants 4

Simulates the config's design over a grid of shown trials per chain x chains per emotion,
--seeds studies per cell, and recommends the cheapest design that meets the criterion; what is
measured and how is in `mcmcp.sim.planner`, which does the work. Writes OUT/plan.csv and
OUT/plan.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcmcp.sim.planner import BURN_IN, RHAT_BAD, Cell, Shared, figure, simulate_cell, summarise


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

    from mcmcp.config import load_config
    from mcmcp.sim import sweeps
    from mcmcp.sim.study import ground_truth, make_design, open_model_parts
    from mcmcp.specs import ROOT

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
