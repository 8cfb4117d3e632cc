"""CLI: plan a study before running it: trials per chain, chains, emotions per participant and
participants, so that the prototypes reach the stated precision within a time budget.

    python -m mcmcp.plan --config experiments/happy.yaml --precision 5 --minutes 30

Simulates the config's design over a grid of shown trials per chain x chains per emotion,
--seeds studies of --participants participants per cell, judges every participant x emotion
and every group with the report's verdicts (`analysis.checks.inference_checks` against
--precision) and recommends the quickest design that brings --confidence of participants within
the precision, with as many emotions per participant as fit in --minutes; then simulates the
recommended design again with new seeds to check it. What is measured and how is in
`mcmcp.sim.planner`. Writes OUT/plan.csv (every simulated participant x emotion and group) and
OUT/plan.png (precision against minutes).

    python -m mcmcp.plan --config experiments/shared_demo.yaml --across --minutes 20 --precision 5

--across answers "how many participants of M minutes for a group prototype of each emotion
within the precision", within against across-participant chains for the same participant
time: each person gives every emotion its share of the --minutes (at --seconds-per-trial,
rounded down to whole holds of the config's trials.per_hold); people whose prototypes scatter
around the group mean (--spread, default 30) with categories of --kappa-person; --seeds
simulated studies per design and number of people (`mcmcp.sim.across.compare`); a design
needs the fewest people whose studies are within the precision in --confidence of the seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcmcp.sim.planner import Cell, Shared, figure, recommend, simulate_cell, summarise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mcmcp.plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML whose design is planned")
    p.add_argument("--participants", type=int, default=10,
                   help="participants per simulated study (default: 10)")
    p.add_argument("--trials", type=int, nargs="+", default=[50, 100, 150, 200, 300, 400],
                   help="shown trials per chain to try; the config's own is added "
                        "(default: 50 100 150 200 300 400)")
    p.add_argument("--chains", type=int, nargs="+", default=[2, 4, 6],
                   help="chains per emotion to try; the config's own is added (default: 2 4 6)")
    p.add_argument("--seeds", type=int, default=3,
                   help="simulated studies per cell (default: 3)")
    p.add_argument("--precision", type=float,
                   help="target precision, degrees: a prototype's 95%% cone must be within it "
                        "(default: the config's analysis.precision)")
    p.add_argument("--minutes", type=float,
                   help="time budget per participant in minutes, chain and catch trials only "
                        "(default: none: every emotion of the config per participant)")
    p.add_argument("--spread", type=float,
                   help="between-participant concentration of the prototypes to plan the group "
                        "for, e.g. 30 (prototypes some 10 degrees apart; analysis.groups); "
                        "default: none, the simulated participants share one category and the "
                        "group's needs reflect only their Monte Carlo error")
    p.add_argument("--confidence", type=float, default=0.9,
                   help="share of participants that must reach the precision (default: 0.9)")
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
    across = p.add_argument_group("within against across-participant chains (--across)")
    across.add_argument("--across", action="store_true",
                        help="compare within- and across-participant designs for participants "
                             "of --minutes (the config's chains.per_emotion and "
                             "trials.per_hold are the shared design; default: off)")
    across.add_argument("--seconds-per-trial", type=float, default=2.5,
                        help="a choice's seconds, to turn --minutes into trials (default 2.5)")
    across.add_argument("--kappa-person", type=float, default=30.0,
                        help="concentration of each person's category (default 30)")
    across.add_argument("--people", type=int, nargs="+", default=[10, 20, 40, 80, 160],
                        help="numbers of participants to simulate (default 10 20 40 80 160)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if min(args.trials) < 1 or min(args.chains) < 2 or args.participants < 1 or args.seeds < 1:
        parser.error("--trials >= 1, --chains >= 2 (the cones compare chains), --participants "
                     ">= 1 and --seeds >= 1")
    if not 0 < args.confidence <= 1:
        parser.error("--confidence must be in (0, 1]")
    if args.precision is not None and not 0 < args.precision < 180:
        parser.error("--precision: give degrees in (0, 180)")
    if args.minutes is not None and not args.minutes > 0:
        parser.error("--minutes must be above 0")
    if args.spread is not None and not args.spread > 0:
        parser.error("--spread must be above 0 (a concentration)")
    if args.across and args.minutes is None:
        parser.error("--across needs --minutes: each participant's time")
    if args.across and (min(args.people) < 1 or not args.seconds_per_trial > 0
                        or not args.kappa_person > 0):
        parser.error("--people >= 1, --seconds-per-trial and --kappa-person above 0")
    # Parsed: now the heavy imports (the model's torch among them).
    import pandas as pd

    from analysis.checks import judge_states
    from mcmcp.agents import TABLE_CACHE
    from mcmcp.config import load_config
    from mcmcp.sim import sweeps
    from mcmcp.sim.study import ground_truth, make_design, open_model_parts
    from mcmcp.specs import ROOT

    try:
        cfg = load_config(args.config, require_checkpoint=False)
        model = open_model_parts(cfg, args.config, args.truth)
        truth = ground_truth(args.truth, cfg, model)
        design = make_design(cfg, Path("."), truth, model, None, args.config, TABLE_CACHE)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    precision = cfg.analysis.precision if args.precision is None else args.precision
    if args.across:
        return _across(args, cfg, design.d, precision)
    own = (cfg.trials.per_chain, cfg.chains.per_emotion)
    trials = sorted({*args.trials, own[0]})
    chains = sorted({*args.chains, own[1]})
    modes = None if truth is None else {e: dens.mode() for e, dens in truth.densities.items()}
    shared = Shared(design, args.participants, modes, cfg.display.fixation, precision,
                    judge_states)
    cells = [Cell(t, c, s) for t in trials for c in chains for s in range(args.seeds)]
    print(f"planning {cfg.name}: {len(trials)} x {len(chains)} designs x {args.seeds} simulated "
          f"studies of {args.participants} participant(s), {len(cfg.emotions)} emotion(s), agent "
          f"{design.agent.name!r}, gate {cfg.gate.kind!r}; target {precision:g}° for "
          f"{args.confidence:.0%} of participants"
          + (f" within {args.minutes:g} min" if args.minutes else ""), flush=True)
    rows = sweeps.run(simulate_cell, cells, shared, args.scheduler, args.workers, desc="studies")
    results = pd.DataFrame([r for study in rows for r in study])
    table = summarise(results, args.confidence)
    best = recommend(table, len(cfg.emotions), args.minutes, args.participants, precision,
                     args.confidence)
    if args.spread is not None and best.trials is not None:
        best = _spread(best, results, args.spread, precision, len(cfg.emotions), design.d)
    out = Path(args.out) if args.out else ROOT / "reports" / "plan" / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    _print(table, own, len(cfg.emotions), precision, args.confidence)
    print(f"\nrecommended: {best.words}")
    if best.trials is not None:  # the recommendation simulated again with new seeds
        again = [Cell(best.trials, best.chains, 1000 + s) for s in range(args.seeds)]
        check = pd.DataFrame([r for study in sweeps.run(
            simulate_cell, again, shared, args.scheduler, args.workers, desc="check")
            for r in study]).assign(check=True)
        mine = check[check["participant"] != "all"]
        share = mine["verdict"].eq("precise enough").mean()
        print(f"checked with new seeds: {share:.0%} of {len(mine)} participant x emotion "
              f"verdicts 'precise enough' ({'meets' if share >= args.confidence else 'MISSES'} "
              f"{args.confidence:.0%}), {best.emotions} emotion(s) in about "
              f"{best.emotions * mine['minutes'].median():.0f} min"
              + (f" ({'within' if best.emotions * mine['minutes'].median() <= args.minutes else 'OVER'}"
                 f" the {args.minutes:g} min budget)" if args.minutes else ""))
        results = pd.concat([results.assign(check=False), check], ignore_index=True)
    results.to_csv(out / "plan.csv", index=False)
    figure(table, own, precision, args.confidence, args.minutes, out / "plan.png")
    print(f"\nwritten: {out / 'plan.csv'}, {out / 'plan.png'}")
    return 0


def _across(args, cfg, d: int, precision: float) -> int:
    """--across: the within and across designs for participants of --minutes (see the module
    docstring); prints the table and the answer."""
    import numpy as np

    from mcmcp.sim.across import compare

    per_hold = cfg.trials.per_hold or 10
    shared = cfg.chains.per_emotion
    emotions = len(cfg.emotions)
    per_emotion = int(args.minutes * 60 / args.seconds_per_trial / emotions) // per_hold
    trials = per_emotion * per_hold
    if trials < per_hold:
        print(f"error: {args.minutes:g} min at {args.seconds_per_trial:g} s a choice is fewer "
              f"than one hold of {per_hold} trials for each of {emotions} emotions; give more "
              "--minutes or fewer emotions", file=sys.stderr)
        return 1
    spread = 30.0 if args.spread is None else args.spread
    print(f"planning {cfg.name} within against across: {emotions} emotion(s), participants of "
          f"{args.minutes:g} min = {trials} trials per emotion each; people scatter with "
          f"concentration {spread:g} around the group's prototype, categories kappa "
          f"{args.kappa_person:g}; target {precision:g}° in {args.confidence:.0%} of "
          f"{args.seeds} simulated studies per cell", flush=True)
    rows = compare(trials, shared, per_hold, d, spread, args.kappa_person, sorted(args.people),
                   args.seeds, precision, args.confidence)
    people = sorted(args.people)
    print("\n| design | " + " | ".join(f"{n} people" for n in people)
          + f" | people for {precision:g}° | participant-minutes |")
    print("|---|" + "---|" * (len(people) + 2))
    for r in rows:
        need = r["people_needed"]
        cells = " | ".join(f"{np.median(r['errors'][n]):.1f} "
                           f"({np.mean(np.asarray(r['errors'][n]) <= precision):.0%})"
                           for n in people)
        print(f"| {r['label']} | {cells} | {need or f'> {people[-1]}'} | "
              f"{f'{need * args.minutes:g}' if need else '-'} |")
    print(f"\ncells: the group prototype's median error in degrees over the studies (share "
          f"within {precision:g}°)")
    across = rows[-1]
    within = [r for r in rows[:-1] if r["people_needed"]]
    best = min(within, key=lambda r: r["people_needed"]) if within else None
    answer = (f"{across['people_needed']} participants of {args.minutes:g} min "
              f"({across['people_needed'] * args.minutes:g} participant-minutes)"
              if across["people_needed"] else f"more than {people[-1]} participants")
    print(f"\nacross ({across['label']}): {answer} give a group prototype of each of the "
          f"{emotions} emotion(s) within {precision:g}° in {args.confidence:.0%} of studies")
    if best is not None:
        print(f"best within ({best['label']}): {best['people_needed']} participants "
              f"({best['people_needed'] * args.minutes:g} participant-minutes)")
    else:
        print(f"no within design reaches {precision:g}° with {people[-1]} participants")
    return 0


def _spread(best, results, kappa_between: float, precision: float, n_emotions: int, d: int):
    """The recommendation with the participants per emotion a group of that spread needs
    (`analysis.groups.participants_for`, each prototype carrying the Monte Carlo variance the
    recommended design's simulated participants had: their median)."""
    import numpy as np

    from analysis.groups import participants_for
    from analysis.verdicts import cone_trace

    mine = results[(results["trials"] == best.trials) & (results["chains"] == best.chains)
                   & (results["participant"] != "all")]
    within = float(np.nanmedian([cone_trace(c, u, d - 1) / (d - 1) for c, u in
                                 zip(mine["cone_deg"], mine["cone_units"], strict=True)]))
    people = participants_for(kappa_between, within, precision, d)
    total = int(np.ceil(n_emotions / best.emotions)) * people
    share = mine["verdict"].eq("precise enough").mean()
    return best._replace(participants=people, total=total, words=(
        f"{best.trials} trials per chain x {best.chains} chains per emotion, {best.emotions} "
        f"emotion(s) per participant (about {best.minutes:.0f} min + instructions, practice, "
        f"breaks), {people} participants per emotion (a group whose prototypes scatter with "
        f"concentration {kappa_between:g} has its cone's median within {precision:g}°), "
        f"{total} in all: {share:.0%} of simulated participants reached {precision:g}°"))


def _print(table, own, n_emotions: int, precision: float, confidence: float) -> None:
    print(f"\n{'trials/chain':>12} {'chains':>6} {'minutes':>7} {'precise':>7} "
          f"{f'cone {confidence:.0%}':>8} {'cone med':>8} {'error deg':>9} {'group':>6} "
          f"{'R-hat':>6}")
    for r in table.itertuples():
        mark = " <- the config's design" if (r.trials, r.chains) == own else ""
        print(f"{r.trials:>12} {r.chains:>6} {r.minutes:>7.1f} {r.precise:>7.0%} "
              f"{r.cone_q:>8.1f} {r.cone_median:>8.1f} {r.error_deg:>9.1f} "
              f"{r.group_precise:>6.0%} {r.rhat:>6.2f}{mark}")
    mine = table[(table["trials"] == own[0]) & (table["chains"] == own[1])].iloc[0]
    print(f"\nminutes: per participant and emotion, chain and catch trials (a lower bound); "
          f"precise: share of participants whose verdict is 'precise enough' (95% cone within "
          f"{precision:g}°); cone {confidence:.0%}: the cone that share of participants reach; "
          f"group: share of simulated groups precise; R-hat: the group's, a check, not the "
          f"criterion")
    print(f"the config's design ({own[0]} trials x {own[1]} chains, "
          f"{own[0] * own[1] * n_emotions} shown trials per participant): "
          f"{mine['precise']:.0%} of participants within {precision:g}°")


if __name__ == "__main__":
    sys.exit(main())
