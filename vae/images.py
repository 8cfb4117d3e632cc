"""One image in, the store's form out: grey, cropped to the frame, resized, contrast stretched.

Every source uses these (`vae.sources` for data sets and folders, `vae.align` for photographs
it has framed), so every face in a store went through the same grey conversion and stretch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# Percentiles of the stretch in `preprocess`: robust to a few specular or clipped pixels.
STRETCH_PERCENTILES = (1.0, 99.0)


def preprocess(image: Image.Image | np.ndarray, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """One face image -> uint8 (height, width) grayscale, the form every store holds.

    image: a PIL image (any mode) or an array (h, w) grayscale or (h, w, 3|4) RGB(A),
        any numeric dtype (only relative intensities matter: the stretch rescales them).
    size: (height, width) in pixels.
    Steps: grayscale; centre crop to the aspect ratio width/height of `size` (so faces are
    never squashed); Lanczos resize (antialiased); then a per-image percentile stretch that
    maps the 1st percentile to 0 and the 99th to 255, clipping the rest. A flat image (no
    contrast at all) becomes uniform mid-grey 128.
    """
    gray = to_gray_float(image)
    height, width = size
    src_h, src_w = gray.shape
    # Crop whole pixels (a resize box would let the filter reach past the crop).
    crop_w = min(src_w, max(1, round(src_h * width / height)))
    crop_h = min(src_h, max(1, round(src_w * height / width)))
    left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
    cropped = np.ascontiguousarray(gray[top : top + crop_h, left : left + crop_w])
    resized = Image.fromarray(cropped).resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(resized, dtype=np.float32)
    lo, hi = np.percentile(pixels, STRETCH_PERCENTILES)
    if hi - lo < 1e-6 * max(abs(hi), 1.0):
        return np.full((height, width), 128, dtype=np.uint8)
    stretched = np.clip((pixels - lo) / (hi - lo), 0.0, 1.0)
    return np.round(stretched * 255.0).astype(np.uint8)


def to_gray_float(image: Image.Image | np.ndarray) -> np.ndarray:
    """(h, w) float32 luma of a PIL image or array."""
    if isinstance(image, Image.Image):
        # 16/32-bit and float modes would be clipped by convert("L"): read their values as is.
        if image.mode in ("F", "I") or image.mode.startswith("I;"):
            return np.asarray(image, dtype=np.float32)
        return np.asarray(image.convert("L"), dtype=np.float32)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        rgb = array[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(
            f"preprocess needs an image of shape (h, w) or (h, w, 3|4), got {array.shape}"
        )
    return array.astype(np.float32)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode one image file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    # Pillow signals corrupt data with many types (OSError, SyntaxError, struct.error, ...).
    except Exception as err:
        kind = "empty file" if path.stat().st_size == 0 else f"{type(err).__name__}: {err}"
        raise ValueError(f"cannot read image {path}: {kind}") from err
