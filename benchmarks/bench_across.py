"""Within- or across-participant chains for the same participant time (docs/simulate.md,
"Within or across participants"; docs/methods.md, "Chains shared by people who differ").

Every person gives 60 trials of an emotion: the share of one emotion in a 20-minute session of
seven emotions (experiments/shared_demo.yaml: 420 choices, six holds of 10 trials per emotion).
People differ: prototypes mu_j ~ vMF(m, kappa_between 30) (mean angle from m ~14 degrees),
categories vMF(mu_j, 30), lapse 0.05, MCMCP with the default proposal (kappa 5).
Designs (`mcmcp.sim.across.group_error`): within, each person's own 1, 2 or 4 chains (60, 30 or
15 trials each); across, 8 shared chains per emotion, holds of 10 trials.

Reported per number of people: the median error of the group prototype (degrees from m) over
--seeds simulated studies, and the share of studies within 5 degrees; then the fewest people
whose studies are within 5 (and 3) degrees in 80% of the seeds (`people_needed`).

    python benchmarks/bench_across.py [--seeds N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mcmcp.sim.across import group_error, people_needed

M = np.array([0.0, 0.0, 1.0])
TRIALS, KAPPA_BETWEEN, KAPPA_PERSON = 60, 30.0, 30.0
PEOPLE = (10, 20, 40, 80, 160)
DESIGNS = (("within", 1), ("within", 2), ("within", 4), ("across", 8))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=20)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    errors = {}
    for design, chains in DESIGNS:
        errors[design, chains] = {
            n: [group_error(design, n, TRIALS, chains, M, KAPPA_BETWEEN, KAPPA_PERSON,
                            np.random.default_rng([seed, n, chains, design == "across"]))
                for seed in range(args.seeds)] for n in PEOPLE}
    head = " | ".join(f"{n} people" for n in PEOPLE)
    print(f"| design | {head} | people for 5 deg | people for 3 deg |")
    print("|---|" + "---|" * (len(PEOPLE) + 2))
    for (design, chains), by_n in errors.items():
        cells = " | ".join(f"{np.median(e):.1f} ({np.mean(np.asarray(e) <= 5):.0%})"
                           for e in by_n.values())
        need = [people_needed(by_n, t) for t in (5.0, 3.0)]
        label = (f"within, {chains} chain(s) x {TRIALS // chains}" if design == "within"
                 else f"across, {chains} shared chains, holds of 10")
        print(f"| {label} | {cells} | {need[0] or '> 160'} | {need[1] or '> 160'} |")
    print(f"\nmedian error in degrees (share of studies within 5 degrees); {args.seeds} studies "
          f"per cell; {TRIALS} trials per person; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
