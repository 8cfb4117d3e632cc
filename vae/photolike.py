"""The default faces made to differ the way photographs do, written as a folder of JPEG photos.

A lab's photographs are not the store's clean frames: the face sits anywhere in a larger picture,
at its own size and tilt, lit from one side, a little blurred, noisy and JPEG-compressed. This
module draws the default children (`vae.procedural`) at photo resolution and gives every picture
such differences, so the whole own-photo path can be tried on faces whose truth is known:
folder -> `vae.data build --source folder --align` (detect, align, crop) -> `vae.train` -> verdict.

    python -m vae.photolike --out data/photolike --n-identities 48 [--seed 1]
    python -m vae.data build --source folder --root data/photolike --align --out data/photolike.h5
    python -m vae.train --data data/photolike.h5 --out reports/models/photolike.pt

The folder is laid out as a lab's would be (`<emotion>/<child>_<k>.jpg`, k = 1 the closed-mouth
pose, so each child's first neutral photo is its reference face). `truth.csv` beside the photos
gives, per file, the child's skin tone, every drawn difference and where the eyes are in the
photo (pixels, (x, y)), so the alignment can be checked against them, per skin tone too
(`benchmarks/bench_photolike.py`).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

RENDER = 128  # the faces are drawn at RENDER x RENDER pixels, then placed in the photo
PHOTO = (288, 256)  # (height, width) of every photo, pixels
# Ranges of the differences, drawn uniformly (chosen to cover a portrait session's spread; the
# largest tilts and scales the aligner was tested on are wider: tests/vae/test_align.py)
SCALE = (0.8, 1.3)  # face size against the RENDER drawing
ANGLE = (-12.0, 12.0)  # head tilt in the picture, degrees (counter-clockwise)
LIGHT = (0.0, 0.45)  # strength of a linear lighting gradient across the photo (0: flat)
GAMMA = (0.75, 1.35)  # exposure curve
BLUR = (0.0, 1.4)  # Gaussian blur sigma, photo pixels
NOISE = (1.0, 6.0)  # sensor noise sigma, grey levels of 255
QUALITY = (45, 92)  # JPEG quality
FEATHER = 0.12  # the drawing's outer share that fades into the backdrop


@dataclass(frozen=True)
class Degradation:
    """How one photo differs from a clean frame (ranges above). centre: (x, y) photo pixels of
    the drawing's centre; light_direction: radians, the side the light comes from."""

    scale: float
    angle: float
    centre: tuple[float, float]
    light: float
    light_direction: float
    gamma: float
    blur: float
    noise: float
    quality: int


def sample_degradation(rng: np.random.Generator) -> Degradation:
    """One photo's differences, drawn from the ranges above with `rng`."""
    scale = rng.uniform(*SCALE)
    half = RENDER * scale / 2 * 1.15  # the drawing's half-diagonal reach, tilted a little
    height, width = PHOTO
    return Degradation(
        scale=float(scale),
        angle=float(rng.uniform(*ANGLE)),
        centre=(float(rng.uniform(half, width - half)), float(rng.uniform(half, height - half))),
        light=float(rng.uniform(*LIGHT)),
        light_direction=float(rng.uniform(0.0, 2.0 * np.pi)),
        gamma=float(rng.uniform(*GAMMA)),
        blur=float(rng.uniform(*BLUR)),
        noise=float(rng.uniform(*NOISE)),
        quality=int(rng.integers(QUALITY[0], QUALITY[1] + 1)),
    )


def drawing_to_photo(d: Degradation) -> np.ndarray:
    """(2, 3) affine map of drawing pixels (x, y) to photo pixels: scale and turn about the
    drawing's centre, which lands on `d.centre`."""
    t = np.radians(d.angle)
    rot = d.scale * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # y points down
    c = np.array([RENDER / 2 - 0.5, RENDER / 2 - 0.5])
    return np.hstack([rot, (np.asarray(d.centre) - rot @ c)[:, None]])


def photograph(drawing: np.ndarray, d: Degradation, rng: np.random.Generator) -> bytes:
    """A JPEG photo (`PHOTO` pixels, grey) of `drawing` (RENDER, RENDER) float in [0, 1] with the
    differences `d`; the noise is drawn with `rng`."""
    if drawing.shape != (RENDER, RENDER):
        raise ValueError(f"drawing must be {RENDER}x{RENDER}, got {drawing.shape}")
    from PIL import Image

    forward = np.vstack([drawing_to_photo(d), [0.0, 0.0, 1.0]])
    back = np.linalg.inv(forward)  # photo (x, y) -> drawing (x, y); ndimage wants (row, col)
    matrix = back[:2, :2][::-1, ::-1]
    offset = back[:2, 2][::-1]
    backdrop = float(np.median(drawing[0]))  # the drawing's own backdrop, continued
    placed = ndi.affine_transform(drawing, matrix, offset, output_shape=PHOTO, order=1,
                                  mode="constant", cval=backdrop)
    # the drawing's square edge fades into the backdrop (a photo has no frame round the head)
    ramp = np.clip(np.minimum(np.arange(RENDER), np.arange(RENDER)[::-1]) / (FEATHER * RENDER),
                   0.0, 1.0)
    alpha = ndi.affine_transform(np.minimum.outer(ramp, ramp), matrix, offset,
                                 output_shape=PHOTO, order=1, mode="constant", cval=0.0)
    photo = alpha * placed + (1.0 - alpha) * backdrop
    rows, cols = np.mgrid[0 : PHOTO[0], 0 : PHOTO[1]]
    across = ((cols - PHOTO[1] / 2) * np.cos(d.light_direction)
              + (rows - PHOTO[0] / 2) * np.sin(d.light_direction)) / (max(PHOTO) / 2)
    photo = np.clip(photo * (1.0 + d.light * across), 0.0, 1.0) ** d.gamma
    if d.blur > 0:
        photo = ndi.gaussian_filter(photo, d.blur)
    photo = photo * 255.0 + rng.normal(0.0, d.noise, PHOTO)
    out = io.BytesIO()
    Image.fromarray(np.clip(np.round(photo), 0, 255).astype(np.uint8)).save(
        out, format="JPEG", quality=d.quality)
    return out.getvalue()


def eyes_in_photo(d: Degradation, eyes: np.ndarray) -> np.ndarray:
    """(2, 2) photo pixels (x, y) of drawing points `eyes` (2, 2) (x, y)."""
    return eyes @ drawing_to_photo(d)[:, :2].T + drawing_to_photo(d)[:, 2]


def skin_tones(n_identities: int, seed: int, poses_per_emotion: int = 2) -> np.ndarray:
    """(n_identities,) each default child's skin tone (grey level of lit skin, 0..1), as
    `generate_faces(n_identities, poses_per_emotion, seed=seed)` draws it (`sample_set`, without
    rendering)."""
    from vae.procedural.faces import sample_set

    people = sample_set(n_identities, poses_per_emotion, seed)[0]
    return np.array([identity.skin_tone for identity in people[::len(people) // n_identities]])


def write_folder(out: Path, n_identities: int, seed: int = 1) -> int:
    """Draw the default set's first `n_identities` children (`generate_faces` with `seed`, two
    poses per emotion) at RENDER pixels and write them as photos `out/<emotion>/<child>_<k>.jpg`
    with `out/truth.csv` (every difference and the true eyes in the photo). Returns the number of
    photos. The true eyes are where the store's clean frames have them (`vae.align.target_eyes`:
    the drawings' own pose jitter, under a degree and a third of a pixel, and each child's eye
    spacing are left in the error)."""
    import pandas as pd

    from vae.align import target_eyes
    from vae.procedural.faces import generate_faces

    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: give a new folder for the photos")
    faces = generate_faces(n_identities=n_identities, poses_per_emotion=2,
                           size=(RENDER, RENDER), seed=seed)
    tone = dict(zip((f"syn{i + 1:04d}" for i in range(n_identities)),
                    skin_tones(n_identities, seed), strict=True))
    rng = np.random.default_rng([seed, 23])
    rows, count = [], {}
    for i, image in enumerate(faces.images):
        emotion = faces.label_names[faces.labels[i]]
        child = str(faces.identities[i])
        count[(child, emotion)] = k = count.get((child, emotion), 0) + 1
        d = sample_degradation(rng)
        path = out / emotion / f"{child}_{k}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photograph(image / 255.0, d, rng))
        eyes = eyes_in_photo(d, target_eyes((RENDER, RENDER)))
        rows.append({"file": f"{emotion}/{path.name}", "child": child, "emotion": emotion,
                     "skin_tone": tone[child],
                     **{k: v for k, v in asdict(d).items() if k != "centre"},
                     "centre_x": d.centre[0], "centre_y": d.centre[1],
                     "left_eye_x": eyes[0, 0], "left_eye_y": eyes[0, 1],
                     "right_eye_x": eyes[1, 0], "right_eye_y": eyes[1, 1]})
    pd.DataFrame(rows).to_csv(out / "truth.csv", index=False)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vae.photolike", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="a NEW (or empty) folder for the photos")
    p.add_argument("--n-identities", type=int, default=48, help="children (default: 48)")
    p.add_argument("--seed", type=int, default=1, help="faces and differences (default: 1)")
    args = p.parse_args(argv)
    if args.n_identities < 2:
        p.error(f"--n-identities must be at least 2 (some are held out), got {args.n_identities}")
    t0 = time.perf_counter()
    try:
        n = write_folder(Path(args.out), args.n_identities, args.seed)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {n} photos of {args.n_identities} children to {args.out} in "
          f"{time.perf_counter() - t0:.1f} s (truth: {Path(args.out) / 'truth.csv'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
