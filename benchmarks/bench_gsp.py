"""MCMCP vs GSP: trials and participant time to a prototype within 5 degrees, the same agents.

Simulated participants: category vMF(m, kappa) on S^2 with kappa 20 and 50, Luce/softmax
exponent 1, lapse 0.05, 4 chains per emotion started on a randomly turned Fibonacci lattice.
MCMCP: two faces per trial, vMF proposals of the default concentration (config
DEFAULT_KAPPA_PROPOSAL). GSP: a slider of K points along a random great circle (default 32).
Both run through the simulator's own vectorised cores (`simulate_chains`,
`simulate_gsp_chains`) with the agents' RT models (`agents.RTModel` for two-face choices,
`agents.SliderRTModel` for sliders) plus the session's fixation between trials
(`layout.FIXATION`).

A participant "has" the prototype after t trials per chain when the spherical mean of the
second half of the 4 chains' states is within 5 degrees of m, and stays so at every later
checkpoint. Reported: the median over participants (each its own seed and start rotation) with
a 95% bootstrap interval of that median, in total trials and in participant minutes.

    python benchmarks/bench_gsp.py [--quick] [--participants N] [--points K]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import fibonacci_sphere, normalize, rotation_between, sample_uniform
from mcmcp.sim.chains import simulate_chains, simulate_gsp_chains
from mcmcp.sim.layout import FIXATION
from mcmcp.specs import DEFAULT_KAPPA_PROPOSAL

M = normalize(np.array([0.3, -0.5, 0.8]))
CHAINS = 4
LAPSE, EXPONENT = 0.05, 1.0


def starts(n_rep: int, rng: np.random.Generator) -> np.ndarray:
    """(n_rep * CHAINS, 3): each participant's Fibonacci starts turned so that its category,
    drawn uniformly, sits at M (the same as a random category with fixed starts)."""
    rot = np.array([rotation_between(M, m) for m in sample_uniform(n_rep, 3, rng)])
    return np.einsum("rij,cj->rci", rot, fibonacci_sphere(CHAINS)).reshape(-1, 3)


def time_to_prototype(trace, n_rep: int, tolerance_deg: float = 5.0):
    """Per participant: (trials per chain, total trials, participant seconds) until the estimate
    is within `tolerance_deg` for good; NaN if never within the simulated trials."""
    n_trials = trace.current.shape[0]
    states = np.concatenate([trace.current[1:], trace.final.position[None]])  # after trial s+1
    x = states.reshape(n_trials, n_rep, CHAINS, 3).sum(axis=2)  # (T, rep, 3)
    cum = np.concatenate([np.zeros((1, n_rep, 3)), np.cumsum(x, axis=0)])
    t = np.arange(1, n_trials + 1)
    window = cum[t] - cum[t // 2]  # states after trials t//2+1 .. t of every chain
    est = window / np.linalg.norm(window, axis=-1, keepdims=True)
    err = np.degrees(np.arccos(np.clip(est @ M, -1.0, 1.0)))  # (T, rep)
    bad = err >= tolerance_deg
    # first t after the last bad checkpoint
    last_bad = np.where(bad.any(axis=0), n_trials - 1 - np.argmax(bad[::-1], axis=0), -1)
    per_chain = np.where(last_bad < n_trials - 1, last_bad + 2, np.nan)
    seconds_per_trial = (trace.rt + FIXATION).reshape(n_trials, n_rep, CHAINS).sum(axis=2)
    cum_s = np.concatenate([np.zeros((1, n_rep)), np.cumsum(seconds_per_trial, axis=0)])
    idx = np.nan_to_num(per_chain, nan=0).astype(int)
    seconds = np.where(np.isnan(per_chain), np.nan, cum_s[idx, np.arange(n_rep)])
    return per_chain, CHAINS * per_chain, seconds


def median_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000) -> tuple:
    """Median and 95% bootstrap interval over participants; a participant who never got
    there counts as +inf (so the median is honest about failures)."""
    v = np.where(np.isnan(values), np.inf, values)
    boots = np.median(rng.choice(v, (n_boot, len(v))), axis=1)
    return np.median(v), np.percentile(boots, 2.5), np.percentile(boots, 97.5)


def fmt(m, lo, hi, scale=1.0, digits=0) -> str:
    def one(v):
        return "never" if not np.isfinite(v) else f"{v / scale:.{digits}f}"
    return f"{one(m)} [{one(lo)}, {one(hi)}]"


def run(kappa: float, n_rep: int, points: int, n_mcmcp: int, n_gsp: int, seed: int):
    agent = LatentAgent({"happy": VMFMixture.single(M, kappa)}, exponent=EXPONENT, lapse=LAPSE)
    out = {}
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    tr = simulate_chains(starts(n_rep, rng), n_mcmcp, DEFAULT_KAPPA_PROPOSAL, agent, "happy",
                         None, rng)
    out["MCMCP"] = (*time_to_prototype(tr, n_rep), np.median(tr.rt), time.perf_counter() - t0)
    rng = np.random.default_rng(seed)  # the same participants (categories, starts)
    t0 = time.perf_counter()
    tr, _ = simulate_gsp_chains(starts(n_rep, rng), n_gsp, points, agent, "happy", None, rng)
    out[f"GSP K={points}"] = (*time_to_prototype(tr, n_rep), np.median(tr.rt),
                              time.perf_counter() - t0)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer participants (default: off)")
    p.add_argument("--participants", type=int, help="simulated participants per cell "
                                                    "(default: 400, quick 100)")
    p.add_argument("--points", type=int, default=32, help="GSP slider points K (default: 32)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    args = p.parse_args(argv)
    n_rep = args.participants or (100 if args.quick else 400)
    boot = np.random.default_rng(args.seed + 1)
    print(f"# MCMCP (kappa_proposal {DEFAULT_KAPPA_PROPOSAL:g}) vs GSP (K = {args.points}): "
          f"{n_rep} simulated participants per row, {CHAINS} chains, exponent {EXPONENT:g}, "
          f"lapse {LAPSE:g}")
    print("medians over participants [95% bootstrap interval]; 'never' = not within 5 deg in "
          "the simulated trials\n")
    print("| category kappa | paradigm | trials to 5 deg | participant minutes to 5 deg | "
          "median s per trial | reached | sim s |")
    print("|---|---|---|---|---|---|---|")
    even = []
    for kappa in (20.0, 50.0):
        res = run(kappa, n_rep, args.points, 600, 150, args.seed + int(kappa))
        for name, (_, total, seconds, rt, sim_s) in res.items():
            reached = np.mean(~np.isnan(total))
            print(f"| {kappa:g} | {name} | {fmt(*median_ci(total, boot))} | "
                  f"{fmt(*median_ci(seconds, boot), scale=60.0, digits=1)} | "
                  f"{rt + FIXATION:.2f} | {reached:.0%} | {sim_s:.1f} |")
        (_, mc_total, mc_s, _, _), (_, gsp_total, _, _, _) = res.values()
        even.append((kappa, np.nanmedian(mc_s) / np.nanmedian(gsp_total)))
    print()
    for kappa, seconds in even:
        print(f"kappa {kappa:g}: GSP costs a participant less time than MCMCP as long as a slider "
              f"trial (fixation included) takes under {seconds:.1f} s")


if __name__ == "__main__":
    main()
