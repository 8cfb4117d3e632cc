"""Guided MCMCP designs side by side: how fast and how right, and how honest the cones are.

A lab-like participant (4 chains, kappa_proposal 5 from experiments/simulate_demo.yaml, Luce
exponent 1, category vMF(m, 20)) is simulated many times, the truth placed at random relative to
the starts (each replicate's Fibonacci starts turned by a uniformly random rotation). Designs:
- unguided: no gate;
- constant: the old default, gate vMF(m_g, k_g) with constant gamma, de-guided with PSIS
  weights g^-gamma (analysis.prototypes.deguide_weights);
- annealed: gamma falls linearly to 0 over the first 40% of each chain's shown trials; the
  estimate uses the kept states sampled with the gate off (no weights);
- control: constant gamma on 3 chains + 1 unguided control chain; the estimate is the de-guided
  one of the guided chains and "flagged" counts how often analysis.deguiding.compare_means finds
  it disagrees with the control chain.
for gates well placed (m_g = m) or 40 degrees off, broad (k_g 10) or narrow (k_g 100).

Each design and study length (shown trials per chain) is simulated afresh (an annealing schedule
belongs to a study length). Burn-in: the first half of each chain's steps (and, annealed, every
step before the gate was off). Printed per design: the median error (deg) with a 95% interval of
the median (order statistics) at each length, the median kappa-hat / kappa at the longest, the
share of replicates the guard (analysis.deguiding.guard) calls unreliable, and the shown trials
per participant (4 chains) at which the median error first falls below 5 degrees. A second table
gives the coverage of the 95% cones at the longest length: the old chain bootstrap
(analysis.prototypes.bootstrap_cone) and the batch-means cone (analysis.cones.mean_cone), with
binomial 95% intervals. A third table gives how often the checks flag participants in the
default design (annealed gamma 0.5, gate k_g 10 well placed or 40 deg off): "random" (the
choice-dependence test, analysis.responders) for attentive agents with broad (kappa 5) and
narrow (kappa 20) categories and for agents answering at random (Luce exponent 0), and "two
modes" (analysis.modes) for the attentive ones. Saves reports/bench_guided.png (error vs trials,
medians with intervals). The simulations run in parallel as a Dask sweep (`mcmcp.sim.sweeps`; each
task carries its own seed, so the tables equal a serial run's).

    python benchmarks/bench_guided.py [--quick] [--scheduler ADDRESS] [--workers N]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
import yaml
from scipy.stats import binom, special_ortho_group
from shares import share

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.cones import batch_units, inside, mean_cone  # noqa: E402
from analysis.deguiding import (  # noqa: E402
    compare_means,  # noqa: E402
    gate_natural_parameter,
    guard,
)
from analysis.modes import choose_modes  # noqa: E402
from analysis.prototypes import (  # noqa: E402
    bootstrap_cone,
    deguide_weights,
    effective_n,
    fit_vmf,
)
from analysis.responders import choice_dependence  # noqa: E402
from mcmcp.agents import LatentAgent  # noqa: E402
from mcmcp.sampling.densities import VMFMixture  # noqa: E402
from mcmcp.sampling.gate import Gate  # noqa: E402
from mcmcp.sampling.sphere import fibonacci_sphere, geodesic, normalize, rotate_towards  # noqa: E402
from mcmcp.sim import sweeps  # noqa: E402
from mcmcp.sim.chains import simulate_chains  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
M = normalize(np.array([0.3, -0.5, 0.8]))
K_CATEGORY, N_CHAINS, ANNEAL_UNTIL = 20.0, 4, 0.4


class Design(NamedTuple):
    name: str
    gamma: float | None  # None: unguided
    anneal: bool
    controls: int


DESIGNS = [Design("unguided", None, False, 0),
           Design("constant γ 0.5 (old default)", 0.5, False, 0),
           Design("constant γ 1", 1.0, False, 0),
           Design("annealed γ 0.5", 0.5, True, 0),
           Design("annealed γ 1", 1.0, True, 0),
           Design("constant γ 0.5 + 1 control", 0.5, False, 1)]
GATES = [("well placed, broad (k_g 10)", 0.0, 10.0), ("40° off, broad (k_g 10)", 40.0, 10.0),
         ("well placed, narrow (k_g 100)", 0.0, 100.0), ("40° off, narrow (k_g 100)", 40.0, 100.0)]


class Replicate(NamedTuple):
    error: float  # degrees from the truth
    kappa_ratio: float  # fitted kappa / true kappa
    unreliable: bool  # guard (constant gamma only)
    flagged: bool  # control chain disagrees (control designs only)
    boot_hit: bool
    batch_hit: bool


def kept_states(trace, i: int, n_shown: int):
    """States (n, d) chain i kept by the analysis' rule, the log g and gamma at them (n,)."""
    n_seen = np.cumsum(trace.shown[:, i])
    length = int(np.argmax(n_seen >= n_shown)) + 1  # steps chain i took
    states = np.concatenate([trace.current[:length, i], trace.final.position[i][None]])
    # gamma and log g of each state: those of the step that produced it (state 0: the first)
    gamma = np.concatenate([trace.gate_gamma[:1, i], trace.gate_gamma[:length, i]])
    log_g = np.where(trace.accepted[:length, i], trace.log_g_proposal[:length, i],
                     trace.log_g_current[:length, i])
    log_g = np.concatenate([trace.log_g_current[:1, i], log_g])
    keep = np.arange(len(states)) > length // 2
    if (gamma == 0).any():  # annealed: only states sampled with the gate off
        keep &= np.arange(len(states)) > np.flatnonzero(gamma > 0).max(initial=-1)
    return states[keep], log_g[keep], gamma[keep]


def replicate(trace, r: int, n_shown: int, design: Design, gate, rng) -> Replicate:
    chains = range(r * N_CHAINS, (r + 1) * N_CHAINS)
    parts = [kept_states(trace, i, n_shown) for i in chains]
    guided = [j for j in range(N_CHAINS) if j < N_CHAINS - design.controls]
    use = guided if design.controls else range(N_CHAINS)
    x = np.concatenate([parts[j][0] for j in use])
    chain = np.concatenate([np.full(len(parts[j][0]), k) for k, j in enumerate(use)])
    weights, unreliable = None, False
    if design.gamma is not None and not design.anneal:
        log_g = np.concatenate([parts[j][1] for j in use])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weights, _, _ = deguide_weights(log_g, np.full(len(x), design.gamma))
            mu_q, kappa_q = fit_vmf(x)
        eta_g, _ = gate_natural_parameter(x, log_g)
        unreliable = guard(kappa_q * mu_q, eta_g, design.gamma).unreliable
    cone = mean_cone(x, batch_units(chain), weights)
    flagged = False
    if design.controls:
        xc = np.concatenate([parts[j][0] for j in range(N_CHAINS) if j not in guided])
        control = mean_cone(xc, batch_units(np.zeros(len(xc), dtype=int)))
        flagged = compare_means(cone, control).disagree
    boot = bootstrap_cone(chain, x, weights, cone.mean, 500, rng)
    return Replicate(float(np.degrees(geodesic(cone.mean, M))), fit_vmf(x, weights)[1] / K_CATEGORY,
                     unreliable, flagged, float(np.degrees(geodesic(cone.mean, M))) <= boot,
                     inside(cone, M))


def run(design: Design, gate_spec, n_shown: int, n_rep: int, seed: int) -> list[Replicate]:
    rng = np.random.default_rng(seed)
    starts = np.concatenate([fibonacci_sphere(N_CHAINS) @ special_ortho_group.rvs(3, random_state=rng).T
                             for _ in range(n_rep)])
    gate = None
    if design.gamma is not None:
        _, angle, k_g = gate_spec
        m_g = rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.radians(angle))
        gate = Gate(VMFMixture.single(m_g, k_g), design.gamma,
                    ANNEAL_UNTIL if design.anneal else None)
    guided = np.tile(np.arange(N_CHAINS) < N_CHAINS - design.controls, n_rep)
    agent = LatentAgent({"sad": VMFMixture.single(M, K_CATEGORY)})
    trace = simulate_chains(starts, n_shown, 5.0, agent, "sad", gate, rng, guided=guided)
    return [replicate(trace, r, n_shown, design, gate, rng) for r in range(n_rep)]


class Task(NamedTuple):
    """One simulation of the sweep: a design table cell (run) or a check-rate cell
    (check_rates), with its arguments."""

    kind: str
    args: tuple


def run_task(task: Task, shared=None):
    return (run if task.kind == "design" else check_rates)(*task.args)


def check_rates(angle: float, kappa: float, exponent: float, n_shown: int, n_rep: int,
                seed: int) -> tuple[list[bool], list[bool]]:
    """(random flags, two-mode flags) of n_rep participants in the default design."""
    rng = np.random.default_rng(seed)
    starts = np.concatenate([fibonacci_sphere(N_CHAINS) @ special_ortho_group.rvs(3, random_state=rng).T
                             for _ in range(n_rep)])
    m_g = rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.radians(angle))
    gate = Gate(VMFMixture.single(m_g, 10.0), 0.5, ANNEAL_UNTIL)
    agent = LatentAgent({"sad": VMFMixture.single(M, kappa)}, exponent=exponent)
    trace = simulate_chains(starts, n_shown, 5.0, agent, "sad", gate, rng)
    random, modes = [], []
    for r in range(n_rep):
        cols = slice(r * N_CHAINS, (r + 1) * N_CHAINS)
        parts = [kept_states(trace, i, n_shown)[0] for i in range(cols.start, cols.stop)]
        x = np.concatenate(parts)
        chain = np.repeat(np.arange(N_CHAINS), [len(p) for p in parts])
        shown = trace.shown[:, cols] & trace.active[:, cols]
        random.append(choice_dependence(trace.current[:, cols][shown],
                                        trace.proposal[:, cols][shown],
                                        trace.chose_proposal[:, cols][shown],
                                        normalize(x.sum(axis=0))).random)
        modes.append(choose_modes(x, effective_n(x, chain)).n_modes > 1)
    return random, modes


def median_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Median and a 95% distribution-free interval of the median (binomial order statistics)."""
    v = np.sort(values)
    n = len(v)
    lo = int(binom.ppf(0.025, n, 0.5))
    hi = min(int(binom.ppf(0.975, n, 0.5)), n - 1)
    return float(np.median(v)), float(v[max(lo - 1, 0)]), float(v[hi])



def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (default: off)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a "
                                            "local cluster)")
    parser.add_argument("--workers", type=int, help="local worker processes, 0 = serial "
                                                    "(default: one per core)")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load((ROOT / "experiments/simulate_demo.yaml").read_text())
    assert float(cfg["chains"]["kappa_proposal"]) == 5.0
    n_rep = 60 if args.quick else 200
    lengths = (25, 50, 100, 250) if args.quick else (25, 50, 75, 100, 150, 250)
    print(f"category vMF(m, {K_CATEGORY:g}), {N_CHAINS} chains, kappa_proposal 5, truth at random "
          f"relative to the starts, {n_rep} replicates; error: median [95% interval] in degrees")
    header = " ".join(f"{N_CHAINS * n:>19}" for n in lengths)
    print(f"{'gate':<30} {'design':<30} {header} {'k-hat/k':>8} {'guard':>6} {'flag':>6} "
          f"{'to 5 deg':>8}")
    fig, axes = plt.subplots(1, len(GATES), figsize=(4 * len(GATES), 4), sharey=True)
    coverage, reference = [], None
    people = [(angle, who, kappa, exponent, n_shown) for angle in (0.0, 40.0)
              for who, kappa, exponent in (("attentive, kappa 5", 5.0, 1.0),
                                           ("attentive, kappa 20", 20.0, 1.0),
                                           ("answers at random", 20.0, 0.0))
              for n_shown in (100, 250)]
    tasks = [Task("design", (design, gate_spec, n_shown, n_rep, 1000 * g + 10 * s + n_shown))
             for g, gate_spec in enumerate(GATES) for s, design in enumerate(DESIGNS)
             if design.gamma is not None or g == 0 for n_shown in lengths]
    tasks += [Task("checks", (angle, kappa, exponent, n_shown, n_rep,
                              int(angle) + int(kappa) + n_shown))
              for angle, _, kappa, exponent, n_shown in people]
    results = iter(sweeps.run(run_task, tasks, None, args.scheduler, args.workers,
                              desc="simulations"))
    for g, gate_spec in enumerate(GATES):
        ax = axes[g]
        for s, design in enumerate(DESIGNS):
            if design.gamma is None and g > 0:  # the same runs: drawn again as the reference
                ax.errorbar(reference[0], reference[1], yerr=reference[2], marker="o", ms=3,
                            capsize=2, color="k", label=design.name)
                continue
            cells, meds = [], []
            for _ in lengths:
                reps = next(results)
                med, lo, hi = median_interval(np.array([r.error for r in reps]))
                cells.append(f"{med:5.1f} [{lo:4.1f}, {hi:5.1f}]")
                meds.append((med, lo, hi))
            last = reps
            first = next((N_CHAINS * n for n, m in zip(lengths, meds, strict=True) if m[0] < 5),
                         None)
            name = "any" if design.gamma is None else gate_spec[0]
            print(f"{name:<30} {design.name:<30} {' '.join(f'{c:>19}' for c in cells)} "
                  f"{np.median([r.kappa_ratio for r in last]):8.2f} "
                  f"{np.mean([r.unreliable for r in last]):6.2f} "
                  f"{np.mean([r.flagged for r in last]):6.2f} "
                  f"{first if first else '> ' + str(N_CHAINS * lengths[-1]):>8}")
            coverage.append((name, design.name, share([r.boot_hit for r in last]),
                             share([r.batch_hit for r in last])))
            m = np.array(meds)
            line = (N_CHAINS * np.array(lengths) * (1 + 0.02 * s), m[:, 0],
                    [m[:, 0] - m[:, 1], m[:, 2] - m[:, 0]])
            if design.gamma is None:
                reference = line
            ax.errorbar(line[0], line[1], yerr=line[2], marker="o", ms=3, capsize=2,
                        label=design.name, color="k" if design.gamma is None else f"C{s}")
        ax.axhline(5.0, color="grey", lw=0.8)
        ax.set(xlabel="shown trials per participant (4 chains)", yscale="log",
               title=gate_spec[0], xscale="log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_yticks([1, 2, 3, 5, 10, 20, 30])
    axes[0].set_ylabel("prototype error (deg): median, 95% interval")
    axes[-1].legend(fontsize=7)
    print(f"\ncoverage of the 95% cones after {N_CHAINS} x {lengths[-1]} trials "
          "(share of replicates whose cone holds the truth, binomial 95% interval)")
    print(f"{'gate':<30} {'design':<30} {'chain bootstrap (old)':>24} {'batch means (new)':>24}")
    for name, design, boot, batch in coverage:
        print(f"{name:<30} {design:<30} {boot:>24} {batch:>24}")
    print("\nchecks in the default design (annealed γ 0.5, gate k_g 10): share of participants "
          "flagged, binomial 95% interval")
    print(f"{'gate':<12} {'participant':<24} {'trials':>6} {'random':>20} {'two modes':>20}")
    for angle, who, _, exponent, n_shown in people:
        random, modes = next(results)
        print(f"{f'{angle:.0f}° off':<12} {who:<24} {N_CHAINS * n_shown:>6} "
              f"{share(random):>20} {share(modes) if exponent else '':>20}")
    out = ROOT / "reports" / "bench_guided.png"
    out.parent.mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
