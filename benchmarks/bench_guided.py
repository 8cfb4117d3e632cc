"""Guided vs unguided MCMCP with the same number of SHOWN trials per participant.

A lab-like participant (4 chains, category vMF(m, 30), Luce exponent 1, kappa_proposal from
experiments/simulate_demo.yaml) is simulated many times, unguided and with a gate vMF(m_g, 10)
either well placed (m_g = m) or misplaced (30 degrees away), for gamma in {0.5, 1, 2}. For each
number of shown trials it prints the median over participants of
- split R-hat (arviz.rhat, max over the 3 coordinates) of the 4 chains' second halves,
- the prototype's angular error vs the truth after de-guiding: the spherical mean of the second
  halves weighted by PSIS-smoothed weights (arviz.psislw on log w = -gamma log g),
- the median Pareto k-hat of those weights,
and the shown trials needed to get within 5 degrees. Saves reports/bench_guided.png.
The settings run in parallel as a Dask sweep (`mcmcp.sweeps`; identical to a serial run).

    python benchmarks/bench_guided.py [--quick] [--scheduler ADDRESS] [--workers N]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import NamedTuple

import arviz as az
import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mcmcp import sweeps  # noqa: E402
from mcmcp.agents import LatentAgent  # noqa: E402
from mcmcp.densities import VMFMixture  # noqa: E402
from mcmcp.gate import Gate  # noqa: E402
from mcmcp.simulate import simulate_chains  # noqa: E402
from mcmcp.sphere import (  # noqa: E402
    fibonacci_sphere,
    geodesic,
    normalize,
    rotate_towards,
    rotation_between,
    sample_uniform,
    spherical_mean,
)

ROOT = Path(__file__).resolve().parent.parent
M = normalize(np.array([0.3, -0.5, 0.8]))
K_CATEGORY, K_GATE, N_CHAINS = 30.0, 10.0, 4


class Setting(NamedTuple):
    """One row of the table: a name, its gate (None: unguided) and the seed of its run."""

    name: str
    gate: Gate | None
    seed: int


def run_setting(setting: Setting, shared: tuple) -> np.ndarray:
    """`run` for one setting of the sweep; shared = (n_rep, n_shown, kappa_prop, checkpoints)."""
    return run(setting.gate, *shared, seed=setting.seed)


def run(gate, n_rep, n_shown, kappa_prop, checkpoints, seed):
    """Median (rhat, error_deg, khat) per checkpoint of shown trials per chain."""
    rng = np.random.default_rng(seed)
    # The category stays at M; each participant's 4 Fibonacci starts are randomly rotated,
    # which is the same as a random category mean with fixed starts.
    rot = np.array([rotation_between(m, M) for m in sample_uniform(n_rep, 3, rng)])
    start = np.einsum("rij,cj->rci", rot, fibonacci_sphere(N_CHAINS)).reshape(-1, 3)
    agent = LatentAgent({"happy": VMFMixture.single(M, K_CATEGORY)})
    tr = simulate_chains(start, n_shown, kappa_prop, agent, "happy", gate, rng)
    n_seen = np.cumsum(tr.shown, axis=0)  # (T, chains) shown trials so far
    out = []
    for t in checkpoints:
        # iterations each chain had run when its t-th trial was shown
        length = np.argmax(n_seen >= t, axis=0) + 1
        rhats, errs, khats = [], [], []
        for r in range(n_rep):
            idx = range(r * N_CHAINS, (r + 1) * N_CHAINS)
            halves = [tr.current[length[i] // 2 : length[i], i] for i in idx]
            common = min(len(h) for h in halves)
            draws = np.stack([h[-common:] for h in halves])  # (chain, draw, 3)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rhats.append(max(az.rhat(draws[..., j]) for j in range(3)))
            x = np.concatenate(halves)
            if gate is None:
                est = spherical_mean(x)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    lw, khat = az.psislw(-gate.gamma * gate.density.logpdf(x))
                khats.append(khat)
                est = spherical_mean(x, np.exp(lw))
            errs.append(np.degrees(geodesic(est, M)))
        out.append((np.median(rhats), np.median(errs), np.median(khats) if khats else np.nan))
    return np.array(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (default: off)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a "
                                            "local cluster)")
    parser.add_argument("--workers", type=int, help="local worker processes, 0 = serial "
                                                    "(default: one per core)")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load((ROOT / "experiments/simulate_demo.yaml").read_text())
    kappa_prop = float(cfg["chains"]["kappa_proposal"])
    n_rep = 60 if args.quick else 200
    n_shown = 100 if args.quick else 150
    checkpoints = [t for t in (10, 15, 20, 30, 40, 50, 75, 100, 150) if t <= n_shown]
    settings = [("unguided", None)]
    for place, angle in (("well-placed", 0.0), ("misplaced 30deg", 30.0)):
        m_g = rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.radians(angle))
        for gamma in (0.5, 1.0, 2.0):
            settings.append((f"{place} gamma={gamma:g}",
                             Gate(VMFMixture.single(m_g, K_GATE), gamma)))
    print(f"category vMF(m, {K_CATEGORY:g}), gate vMF(m_g, {K_GATE:g}), {N_CHAINS} chains, "
          f"kappa_proposal {kappa_prop:g}, medians over {n_rep} participants")
    print(f"{'setting':<26} {'metric':<10} " + " ".join(f"{N_CHAINS * t:>6}" for t in checkpoints)
          + f" {'shown to 5 deg':>15}")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    results = sweeps.run(run_setting, [Setting(name, gate, s) for s, (name, gate) in
                                       enumerate(settings)],
                         (n_rep, n_shown, kappa_prop, checkpoints), args.scheduler, args.workers,
                         desc="settings")
    for s, ((name, gate), res) in enumerate(zip(settings, results, strict=True)):
        ok = np.flatnonzero(res[:, 1] < 5.0)
        need = f"{N_CHAINS * checkpoints[ok[0]]}" if ok.size else f"> {N_CHAINS * n_shown}"
        for j, metric in enumerate(("R-hat", "error_deg", "k-hat")):
            if gate is None and metric == "k-hat":
                continue
            print(f"{name if j == 0 else '':<26} {metric:<10} "
                  + " ".join(f"{v:>6.2f}" for v in res[:, j]) + (f" {need:>15}" if j == 1 else ""))
        style = "-" if gate is None else ("--" if "well" in name else ":")
        ax.plot(N_CHAINS * np.array(checkpoints), res[:, 1], style, marker="o", ms=3, label=name,
                color="k" if gate is None else f"C{s}")
    ax.axhline(5.0, color="grey", lw=0.8)
    ax.set(xlabel="shown trials per participant (4 chains)", ylabel="prototype error (deg)",
           yscale="log", title="Unguided vs guided MCMCP (de-guided with PSIS)")
    ax.legend(fontsize=7)
    out = ROOT / "reports" / "bench_guided.png"
    out.parent.mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
