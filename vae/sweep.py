"""Kappa x epochs sweep: `python -m vae.sweep --kappas 1 100 300 3000 --epochs 10 50`.

Trains one vMF VAE per kappa (plus the Gaussian baseline) from the base config, and for each
requested epoch count records the latent-space metrics as one row of a CSV table (rewritten
after every run, so a long sweep that stops keeps its finished rows). Longer runs resume from
the shorter run's checkpoint, which gives exactly the weights of an uninterrupted run (see
`vae.train`), so 10 and 50 epochs cost 50 epochs, not 60.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vae.train import DEFAULT_CONFIG, load_config, train


def run_sweep(kappas, epochs, out: str | Path, config: str | Path = DEFAULT_CONFIG,
              gaussian: bool = True, models_dir: str | Path | None = None,
              progress: bool = True):
    """Train every (model, epochs) combination; write and return the table (a DataFrame).

    Checkpoints go to NEW files in `models_dir` (an existing one stops the sweep before any
    training: nothing is overwritten).
    """
    import pandas as pd

    from vae.metrics import flatten_metrics

    base_model, base_train = load_config(config)
    out = Path(out)
    models_dir = Path(models_dir) if models_dir else out.parent / "sweep_models"
    models = [("vmf", dataclasses.replace(base_model, prior="vmf", kappa=float(k)))
              for k in kappas]
    if gaussian:
        models.append(("gaussian", dataclasses.replace(base_model, prior="gaussian")))
    existing = sorted(models_dir.glob("*.pt")) if models_dir.exists() else []
    if existing:
        raise FileExistsError(f"{models_dir} already holds checkpoints ({existing[0].name}, ...); "
                              "pass a new --models-dir (a sweep never overwrites a checkpoint)")
    rows = []
    for prior, model_config in models:
        previous = None
        for n_epochs in sorted(set(epochs)):
            tag = f"{prior}_k{model_config.kappa:g}" if prior == "vmf" else prior
            path = models_dir / f"{tag}_e{n_epochs}.pt"
            train_config = dataclasses.replace(base_train, epochs=n_epochs)
            _, metrics = train(model_config, train_config, path, resume=previous,
                               progress=progress, keep_optimizer=True)
            previous = path
            last = metrics["history"][-1]
            rows.append({
                "prior": prior,
                "kappa": model_config.kappa if prior == "vmf" else None,
                "latent_dim": model_config.latent_dim,
                "epochs": n_epochs,
                "seed": train_config.seed,
                "checkpoint": str(path),
                **{f"final_{k}": v for k, v in last.items() if k != "epoch"},
                **flatten_metrics(metrics),
            })
            out.parent.mkdir(parents=True, exist_ok=True)
            table = pd.DataFrame(rows)
            table.to_csv(out, index=False)
    return table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vae.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--kappas", type=float, nargs="+", default=[1, 100, 300, 3000],
                   help="vMF concentrations to train (default: 1 100 300 3000)")
    p.add_argument("--epochs", type=int, nargs="+", default=[10, 50],
                   help="epoch counts recorded per model (default: 10 50)")
    p.add_argument("--out", default="reports/sweep.csv",
                   help="the table (CSV) (default: reports/sweep.csv)")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"base YAML with model: and train: (default: {DEFAULT_CONFIG})")
    p.add_argument("--models-dir", help="where the sweep's checkpoints go, a new folder "
                                        "(default: sweep_models/ beside --out)")
    p.add_argument("--no-gaussian", action="store_true",
                   help="skip the Gaussian baseline (default: included)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (default: shown)")
    return p


def main(argv: list[str] | None = None):
    p = _parser()
    args = p.parse_args(argv)
    if any(k <= 0 for k in args.kappas) or any(e < 1 for e in args.epochs):
        p.error(f"kappas must be > 0 and epochs >= 1, got {args.kappas} and {args.epochs}")
    table = run_sweep(args.kappas, args.epochs, args.out, args.config, not args.no_gaussian,
                      args.models_dir, not args.no_progress)
    cols = ["prior", "kappa", "epochs", "latent.classifier_accuracy", "latent.knn5_accuracy",
            "latent.silhouette_geodesic", "latent.centroid_overlap",
            "latent.mean_resultant_length", "latent.recon_mse_per_pixel"]
    print(table[[c for c in cols if c in table]].to_string(index=False))
    print(f"wrote {args.out}")
    return table


if __name__ == "__main__":
    main()
