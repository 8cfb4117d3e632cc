"""Training throughput of the face VAE, before and after: `python benchmarks/bench_train.py`.

Times optimiser steps (forward, loss, backward, Adam) on random batches, side by side in one run:
the seed study's network ("before": plain, transposed convs) and the default identity model
("after", with its reference faces), at 1 and 2 torch threads, plus the other image sizes.
Prints images/second and the projected time of the default training run (the epochs of
experiments/vae_default.yaml over the default face set's 1792 training images). On a shared
machine the absolute numbers drop with the load; the ratio after/before is what carries over.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN = 1792  # training images of the default face set (128 of 160 identities x 14)

CASES = (
    ("before: plain, transposed", {"kind": "plain", "upsample": "transposed"}),
    ("after: identity (default)", {}),
    ("identity 64x40", {"image_size": (64, 40)}),
    ("identity 128x128", {"image_size": (128, 128)}),
)


def bench(overrides: dict, threads: int, steps: int, batch: int = 64) -> float:
    """Images per second over `steps` timed steps (after 2 warm-up steps)."""
    import torch

    from vae.model import ModelConfig, build_model

    torch.set_num_threads(threads)
    config = ModelConfig(**overrides)
    model = build_model(config, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 1, *config.image_size), generator=g)
    ref = x.roll(1, 0) if config.kind == "identity" else None
    y = torch.randint(0, 7, (batch,), generator=g)
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        losses, _ = model.loss(x, y, g, ref)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per case (default: 10)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="torch thread counts (default: 1 2)")
    args = p.parse_args()
    from vae.train import load_config

    epochs = load_config(ROOT / "experiments/vae_default.yaml")[1].epochs
    print(f"{'network':<27} {'threads':>7} {'images/s':>9} {'s/epoch':>8} "
          f"{'min/' + str(epochs) + ' epochs':>14} {'vs before':>9}")
    for threads in args.threads:
        before = None
        for name, overrides in CASES:
            rate = bench(overrides, threads, args.steps)
            before = before or rate
            print(f"{name:<27} {threads:>7} {rate:9.0f} {N_TRAIN / rate:8.1f} "
                  f"{epochs * N_TRAIN / rate / 60:14.1f} {rate / before:9.2f}", flush=True)


if __name__ == "__main__":
    main()
