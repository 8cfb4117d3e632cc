"""Training throughput of the face VAE: `python benchmarks/bench_train.py [--steps 20]`.

Times optimiser steps (forward, loss, backward, Adam) on random 64x64 batches for both priors
and 1 or 2 torch threads, and prints images/second and the implied time of one epoch of the
default face set (1792 training images) and of the default 50-epoch run.
"""

from __future__ import annotations

import argparse
import time

import torch

from vae.model import ModelConfig, build_model


def bench(prior: str, threads: int, steps: int, batch: int = 64) -> float:
    """Images per second over `steps` timed steps (after 2 warm-up steps)."""
    torch.set_num_threads(threads)
    model = build_model(ModelConfig(prior=prior), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 1, 64, 64), generator=g)
    y = torch.randint(0, 7, (batch,), generator=g)
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        losses, _ = model.loss(x, y, g)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    print(f"{'prior':>9} {'threads':>7} {'images/s':>9} {'s/epoch':>8} {'min/50 epochs':>13}")
    for prior in ("vmf", "gaussian"):
        for threads in (1, 2):
            rate = bench(prior, threads, args.steps)
            print(f"{prior:>9} {threads:>7} {rate:9.0f} {1792 / rate:8.1f} "
                  f"{50 * 1792 / rate / 60:13.1f}")


if __name__ == "__main__":
    main()
