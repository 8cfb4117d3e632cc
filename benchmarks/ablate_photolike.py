"""What in the photo-like store costs the identity model its expressions: one difference at a time.

The photo-like children (`vae.photolike`) aligned by `vae.data build --align` train worse than
the clean procedural frames of the same children. This builds, for the same kept photos of the
same children, stores that differ from the clean frames in one thing each:
  clean        the drawing framed at its true eyes (the aligner's resampler, no grey steps);
  grey         ... then the aligned path's grey steps (light plane, white point, the child's curves);
  misframed    the clean drawing framed where the aligner found the eyes in the photo (its
               framing error alone, no photo differences, no grey steps);
  photometric  the photo (light, exposure, blur, noise, JPEG) framed at its true eyes, then the
               grey steps (everything but the framing error);
  photo        the store as `--align` built it (everything);
  surround     ... with, outside the face, the child's mean frame (`vae.images.child_surround`,
               the step `--align` ends with since issue 23's third round; the stores above
               are made without it);
and trains each (`vae.train`, one torch thread) with every seed given, printing the verdict's
figures per store and seed to <out>/ablation.csv.

    python -m vae.photolike --out reports/p4/photos48 --n-identities 48 --seed 1
    python -m vae.data build --source folder --root reports/p4/photos48 --align \
        --out reports/p4/faces48.h5
    python benchmarks/ablate_photolike.py --photos reports/p4/photos48 \
        --store reports/p4/faces48.h5 --seeds 1 2 --config experiments/vae_photos.yaml \
        --out reports/p4/ablate
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_photolike import run_module, verdict_figures

VARIANTS = ("clean", "grey", "misframed", "photometric", "photo", "surround")


def grey_steps(frames: np.ndarray, children: np.ndarray) -> np.ndarray:
    """(n, h, w) uint8: float frames (n, h, w) through the aligned path's grey steps (per frame
    `even_lighting` + `scale_to_white` as `vae.align.align_face`, per child
    `vae.sources.child_grey_levels`)."""
    from vae.align import face_region
    from vae.images import even_lighting, scale_to_white
    from vae.sources import child_grey_levels

    region = face_region(frames.shape[1:])
    lit = np.stack([scale_to_white(even_lighting(f, region), white_of=f) for f in frames])
    return child_grey_levels(lit, children)


def variant_images(photos: Path, store: Path, seed: int) -> tuple[dict[str, np.ndarray], object]:
    """{variant: (m, 64, 64) uint8} for the m faces kept in `store` (aligned from `photos`,
    drawn by `vae.photolike` with `seed`), and the store's FaceSet."""
    from vae.align import _apply, _invert, face_radius, similarity, target_eyes, warp
    from vae.images import child_surround, load_image, to_gray_float
    from vae.photolike import RENDER, Degradation, drawing_to_photo
    from vae.procedural.faces import generate_faces
    from vae.store import read_store

    faces = read_store(store)
    size = faces.images.shape[1:]
    truth = pd.read_csv(photos / "truth.csv")
    row = {f: i for i, f in enumerate(truth["file"])}
    n_children = truth["child"].nunique()
    drawings = generate_faces(n_identities=n_children, poses_per_emotion=2,
                              size=(RENDER, RENDER), seed=seed).images.astype(np.float64)
    drawn_eyes = target_eyes((RENDER, RENDER))
    goal = target_eyes(size)
    out = {v: [] for v in ("clean", "misframed", "photometric")}
    found = np.stack([faces.ground_truth["left_eye"], faces.ground_truth["right_eye"]], axis=1)
    for k, name in enumerate(np.asarray(faces.ground_truth["file"]).astype(str)):
        t = truth.iloc[row[name]]
        d = Degradation(scale=t.scale, angle=t.angle, centre=(t.centre_x, t.centre_y),
                        light=t.light, light_direction=t.light_direction, gamma=t.gamma,
                        blur=t.blur, noise=t.noise, quality=int(t.quality))
        drawing = drawings[row[name]]
        clean = warp(drawing, similarity(drawn_eyes, goal), size)
        out["clean"].append(clean)
        eyes_in_drawing = _apply(_invert(drawing_to_photo(d)), found[k])
        out["misframed"].append(warp(drawing, similarity(eyes_in_drawing, goal), size))
        photo = to_gray_float(load_image(photos / name)).astype(np.float64)
        true_eyes = np.array([[t.left_eye_x, t.left_eye_y], [t.right_eye_x, t.right_eye_y]])
        out["photometric"].append(warp(photo, similarity(true_eyes, goal), size))
    children = np.asarray(faces.identities)
    images = {
        "clean": np.round(np.clip(out["clean"], 0, 255)).astype(np.uint8),
        "grey": grey_steps(np.array(out["clean"]), children),
        "misframed": np.round(np.clip(out["misframed"], 0, 255)).astype(np.uint8),
        "photometric": grey_steps(np.array(out["photometric"]), children),
        "photo": faces.images,
        "surround": child_surround(faces.images, children, face_radius(size)),
    }
    return images, faces


def write_variants(photos: Path, store: Path, seed: int, out: Path) -> dict[str, Path]:
    """Write one store per variant (children without a neutral face removed) to `out`."""
    from vae.faceset import FaceSet
    from vae.identity import children_without_neutral
    from vae.store import write_store

    paths = {name: out / f"{name}.h5" for name in VARIANTS}
    if all(path.exists() for path in paths.values()):
        return paths
    images, faces = variant_images(photos, store, seed)
    keep = ~np.isin(np.asarray(faces.identities).astype(str), children_without_neutral(faces))
    for name, pixels in images.items():
        if not paths[name].exists():
            write_store(FaceSet(pixels[keep], faces.labels[keep], faces.identities[keep],
                                faces.label_names, f"{faces.source}+{name}",
                                {k: np.asarray(v)[keep] for k, v in faces.ground_truth.items()},
                                dict(faces.attrs, ablation=name)), paths[name])
    return paths


def train(store: Path, model: Path, epochs: int, seed: int, config: str | None) -> dict:
    """Train `store` (one torch thread, `bench_photolike.run_module`) unless `model` exists;
    the verdict's figures."""
    if not model.exists():
        extra = ["--config", config] if config else []
        run_module(["vae.train", "--data", str(store), "--out", str(model), "--epochs",
                    str(epochs), "--seed", str(seed), "--no-progress", *extra])
    return verdict_figures(model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", required=True, help="folder written by vae.photolike")
    p.add_argument("--store", required=True, help="its store built with vae.data build --align")
    p.add_argument("--photo-seed", type=int, default=1, help="the seed vae.photolike drew with")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--config", help="training YAML (default: vae.train's)")
    p.add_argument("--out", default="reports/ablate_photolike")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stores = write_variants(Path(args.photos), Path(args.store), args.photo_seed, out)
    print(f"variant stores written in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            t0 = time.perf_counter()
            figures = train(stores[name], out / f"{name}_s{seed}.pt", args.epochs, seed,
                            args.config)
            rows.append({"variant": name, "seed": seed, **figures,
                         "train_s": round(time.perf_counter() - t0)})
            table = pd.DataFrame(rows)
            table.to_csv(out / "ablation.csv", index=False)
            print(table.to_string(index=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
