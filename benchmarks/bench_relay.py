"""What a chain shared by people who differ samples (docs/methods.md, "Chains shared by people
who differ").

People's own prototypes scatter around the group mean m: mu_j ~ vMF(m, kappa_between), with
kappa_between 10, 30 and 100 (mean angle from m about 25, 14 and 8 degrees) and inf (everyone
the same); person j's category is vMF(mu_j, kappa_person = 30). 8 chains per emotion pass from
person to person (`mcmcp.sim.relay.simulate_relay`): each round every chain goes to a new
person, who gives it `per_hold` trials (10: the default hold; 1: a new person every trial).
MCMCP with vMF proposals of kappa 5 (the default, mean step ~30 degrees) and of kappa 50 (small
steps, ~10 degrees), lapse 0.05 (--lapse), 3000 trials per chain, the second half kept.

Reported per design, as the mean (sd) over seeds: the angle between the chains' mean
direction and the group mean of the prototypes of the people who held them (degrees); the
concentration fitted to the chains' states, against one person's (30), the population's
average category's (a random person's category, pooled: "mixture") and the product of the
people's categories ("consensus": kappa_person times the mean resultant length of the
prototypes).

    python benchmarks/bench_relay.py [--seeds N] [--trials T] [--lapse L]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mcmcp.sampling.sphere import fibonacci_sphere
from mcmcp.sim.relay import individual_prototypes, simulate_relay, summarise_relay

M = np.array([0.0, 0.0, 1.0])
KAPPA_PERSON, CHAINS = 30.0, 8


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=3000, help="trials per chain")
    p.add_argument("--lapse", type=float, default=0.05, help="people's lapse rate")
    args = p.parse_args(argv)
    print("| kappa_between | per_hold | kappa_proposal | prototype error (deg) | chain kappa | "
          "mixture kappa | consensus kappa | person kappa |")
    print("|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for kappa_between in (10.0, 30.0, 100.0, np.inf):
        for kappa_proposal in (5.0, 50.0):
            for per_hold in (10, 1):
                runs = []
                for seed in range(args.seeds):
                    rng = np.random.default_rng([seed, int(min(kappa_between, 1e6)), per_hold,
                                                 int(kappa_proposal)])
                    rounds = args.trials // per_hold
                    holders = individual_prototypes(M, kappa_between, rounds * CHAINS, rng)
                    relay = simulate_relay(fibonacci_sphere(CHAINS, 3),
                                           holders.reshape(rounds, CHAINS, 3), per_hold,
                                           KAPPA_PERSON, rng, kappa_proposal=kappa_proposal,
                                           lapse=args.lapse)
                    runs.append(summarise_relay(relay, KAPPA_PERSON, rng))
                a = np.array(runs)
                cells = [f"{a[:, k].mean():.1f} ({a[:, k].std(ddof=1):.1f})" for k in range(4)]
                print(f"| {kappa_between:g} | {per_hold} | {kappa_proposal:g} | {cells[0]} | "
                      f"{cells[1]} | {cells[3]} | {a[:, 4].mean():.1f} | {cells[2]} |",
                      flush=True)
    print(f"\n{args.seeds} seeds per design, {args.trials} trials per chain, {CHAINS} chains, "
          f"lapse {args.lapse}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
