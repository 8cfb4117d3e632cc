"""Does the identity model train on photo-like sets, and how many children does a lab need?

For each set size, the whole own-photo path on faces whose truth is known:
  1. `python -m vae.photolike`: the default children drawn at photo resolution, each photo with
     its own size, tilt, place, lighting gradient, exposure, blur, noise and JPEG quality;
  2. `python -m vae.data build --source folder --align`: detect, align, crop (rejects listed);
     children whose every neutral photo was rejected are removed, as the build asks a lab to;
  3. `python -m vae.train`: the default recipe, its verdict.
It prints one row per size and training seed (alignment error against the truth, the share
kept and the faces' median grey per third of the children by skin tone, the verdict's
figures, the observer per emotion and the verdict's advice) and writes them to
<out>/photolike.csv, the skin-tone table to <out>/fairness<n>.csv and a figure
<out>/photolike.png. `--figure` draws that figure from the tables of earlier runs instead (a
size's trainings are often run apart: a second seed, a larger set) without running anything.

    python benchmarks/bench_photolike.py --sizes 24 48 96 --epochs 30 --train-seeds 1 2 \
        --config experiments/vae_photos.yaml --out reports/bench_photolike
    python benchmarks/bench_photolike.py --figure reports/bench_photolike/photolike.csv \
        reports/bench160/photolike.csv --out reports/sizes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def run_module(args: list[str]) -> float:
    """Run `python -m args` in the repo (one torch thread); its wall seconds."""
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True, env=env)
    return time.perf_counter() - t0


def eye_errors(store: Path, truth_csv: Path) -> pd.Series:
    """Worse eye's distance from the truth, in true eye distances, per kept face (by file)."""
    from vae.store import read_store

    gt = read_store(store).ground_truth
    files = [str(f) for f in gt["file"]]
    truth = pd.read_csv(truth_csv).set_index("file").loc[files]
    found = np.stack([np.asarray(gt["left_eye"]), np.asarray(gt["right_eye"])], axis=1)
    true = np.stack([truth[["left_eye_x", "left_eye_y"]].to_numpy(),
                     truth[["right_eye_x", "right_eye_y"]].to_numpy()], axis=1)
    spacing = np.linalg.norm(true[:, 1] - true[:, 0], axis=1)
    return pd.Series(np.linalg.norm(found - true, axis=2).max(axis=1) / spacing, index=files)


def fairness(errors: pd.Series, truth_csv: Path) -> pd.DataFrame:
    """Per third of the children by skin tone (darkest first): children, photos, the share
    kept, the kept faces' eye error (median, 90th percentile) and the share of the photos
    framed more than a quarter of an eye distance off (of those kept)."""
    truth = pd.read_csv(truth_csv)
    tone = truth.groupby("child")["skin_tone"].first()
    third = pd.qcut(tone.rank(method="first"), 3, labels=["darkest", "middle", "lightest"])
    truth["third"] = truth["child"].map(third)
    truth["error"] = truth["file"].map(errors)
    return truth.groupby("third", observed=True).agg(
        children=("child", "nunique"), skin_tone=("skin_tone", lambda t: f"{t.min():.2f}-{t.max():.2f}"),
        photos=("file", "size"), kept=("error", lambda e: e.notna().mean()),
        eye_error_median=("error", "median"),
        eye_error_p90=("error", lambda e: e.quantile(0.9)),
        misframed=("error", lambda e: (e[e.notna()] > 0.25).mean()),
    )


def face_greys(store: Path, truth_csv: Path) -> pd.Series:
    """Median grey (of 255) of the kept faces inside the face region (`vae.align.face_region`),
    per third of the children by skin tone (darkest first): dark children must stay dark."""
    from vae.align import face_region
    from vae.store import read_store

    faces = read_store(store)
    truth = pd.read_csv(truth_csv)
    tone = truth.groupby("child")["skin_tone"].first()
    third = pd.qcut(tone.rank(method="first"), 3, labels=["darkest", "middle", "lightest"])
    region = face_region(faces.images.shape[1:])
    kids = pd.Series(np.asarray(faces.identities).astype(str)).map(third)
    return pd.Series({name: float(np.median(faces.images[(kids == name).to_numpy()][:, region]))
                      for name in third.cat.categories}, name="face_grey_median")


def keep_children_with_a_neutral(store: Path, out: Path) -> list[str]:
    """Write `store` without the children that have no neutral face left to `out` (what the
    build asks a lab to do, by removing their photos); the removed children's ids."""
    from vae.faceset import FaceSet
    from vae.identity import children_without_neutral
    from vae.store import read_store, write_store

    faces = read_store(store)
    gone = children_without_neutral(faces)
    keep = ~np.isin(np.asarray(faces.identities).astype(str), gone)
    write_store(FaceSet(faces.images[keep], faces.labels[keep], faces.identities[keep],
                        faces.label_names, faces.source,
                        {k: np.asarray(v)[keep] for k, v in faces.ground_truth.items()},
                        dict(faces.attrs, removed_children=gone)), out)
    return gone


def align_size(n: int, seed: int, out: Path) -> tuple[dict, Path]:
    """Photos of `n` children (seed), aligned; the alignment's figures and the usable store."""
    folder, store, usable = out / f"photos{n}", out / f"faces{n}.h5", out / f"usable{n}.h5"
    times = {"photos_s": run_module(["vae.photolike", "--out", str(folder), "--n-identities",
                                     str(n), "--seed", str(seed)]),
             "align_s": run_module(["vae.data", "build", "--source", "folder", "--root",
                                    str(folder), "--align", "--out", str(store)])}
    errors = eye_errors(store, folder / "truth.csv")
    n_photos = len(pd.read_csv(folder / "truth.csv"))
    by_tone = fairness(errors, folder / "truth.csv")
    by_tone["face_grey_median"] = face_greys(store, folder / "truth.csv")
    by_tone.to_csv(out / f"fairness{n}.csv")
    print(by_tone.round(3).to_string(), flush=True)
    gone = keep_children_with_a_neutral(store, usable)
    return {
        "children": n, "photos": n_photos, "kept": len(errors),
        "children_removed": len(gone),
        "eye_error_median": float(np.median(errors)),
        "eye_error_p90": float(np.quantile(errors, 0.9)),
        "misframed_share": float(np.mean(errors > 0.25)),
        **{f"kept_{third}": float(row["kept"]) for third, row in by_tone.iterrows()},
        **times,
    }, usable


def verdict_figures(model: Path) -> dict:
    """The verdict's figures of a trained checkpoint (its metrics JSON beside it): each check's
    value, the worst emotion's retention, the observer per emotion on the held-out children
    (originals -> reconstructions, %) and the verdict's advice."""
    metrics = json.loads(model.with_suffix(".json").read_text())
    checks = {c["name"]: c for c in metrics["verdict"]["checks"]}
    retention = metrics["readability"]["retention"]["per_emotion"]
    per_emotion = {e: r["retention"] for e, r in retention.items() if r["retention"] is not None}
    return {
        "verdict": "passed" if metrics["verdict"]["passed"] else "failed",
        "failed_checks": "; ".join(k for k, c in checks.items() if not c["passed"]),
        **{f"{k}": c["value"] for k, c in checks.items()},
        "worst_emotion_retention": min(per_emotion, key=per_emotion.get),
        "worst_retention": min(per_emotion.values()),
        "observer_per_emotion": ", ".join(
            f"{e} {100 * r['observer_accuracy_originals']:.0f}->"
            f"{100 * r['observer_accuracy_reconstructions']:.0f}"
            for e, r in retention.items() if r["observer_accuracy_originals"] is not None),
        "advice": " | ".join(metrics["verdict"]["advice"]),
    }


def train_size(n: int, usable: Path, epochs: int, seed: int, config: str | None,
               out: Path) -> dict:
    """Train on the usable store of `n` children with `seed` (and `config`); its
    `verdict_figures`."""
    model = out / f"model{n}_s{seed}.pt"
    extra = ["--config", config] if config else []
    train_s = run_module(["vae.train", "--data", str(usable), "--out", str(model), "--epochs",
                          str(epochs), "--seed", str(seed), "--no-progress", *extra])
    return {"seed": seed, **verdict_figures(model), "train_s": train_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[24, 48, 96])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=1, help="the photos' seed (vae.photolike)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2],
                   help="one training per seed and size (default: 1 2)")
    p.add_argument("--config", help="training YAML (default: vae.train's)")
    p.add_argument("--out", default="reports/bench_photolike")
    p.add_argument("--figure", nargs="+", metavar="CSV",
                   help="only draw <out>/photolike.png from these runs' photolike.csv tables")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.figure:
        missing = [f for f in args.figure if not Path(f).is_file()]
        if missing:
            p.error(f"--figure: no such table {missing[0]}; give the photolike.csv of a run")
        _figure(pd.concat([pd.read_csv(f) for f in args.figure], ignore_index=True),
                out / "photolike.png")
        return 0
    rows = []
    for n in args.sizes:
        aligned, usable = align_size(n, args.seed, out)
        for seed in args.train_seeds:
            rows.append({**aligned, **train_size(n, usable, args.epochs, seed, args.config, out)})
            table = pd.DataFrame(rows)
            table.to_csv(out / "photolike.csv", index=False)
            print(table.to_string(index=False), flush=True)
    _figure(pd.DataFrame(rows), out / "photolike.png")
    return 0


def _figure(table: pd.DataFrame, path: Path) -> None:
    """The verdict's figures against the number of children: every training a dot, the
    mean over the seeds a line; under each size, how many trainings its mean is of."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    for (column, label), colour in zip(
            (("readable children", "readable held-out children (share)"),
             ("expression retention", "expression retention"),
             ("worst_retention", "worst emotion's retention")), ("C0", "C1", "C2"), strict=True):
        if column in table:
            mean = table.groupby("children")[column].mean()
            ax.plot(mean.index, mean.to_numpy(), "-", color=colour, label=f"{label}, mean")
            ax.plot(table["children"], table[column], "o", color=colour, ms=4, alpha=0.7)
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")  # the verdict's retention threshold
    ax.axhline(0.6, color="grey", lw=0.8, ls="--")  # ... and its share of readable children
    trainings = table.groupby("children").size()
    ax.set_xticks(trainings.index, [f"{n}\n{k} training{'s' * (k > 1)}"
                                    for n, k in trainings.items()])
    ax.set_xlabel("children in the photo set (dots: one training each)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Photo-like sets through align + train: the verdict's figures")
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    sys.exit(main())
