"""Chain throughput and prototype recovery, printed as tables.

1. chain-trials/s of the vectorised latent agent (numpy, many chains at once) beside a
   one-trial-at-a-time Python loop that draws each proposal with scipy.stats.vonmises_fisher.
2. chain-trials/s of the observer agent (decode + classify) if the committed checkpoints exist.
3. Shown trials needed to recover a prototype within 5 degrees, per kappa_proposal, for a lab-like
   participant (4 chains per emotion, category vMF(m, k), exponent 1): the data behind the
   default chains.kappa_proposal. The recovery curve (angular error vs total trials) is printed;
   its runs go through a Dask sweep (`mcmcp.sim.sweeps`, identical to a serial run).

    python benchmarks/bench_chains.py [--quick] [--scheduler ADDRESS] [--workers N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit
from scipy.stats import vonmises_fisher

from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import (
    fibonacci_sphere,
    geodesic,
    normalize,
    rotation_between,
    sample_uniform,
    spherical_mean,
)
from mcmcp.sim import sweeps
from mcmcp.sim.chains import simulate_chains

ROOT = Path(__file__).resolve().parent.parent
M = normalize(np.array([0.3, -0.5, 0.8]))


def throughput(n_chains: int, n_trials: int, agent, repeats: int = 3) -> float:
    """Best-of-`repeats` chain-trials per second of simulate_chains."""
    best = 0.0
    for r in range(repeats):
        rng = np.random.default_rng(r)
        t0 = time.perf_counter()
        tr = simulate_chains(fibonacci_sphere(n_chains), n_trials, 20.0, agent, "happy", None, rng)
        best = max(best, tr.active.sum() / (time.perf_counter() - t0))
    return best


def loop_throughput(n_trials: int, k: float = 20.0, kappa_prop: float = 20.0) -> float:
    """One chain, one trial at a time: scipy proposal, Python Luce choice."""
    rng = np.random.default_rng(0)
    x = np.array([0.0, 0.0, 1.0])
    t0 = time.perf_counter()
    for _ in range(n_trials):
        prop = vonmises_fisher(x, kappa_prop).rvs(1, random_state=rng)[0]
        p = expit(k * (prop @ M) - k * (x @ M))
        if rng.random() < p:
            x = prop
    return n_trials / (time.perf_counter() - t0)


def observer_throughput(n_chains: int, n_trials: int) -> float | None:
    ckpt, obs = ROOT / "vae/checkpoints/default.pt", ROOT / "vae/checkpoints/observer.pt"
    if not (ckpt.is_file() and obs.is_file()):
        return None
    from mcmcp.agents import ObserverAgent
    from vae.checkpoint import load_checkpoint
    from vae.observer import load_observer

    agent = ObserverAgent(load_checkpoint(ckpt).model, load_observer(obs))
    t0 = time.perf_counter()
    tr = simulate_chains(fibonacci_sphere(n_chains), n_trials, 20.0, agent, "happy", None,
                         np.random.default_rng(0))
    return tr.active.sum() / (time.perf_counter() - t0)


def recovery(kappa_prop: float, k: float, n_rep: int, n_trials: int, checkpoints, seed=0):
    """Median angular error (deg) of the prototype estimate after t trials per chain, 4 chains.

    Each replicate participant has its own random category mean; the estimate is the spherical
    mean of the second half of every chain's states (the first half is burn-in).
    """
    rng = np.random.default_rng(seed)
    means = sample_uniform(n_rep, 3, rng)
    # one latent agent per replicate is the same as rotating the starts: the category is fixed
    # at M and each replicate's 4 Fibonacci starts are rotated by a random rotation.
    rot = np.array([rotation_between(M, m) for m in means])  # maps m -> M
    start = np.einsum("rij,cj->rci", rot, fibonacci_sphere(4)).reshape(-1, 3)
    agent = LatentAgent({"happy": VMFMixture.single(M, k)})
    tr = simulate_chains(start, n_trials, kappa_prop, agent, "happy", None, rng)
    x = tr.current.reshape(n_trials, n_rep, 4, 3)
    errs = []
    for t in checkpoints:
        est = spherical_mean(x[t // 2 : t].transpose(1, 0, 2, 3).reshape(n_rep, -1, 3), axis=1)
        errs.append(np.median(np.degrees(geodesic(est, M))))
    return np.array(errs)


def recovery_task(task: tuple, shared: tuple) -> np.ndarray:
    """`recovery` of one (kappa_prop, k) for the sweep; shared = (n_rep, n_trials, checkpoints)."""
    kappa_prop, k = task
    return recovery(kappa_prop, k, *shared)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (default: off)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler for the "
                                            "recovery runs (default: a local cluster)")
    parser.add_argument("--workers", type=int, help="local worker processes, 0 = serial "
                                                    "(default: one per core)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    agent = LatentAgent({"happy": VMFMixture.single(M, 20.0)})

    print("## 1. chain-trials per second, latent agent (d = 3, kappa_proposal 20, no gate)")
    print(f"{'chains':>8} {'trials':>7} {'chain-trials/s':>16}")
    total = 250_000 if args.quick else 2_000_000
    for n in (64, 256, 1024, 4096, 16384):
        print(f"{n:>8} {total // n:>7} {throughput(n, total // n, agent):>16,.0f}")
    loop = loop_throughput(1000 if args.quick else 3000)
    vec = throughput(4096, total // 4096, agent)
    print(f"one-at-a-time loop with scipy proposals: {loop:,.0f} chain-trials/s; "
          f"vectorised (4096 chains) / loop = {vec / loop:,.0f}x\n")

    obs = observer_throughput(256, 20 if args.quick else 50)
    print("## 2. observer agent (decode + classify, 256 chains): "
          + ("skipped: vae/checkpoints/default.pt or observer.pt missing" if obs is None
             else f"{obs:,.0f} chain-trials/s") + "\n")

    kps = (3.0, 5.0, 10.0, 30.0, 100.0, 300.0)
    n_trials = 200 if args.quick else 400
    checkpoints = [t for t in (10, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400) if t <= n_trials]
    n_rep = 100 if args.quick else 400
    tasks = [(kp, k) for k in (20.0, 50.0) for kp in kps]
    errors = dict(zip(tasks, sweeps.run(recovery_task, tasks, (n_rep, n_trials, checkpoints),
                                        args.scheduler, args.workers, desc="recovery"),
                      strict=True))
    for k in (20.0, 50.0):
        print(f"## 3. prototype recovery, category vMF(m, k={k:g}), exponent 1, 4 chains; "
              f"median angular error (deg) over {n_rep} participants vs total shown trials")
        print(f"{'kappa_prop':>10} " + " ".join(f"{4 * t:>6}" for t in checkpoints)
              + f" {'trials to 5 deg':>16}")
        for kp in kps:
            err = errors[(kp, k)]
            ok = np.flatnonzero(err < 5.0)
            need = f"{4 * checkpoints[ok[0]]}" if ok.size else f"> {4 * n_trials}"
            print(f"{kp:>10g} " + " ".join(f"{e:>6.1f}" for e in err) + f" {need:>16}")
        print()


if __name__ == "__main__":
    main()
