"""Groups of heterogeneous participants: does the group cone hold the group's mean prototype,
and the between-participant interval the true between-participant concentration?

A study = 20 participants whose true prototypes are drawn from vMF(μ, κ_b), κ_b 10, 30 or 100;
each participant's category is vMF(their prototype, 20) (`mcmcp.sim.quirks.Scattered`), answered
by 4 chains x 100 shown trials (kappa_proposal 5, random Fibonacci starts, no gate). The group
rows are computed as `analysis.checks.inference_checks` computes them: the group cone pools
every kept state with participants as units (`analysis.cones.mean_cone`), the between-participant
concentration comes from the participants' prototypes and their calibrated cones
(`analysis.groups.between_concentration`). 200 studies per κ_b; shares with binomial 95%
intervals. Each chunk of studies is one task of a Dask sweep (`mcmcp.sim.sweeps`).

    python benchmarks/bench_groups.py [--studies 200] [--workers N]
"""

from __future__ import annotations

import argparse
import warnings
from typing import NamedTuple

import numpy as np
from scipy.stats import special_ortho_group, vonmises_fisher
from shares import share

from analysis.cones import inside, mcse_cone, mean_cone
from analysis.groups import between_concentration
from analysis.verdicts import cone_trace
from mcmcp.sampling.sphere import fibonacci_sphere, normalize
from mcmcp.sim import sweeps
from mcmcp.sim.chains import simulate_chains
from mcmcp.sim.quirks import Scattered

MU = normalize(np.array([0.3, -0.5, 0.8]))
C, P, T, KAPPA = 4, 20, 100, 20.0


class Chunk(NamedTuple):
    kappa_between: float
    studies: int
    seed: int


def run(chunk: Chunk, shared=None) -> list[tuple[bool, bool, float, float]]:
    """(group cone holds μ, interval holds κ_b, κ̂_b, group cone) per study of the chunk."""
    rng = np.random.default_rng(chunk.seed)
    n = chunk.studies * P
    means = vonmises_fisher(MU, chunk.kappa_between).rvs(n, random_state=rng)
    starts = np.concatenate([fibonacci_sphere(C) @ special_ortho_group.rvs(3, random_state=rng).T
                             for _ in range(n)])
    keys = np.repeat(np.arange(n), C).astype(str).astype(object)
    trace = simulate_chains(starts, T, 5.0, Scattered(means, KAPPA), "sad", None, rng,
                            identity=keys)
    kept = trace.current[T // 2 + 1:]  # unguided: every chain took T steps
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for s in range(chunk.studies):
            xs, units, protos, errors = [], [], [], []
            for k in range(s * P, (s + 1) * P):
                x = kept[:, k * C:(k + 1) * C].transpose(1, 0, 2).reshape(-1, 3)
                cone = mcse_cone(x, np.repeat(np.arange(C), len(kept)))
                xs.append(x)
                units.append(np.full(len(x), k))
                protos.append(cone.mean)
                errors.append(cone_trace(cone.cone_deg, cone.n_units))
            group = mean_cone(np.concatenate(xs), np.concatenate(units))
            between = between_concentration(np.array(protos), np.array(errors))
            out.append((inside(group, MU),
                        between.low <= chunk.kappa_between <= between.high,
                        between.kappa, group.cone_deg))
    return out



def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--scheduler")
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    per = 25
    chunks = [Chunk(kb, per, 31 * i + int(kb)) for kb in (10.0, 30.0, 100.0)
              for i in range(-(-args.studies // per))]
    results = sweeps.run(run, chunks, None, args.scheduler, args.workers, desc="chunks")
    print(f"{args.studies} studies of {P} participants (4 x {T} trials, category kappa "
          f"{KAPPA:g}) per row\n")
    print("| between-participant κ_b | group cone holds the group mean | median group cone "
          "(deg) | κ_b interval holds κ_b | median κ̂_b |")
    print("|---|---|---|---|---|")
    for kb in (10.0, 30.0, 100.0):
        rows = [r for c, res in zip(chunks, results, strict=True) if c.kappa_between == kb
                for r in res][:args.studies]
        cone_hit, kappa_hit, kappa, cone = zip(*rows, strict=True)
        print(f"| {kb:g} | {share(cone_hit)} | {np.median(cone):.1f} | {share(kappa_hit)} | "
              f"{np.median(kappa):.3g} |")


if __name__ == "__main__":
    main()
