"""Do the report's 95% cones hold the truth 95% of the time at the designs labs run?

One participant = 4 chains (kappa_proposal 5, Fibonacci starts turned by a random rotation per
participant) answering a category vMF(m, kappa) with Luce exponent g (the chains sample p^g, whose
mean direction is m: the truth), for kappa 5, 20, 200, g 0.5, 1, 3, without a gate and with the
default gate (vMF, kappa_g 10, centred 20° from the truth, gamma 0.5 annealed to 0 over the first
40% of each chain's shown trials), at 4 x 100 and 4 x 250 shown trials. The kept states are the
report's (`analysis.checks.stationary_states`: after the first half of each chain's steps and,
annealed, after the gate was off). Per cell, the share of participants whose cone holds the truth,
with a binomial 95% interval (Clopper-Pearson), for the report's cone
(`analysis.cones.mcse_cone`) and the previous one (batch means, 5 per chain,
`analysis.cones.mean_cone`), and the median cone and error in degrees.

Each cell is one task of a Dask sweep (`mcmcp.sim.sweeps`) simulating all its participants at once
(`mcmcp.sim.chains.simulate_chains`, vectorised over participants); a task carries its own seed, so
the table equals a serial run's. About 2 minutes on 2 cores at 400 participants per cell.

    python benchmarks/bench_coverage.py [--participants 400] [--workers N] [--scheduler ADDRESS]
"""

from __future__ import annotations

import argparse
import warnings
from typing import NamedTuple

import numpy as np
from scipy.stats import binomtest, special_ortho_group
from shares import share

from analysis.cones import batch_units, inside, mcse_cone, mean_cone
from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate
from mcmcp.sampling.sphere import fibonacci_sphere, geodesic, normalize, rotate_towards
from mcmcp.sim import sweeps
from mcmcp.sim.chains import simulate_chains

M = normalize(np.array([0.3, -0.5, 0.8]))
N_CHAINS, KAPPA_PROPOSAL = 4, 5.0
KAPPAS, EXPONENTS, LENGTHS = (5.0, 20.0, 200.0), (0.5, 1.0, 3.0), (100, 250)


class Cell(NamedTuple):
    n_shown: int
    kappa: float
    exponent: float
    gated: bool
    participants: int
    seed: int


def default_gate() -> Gate:
    """The default design's gate: vMF(kappa 10) 20° from the truth, gamma 0.5 annealed over 40%."""
    centre = rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.radians(20.0))
    return Gate(VMFMixture.single(centre, 10.0), 0.5, 0.4)


def kept_states(trace, i: int, n_shown: int) -> np.ndarray:
    """The states of chain i the report keeps (k, d), in step order."""
    n_seen = np.cumsum(trace.shown[:, i] & trace.active[:, i])
    length = int(np.argmax(n_seen >= n_shown)) + 1  # the steps chain i took
    states = np.concatenate([trace.current[:length, i], trace.final.position[i][None]])
    gamma = np.nan_to_num(np.concatenate([trace.gate_gamma[:1, i], trace.gate_gamma[:length, i]]))
    first = length // 2 + 1
    if gamma.max() > gamma.min():  # annealed: only the states sampled with the gate off
        first = max(first, int(np.flatnonzero(gamma > 0).max()) + 1)
    return states[first:]


def run_cell(cell: Cell, shared=None) -> dict:
    """Hits of both cones, cone widths and errors (degrees) of the cell's participants."""
    rng = np.random.default_rng(cell.seed)
    starts = np.concatenate([fibonacci_sphere(N_CHAINS)
                             @ special_ortho_group.rvs(3, random_state=rng).T
                             for _ in range(cell.participants)])
    agent = LatentAgent({"sad": VMFMixture.single(M, cell.kappa)}, exponent=cell.exponent)
    trace = simulate_chains(starts, cell.n_shown, KAPPA_PROPOSAL, agent, "sad",
                            default_gate() if cell.gated else None, rng)
    out = {"hit": [], "old_hit": [], "cone": [], "error": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for r in range(cell.participants):
            parts = [kept_states(trace, r * N_CHAINS + c, cell.n_shown) for c in range(N_CHAINS)]
            x = np.concatenate(parts)
            chain = np.repeat(np.arange(N_CHAINS), [len(p) for p in parts])
            cone = mcse_cone(x, chain)
            out["hit"].append(inside(cone, M))
            out["old_hit"].append(inside(mean_cone(x, batch_units(chain)), M))
            out["cone"].append(cone.cone_deg)
            out["error"].append(float(np.degrees(geodesic(cone.mean, M))))
    return out



def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=400,
                        help="simulated participants per cell (default: 400)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a "
                                            "local cluster)")
    parser.add_argument("--workers", type=int, help="local worker processes, 0 = serial "
                                                    "(default: one per core)")
    args = parser.parse_args(argv)
    cells = [Cell(n, k, g, gated, args.participants, 1000 * i + 7)
             for i, (n, k, g, gated) in enumerate(
                 (n, k, g, gated) for n in LENGTHS for k in KAPPAS for g in EXPONENTS
                 for gated in (False, True))]
    results = sweeps.run(run_cell, cells, None, args.scheduler, args.workers, desc="cells")
    print(f"{args.participants} simulated participants per cell; 95% cones; coverage with "
          "binomial 95% intervals\n")
    print("| trials | category kappa | exponent | gate | report's cone (MCSE, F) | previous "
          "(batch means) | median cone (deg) | median error (deg) |")
    print("|---|---|---|---|---|---|---|---|")
    inside_band = 0
    for cell, res in zip(cells, results, strict=True):
        ci = binomtest(int(np.sum(res["hit"])), len(res["hit"])).proportion_ci(0.95)
        inside_band += ci.low <= 0.97 and ci.high >= 0.93
        print(f"| {N_CHAINS} x {cell.n_shown} | {cell.kappa:g} | {cell.exponent:g} | "
              f"{'default (annealed)' if cell.gated else 'none'} | {share(res['hit'])} | "
              f"{share(res['old_hit'])} | {np.nanmedian(res['cone']):.1f} | "
              f"{np.median(res['error']):.1f} |")
    hits = sum(int(np.sum(r["hit"])) for r in results)
    total = sum(len(r["hit"]) for r in results)
    print(f"\nall cells: {share([True] * hits + [False] * (total - hits))}; cells whose "
          f"interval meets [0.93, 0.97]: {inside_band} of {len(cells)}")


if __name__ == "__main__":
    main()
