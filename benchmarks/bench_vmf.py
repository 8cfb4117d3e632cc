"""Samples per second of vMF sampling on S^2 (d = 3) at kappa 300, 100k draws per call.

Side by side, in one run: our `VonMisesFisher.rsample` (exact inverse CDF), the same distribution
with Wood's rejection sampler forced on d = 3 (the path every d != 3 takes), and
`scipy.stats.vonmises_fisher(mu, 300).rvs(100_000)`. Each row is the median of several repeats;
the ratio column is samples/s relative to scipy.

    .venv/bin/python benchmarks/bench_vmf.py [--repeats 7] [--threads 1]
"""

import argparse
import statistics
import time

import numpy as np
import scipy
import scipy.stats as st
import torch

from vae.distributions import VonMisesFisher

KAPPA = 300.0
N = 100_000


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    mu = np.array([0.48, -0.6, 0.64])
    mu /= np.linalg.norm(mu)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    rows = []
    for dtype in (torch.float32, torch.float64):
        loc = torch.tensor(mu, dtype=dtype)
        one = VonMisesFisher(loc, torch.tensor(KAPPA, dtype=dtype))
        batch = VonMisesFisher(loc.expand(N, 3), torch.full((N,), KAPPA, dtype=dtype))
        name = str(dtype).removeprefix("torch.")
        rows += [
            (f"rsample exact, one loc, {name}", lambda d=one: d.rsample((N,), gen)),
            (f"rsample exact, batch of {N} locs, {name}", lambda d=batch: d.rsample((), gen)),
            (f"rsample Wood forced, one loc, {name}", lambda d=one: d._rsample((N,), gen, True)),
        ]
    scipy_vmf = st.vonmises_fisher(mu, KAPPA)
    rows.append(("scipy vonmises_fisher.rvs, float64", lambda: scipy_vmf.rvs(N, random_state=rng)))

    results = [(label, median_seconds(fn, args.repeats)) for label, fn in rows]
    scipy_rate = N / results[-1][1]
    print(
        f"vMF on S^2, kappa={KAPPA:g}, {N} draws per call, median of {args.repeats}, "
        f"torch {torch.__version__} ({args.threads} thread(s)), scipy {scipy.__version__}"
    )
    print(f"{'sampler':<44} {'median ms':>10} {'samples/s':>12} {'x scipy':>8}")
    for label, seconds in results:
        rate = N / seconds
        print(f"{label:<44} {seconds * 1e3:>10.2f} {rate:>12.3e} {rate / scipy_rate:>8.2f}")


if __name__ == "__main__":
    main()
