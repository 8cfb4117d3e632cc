"""Procedural faces: build time at the study's sizes, and how well a pixel classifier reads the
emotions of identities it never saw.

    python benchmarks/bench_faces.py            # the default set (160 identities x 7 x 2, 64x64)
    python benchmarks/bench_faces.py --quick    # 40 identities, for a smoke run

Readability: logistic regression on standardised pixels (after PCA to 150 components), trained
on the first 75 % of identities and tested on the others; accuracy overall, per emotion, by
mouth form (closed / open) and the confusion matrix. Chance is 1/7 = 14 %. It measures whether
the expressions reach the pixels consistently across identities, not whether a person reads
them: look at the contact sheets for that. Run it with another checkout on PYTHONPATH to
compare generator versions side by side (it uses only `generate_faces` and FaceSet fields).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vae.procedural.faces import GENERATOR_VERSION, generate_faces


def build_times(n_identities: int) -> list[tuple[str, float, float, int]]:
    """(size, wall s, cpu s, images) for each of the study's sizes."""
    rows = []
    for size in ((64, 64), (128, 128), (64, 40)):
        wall, cpu = time.perf_counter(), time.process_time()
        faces = generate_faces(n_identities=n_identities, size=size, seed=0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append((f"{size[0]}x{size[1]}", wall, cpu, len(faces)))
    return rows


def readability(faces, train_fraction: float = 0.75, seed: int = 0) -> dict:
    """Held-out-identity accuracy of a linear pixel classifier; see the module docstring."""
    ids = np.unique(faces.identities)
    train = np.isin(faces.identities, ids[: int(round(train_fraction * len(ids)))])
    x = faces.images.reshape(len(faces), -1).astype(np.float64) / 255.0
    y = faces.labels
    model = make_pipeline(
        StandardScaler(),
        PCA(n_components=150, random_state=seed),
        LogisticRegression(C=0.5, max_iter=3000),
    )
    model.fit(x[train], y[train])
    pred = model.predict(x[~train])
    truth = y[~train]
    opened = faces.ground_truth["mouth_open"][~train]
    return {
        "overall": float((pred == truth).mean()),
        "per_emotion": [float((pred[truth == k] == k).mean()) for k in range(len(faces.label_names))],
        "closed": float((pred[~opened] == truth[~opened]).mean()),
        "open": float((pred[opened] == truth[opened]).mean()),
        "confusion": confusion_matrix(truth, pred, labels=range(len(faces.label_names))),
        "n_train_ids": int(round(train_fraction * len(ids))),
        "n_test_ids": len(ids) - int(round(train_fraction * len(ids))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 identities instead of 160")
    args = parser.parse_args()
    n = 40 if args.quick else 160
    print(f"generator {GENERATOR_VERSION}, {n} identities x 7 emotions x 2 poses")
    print(f"{'size':>8} {'wall s':>8} {'cpu s':>8} {'ms/image (cpu)':>15}")
    for size, wall, cpu, count in build_times(n):
        print(f"{size:>8} {wall:8.2f} {cpu:8.2f} {1000 * cpu / count:15.2f}")

    faces = generate_faces(n_identities=n, size=(64, 64), seed=0)
    r = readability(faces)
    names = faces.label_names
    print(f"\nheld-out identities: trained on {r['n_train_ids']}, tested on {r['n_test_ids']} (64x64)")
    print(
        f"accuracy {100 * r['overall']:.1f} %  "
        f"(closed mouths {100 * r['closed']:.1f} %, open {100 * r['open']:.1f} %)"
    )
    print(" | ".join(f"{name} {100 * acc:.0f}" for name, acc in zip(names, r["per_emotion"], strict=True)))
    print("\nconfusion (rows: true, columns: predicted)")
    print(" " * 10 + "".join(f"{name[:5]:>7}" for name in names))
    for name, row in zip(names, r["confusion"], strict=True):
        print(f"{name:>10}" + "".join(f"{count:7d}" for count in row))


if __name__ == "__main__":
    main()
