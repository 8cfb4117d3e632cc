"""The observer agent, fast (its table, `mcmcp.agents.SphereTable`) and exact, side by side.

The exact agent (`ObserverAgent(..., cells=0)`, the only one before the table) decodes every
new face with the full decoder and judges its pixels with the observer; the fast one (the
default) judges the full decoder's faces at the nodes of a table and interpolates. One thread,
CPU seconds (less sensitive than wall time to a shared machine).

Speed: one call on 256 new faces, and chain-trials per second of 256 chains (proposal kappa 5,
as experiments/happy.yaml), a short run (20 trials per chain) and a study-length one (300),
each with a new agent (the table is built during the run: "cold"), then the fast agent once more
with its table from the run before ("warm"), and a new fast agent whose table starts from the
nodes the cold run kept on disk (`mcmcp.table_cache`, as a later simulate or plan run or
another worker of the same one does; reading the file is counted).

Agreement, fast against exact: the observer's 7 probabilities at 10,000 uniform random points
and at the emotions' centroids (spherical means of the encoded training faces), for the
model's default child and one held-out child; the choice probability P(right) of random pairs
(Luce rule, exponent 1); and how far the faces the fast agent judged are from the face a
participant sees (the farthest table node used, in degrees, and the mean absolute pixel
difference between the faces at the point and at that node, in grey levels of 255).

    python benchmarks/bench_observer.py [--trials 20 300] [--points 10000] [--seed 0]
    python benchmarks/bench_observer.py --trials       # agreement only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def chain_rate(agent, trials: int, seed: int) -> float:
    from mcmcp.sampling.sphere import fibonacci_sphere
    from mcmcp.sim.chains import simulate_chains

    trace = []
    seconds = cpu_seconds(lambda: trace.append(simulate_chains(
        fibonacci_sphere(256), trials, 5.0, agent, "happy", None, np.random.default_rng(seed))))
    return float(trace[0].active.sum()) / seconds


def probabilities(agent, x: np.ndarray, child: str) -> np.ndarray:
    """(n, 7) probabilities the agent uses, from its log preference for every emotion."""
    from vae.labels import EMOTIONS

    return np.exp(np.stack([agent.log_preference(e, x, child) for e in EMOTIONS], axis=1))


def prob_right(p: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Luce's P(right) (exponent 1) of pairs: the first half of the rows of p (n, 7) left, the
    second half right, judged for emotion `column` (n // 2,)."""
    half = len(column)
    rows = np.arange(half)
    left, right = p[:half][rows, column], p[half : 2 * half][rows, column]
    return right / (left + right)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="*", default=[20, 300],
                        help="trials per chain of the speed runs; none: skip them "
                             "(default: 20 300)")
    parser.add_argument("--points", type=int, default=10000,
                        help="random points of the agreement check (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="random points and pairs (default 0)")
    parser.add_argument("--faces", type=Path, default=ROOT / "data/faces.h5",
                        help="the default face store, built if missing (default: data/faces.h5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from mcmcp.agents import ObserverAgent
    from mcmcp.identities import reference_codes
    from mcmcp.sampling.densities import class_centroids
    from mcmcp.sampling.sphere import sample_uniform
    from vae.checkpoint import load_checkpoint
    from vae.data import ensure_store
    from vae.observer import load_observer
    from vae.store import read_store, split_by_identity

    loaded = load_checkpoint(ROOT / "vae/checkpoints/default.pt")
    model, observer = loaded.model.eval(), load_observer(ROOT / "vae/checkpoints/observer.pt")
    ensure_store(args.faces, tuple(loaded.config.image_size))
    faces = read_store(args.faces)
    train, val = split_by_identity(faces.identities, 0.2, 0)
    held_out = next(c for c in sorted(set(faces.identities[val].tolist()))
                    if c != model.default_identity)  # a second child, not the default one
    identities = reference_codes(loaded, faces, [held_out])
    fast = ObserverAgent(model, observer, identities)
    exact = ObserverAgent(model, observer, identities, cells=0)
    rng = np.random.default_rng(args.seed)

    print("## Observer agent, one thread: exact (decode and judge every face) vs fast (table)")
    new = sample_uniform(256, 3, rng)
    one_exact = cpu_seconds(lambda: exact.log_preference("happy", new))
    one_cold = cpu_seconds(lambda: ObserverAgent(model, observer).log_preference("happy", new))
    print(f"| one call, 256 new faces | exact {one_exact * 1000:.0f} ms | fast, new table "
          f"{one_cold * 1000:.0f} ms |")
    print("| chain-trials/s, 256 chains | exact | fast, cold | fast, warm | fast, table from "
          "disk | table nodes |")
    print("|---|---|---|---|---|---|")
    for trials in args.trials:
        rate_exact = chain_rate(ObserverAgent(model, observer, cells=0), trials, args.seed)
        with tempfile.TemporaryDirectory() as cache:
            agent = ObserverAgent(model, observer, cache=cache)
            cold = chain_rate(agent, trials, args.seed)
            agent.save_tables()
            warm = chain_rate(agent, trials, args.seed + 1)
            later = chain_rate(ObserverAgent(model, observer, cache=cache), trials,
                               args.seed + 1)
        print(f"| {trials} trials per chain | {rate_exact:,.0f} | {cold:,.0f} | {warm:,.0f} | "
              f"{later:,.0f} | {agent.table().n_computed:,} |", flush=True)

    print("\n## Agreement of the fast agent with the exact one")
    print("| points | child | max abs diff of the 7 probabilities | 99.9th pct | 99th pct | "
          "mean | max diff of P(right) |")
    print("|---|---|---|---|---|---|---|")
    centroids = class_centroids(loaded, faces, train[:: max(1, len(train) // 700)])
    sets = {f"{args.points:,} uniform random": sample_uniform(args.points, 3, rng),
            "7 emotion centroids": np.array(list(centroids.values()))}
    for label, x in sets.items():
        for child in ("", held_out):
            start = time.perf_counter()
            p_fast, p_exact = probabilities(fast, x, child), probabilities(exact, x, child)
            worst = np.abs(p_fast - p_exact).max(axis=1)
            column = rng.integers(0, 7, len(x) // 2)
            choice = np.abs(prob_right(p_fast, column) - prob_right(p_exact, column)).max()
            print(f"| {label} | {child or loaded.model.default_identity + ' (default)'} | "
                  f"{worst.max():.4f} | {np.quantile(worst, 0.999):.4f} | "
                  f"{np.quantile(worst, 0.99):.4f} | {np.abs(p_fast - p_exact).mean():.5f} | "
                  f"{choice:.4f} | ({time.perf_counter() - start:.0f} s)", flush=True)

    from vae.labels import emotion_index

    print("\n## The faces the fast agent judged (for happy), against the face a participant sees")
    table = fast.table()
    x = sample_uniform(1000, 3, rng)
    # (1000, 9) the nodes each point's answer came from, in the cells cut for happy
    ids, weights = table.corners(x, np.full(len(x), emotion_index("happy")))
    nodes = table.nodes(ids.ravel()).reshape(*ids.shape, 3)
    angle = np.degrees(np.arccos(np.clip(np.einsum("nd,nkd->nk", x, nodes), -1, 1)))
    angle[weights == 0] = 0.0  # a node whose weight is 0 (the point on its row or column) is not used
    far = nodes[np.arange(len(x)), angle.argmax(axis=1)]
    with torch.inference_mode():
        seen = model.decode(torch.as_tensor(x, dtype=torch.float32))
        judged = model.decode(torch.as_tensor(far, dtype=torch.float32))
    pixels = (seen - judged).abs().mean(dim=(1, 2, 3)).numpy() * 255
    print(f"| farthest node used: median {np.median(angle.max(1)):.2f} deg, max "
          f"{angle.max():.2f} deg | mean abs pixel difference to it: median "
          f"{np.median(pixels):.2f}, max {pixels.max():.2f} grey levels of 255 |")


if __name__ == "__main__":
    main()
