"""How often the drift and side-bias checks flag the participants they should, and the others.

Drift (`analysis.stationarity`): one participant = 4 chains (kappa_proposal 5, Fibonacci starts
turned at random) answering a category vMF(m, kappa); after half of each chain's shown trials
the category turns by 30° or 60° (`mcmcp.sim.quirks.Moving`), or not at all (false alarms);
without a gate and with the default gate (vMF kappa_g 10, 20° from the truth, gamma 0.5 annealed
over 40% of the shown trials), at 4 x 100 and 4 x 250 trials. Each participant's chains go
through the report's own drift check (`mcmcp.sim.planner.trace_states` -> `analysis.checks
.drift_checks`, the stretches `inference_checks` compares).

Side bias (`analysis.sides`): 30% of answers 'left' whatever the faces (`quirks.SidePress`) or
none, lapses 0.05 on the rest; the chain trials' answers and 40 catch trials (target against a
face 90° away) per participant; flagged share, and the lapse estimate split into side presses
and random lapses.

Shares with binomial 95% intervals; each cell one task of a Dask sweep (`mcmcp.sim.sweeps`).

    python benchmarks/bench_checks.py [--participants 200] [--workers N]
"""

from __future__ import annotations

import argparse
import warnings
from typing import NamedTuple

import numpy as np
from scipy.stats import special_ortho_group
from shares import share

from analysis.checks import drift_checks
from analysis.lapses import lapse_from_catch
from analysis.sides import side_bias
from mcmcp.agents import LatentAgent
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.gate import Gate
from mcmcp.sampling.sphere import fibonacci_sphere, normalize, rotate_towards
from mcmcp.sim import sweeps
from mcmcp.sim.chains import simulate_chains
from mcmcp.sim.planner import trace_states
from mcmcp.sim.quirks import Moving, SidePress
from mcmcp.sim.study import simulated_ids

M = normalize(np.array([0.3, -0.5, 0.8]))
C = 4


class Task(NamedTuple):
    kind: str  # drift | side
    n_shown: int
    kappa: float
    amount: float  # drift: degrees; side: share pressed
    gated: bool
    participants: int
    seed: int


def starts(n: int, rng) -> np.ndarray:
    return np.concatenate([fibonacci_sphere(C) @ special_ortho_group.rvs(3, random_state=rng).T
                           for _ in range(n)])


def run(task: Task, shared=None) -> list:
    rng = np.random.default_rng(task.seed)
    s = starts(task.participants, rng)
    base = LatentAgent({"sad": VMFMixture.single(M, task.kappa)},
                       lapse=0.05 if task.kind == "side" else 0.0)
    gate = None
    if task.gated:
        gate = Gate(VMFMixture.single(rotate_towards(M, np.array([1.0, 0, 0]), np.radians(20)),
                                      10.0), 0.5, 0.4)
    if task.kind == "drift":
        late = rotate_towards(M, np.array([0.0, 1.0, 0.0]), np.radians(task.amount))
        agent = Moving(base, LatentAgent({"sad": VMFMixture.single(late, task.kappa)}),
                       task.n_shown // 2)
        trace = simulate_chains(s, task.n_shown, 5.0, agent, "sad", gate, rng,
                                identity=np.arange(len(s)).astype(str).astype(object))
        states = trace_states(trace, simulated_ids(task.participants), "sad", C)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return drift_checks(states)["drift_moved"].astype(bool).tolist()
    agent = SidePress(base, task.amount, "left")
    trace = simulate_chains(s, task.n_shown, 5.0, agent, "sad", gate, rng)
    right = (trace.right_is_proposal == trace.chose_proposal) & trace.shown & trace.active
    shown = trace.shown & trace.active
    foil = rotate_towards(M, np.array([1.0, 0.0, 0.0]), np.pi / 2)
    out = []
    for r in range(task.participants):
        cols = slice(r * C, (r + 1) * C)
        target_right = rng.random(40) < 0.5
        m = target_right[:, None]
        pair = np.repeat(M[None], 40, axis=0), np.repeat(foil[None], 40, axis=0)
        answer = agent.choose("sad", np.where(m, pair[1], pair[0]), np.where(m, pair[0], pair[1]),
                              rng)
        side = side_bias(int(right[:, cols].sum() + answer.chose_right.sum()),
                         int(shown[:, cols].sum()) + 40)
        lapse = lapse_from_catch(int((answer.chose_right == target_right).sum()), 40)
        out.append((side.flagged, side.bias, lapse.estimate,
                    lapse.estimate - side.bias if side.flagged else lapse.estimate))
    return out



def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--scheduler")
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    P = args.participants
    tasks = [Task("drift", n, k, a, g, P, 100 * i + 3) for i, (n, k, a, g) in enumerate(
        (n, k, a, g) for n in (100, 250) for k in (5.0, 20.0, 200.0) for a in (0.0, 30.0, 60.0)
        for g in (False, True))]
    tasks += [Task("side", n, 20.0, a, g, P, 7000 + 10 * i) for i, (n, a, g) in enumerate(
        (n, a, g) for n in (100, 250) for a in (0.0, 0.3) for g in (False, True))]
    results = sweeps.run(run, tasks, None, args.scheduler, args.workers, desc="cells")
    print(f"{P} simulated participants per cell\n")
    print("| trials | category kappa | move | gate | flagged 'drift' |")
    print("|---|---|---|---|---|")
    for t, res in zip(tasks, results, strict=True):
        if t.kind == "drift":
            print(f"| 4 x {t.n_shown} | {t.kappa:g} | {t.amount:g}° | "
                  f"{'default (annealed)' if t.gated else 'none'} | {share(res)} |")
    print("\n| trials | side presses | gate | flagged 'side bias' | side share (mean) | "
          "lapse estimate (catch) | random lapses (the report's lapse_random) |")
    print("|---|---|---|---|---|---|---|")
    for t, res in zip(tasks, results, strict=True):
        if t.kind == "side":
            flags, bias, lapse, random = zip(*res, strict=True)
            print(f"| 4 x {t.n_shown} | {t.amount:.0%} | "
                  f"{'default (annealed)' if t.gated else 'none'} | {share(flags)} | "
                  f"{np.mean(bias):.3f} | {np.mean(lapse):.3f} | "
                  f"{np.mean(random):.3f} |")


if __name__ == "__main__":
    main()
