"""One image in, the store's form out: grey, cropped to the frame, resized, contrast stretched.

Every source uses these (`vae.sources` for data sets and folders, `vae.align` for photographs
it has framed), so every face in a store went through the same grey conversion and stretch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Percentiles of the stretch in `preprocess`: robust to a few specular or clipped pixels.
STRETCH_PERCENTILES = (1.0, 99.0)
# Percentiles at which `match_tone` matches a child's grey levels to its reference.
TONE_PERCENTILES = np.linspace(1.0, 99.0, 99)
# `child_surround`: a photo's own pixels within the first face-ellipse radius, the child's
# mean frame beyond the second
SURROUND_RADII = (1.15, 1.5)


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


def even_lighting(gray: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """(h, w) float64: `gray` (h, w) of positive intensities lit evenly.

    A photograph lit more from one side shows its face brighter on that side, a difference
    that a decoder must otherwise spend its capacity on. Light multiplies what it falls on, so
    the gradient is a plane in the logarithm of the intensities: a plane fitted by least
    squares to log(gray) over `region` ((h, w) bool; None: the whole frame) has its slopes
    divided out of the whole frame (its mean level is kept, and the per-image stretch of
    `preprocess` follows). Fitted on the face alone (`vae.align.face_region`), the plane is
    the light's, not the hair's or background's. Used on aligned photographs
    (`vae.align.align_face`), never on a data set's ready frames.
    """
    gray = np.asarray(gray, dtype=np.float64)
    region = np.ones(gray.shape, dtype=bool) if region is None else region
    floor = max(float(np.percentile(gray, 99.0)), 1e-6) * 1e-2  # black pixels carry no light
    log = np.log(np.maximum(gray, floor))
    rows, cols = np.mgrid[0 : gray.shape[0], 0 : gray.shape[1]].astype(np.float64)
    rows, cols = rows - rows[region].mean(), cols - cols[region].mean()
    design = np.column_stack([np.ones(int(region.sum())), cols[region], rows[region]])
    (_, slope_x, slope_y), *_ = np.linalg.lstsq(design, log[region], rcond=None)
    return gray * np.exp(-(slope_x * cols + slope_y * rows))


def match_within_child(images: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n, h, w) uint8: each photo's grey levels made its child's.

    images: (n, h, w) uint8 faces (`scale_to_white`); groups: (n,) the child of each.
    Photographs of one child differ in exposure, contrast and in how bright the backdrop came
    out as much as in expression; a child's skin and hair do not. Each photo's grey levels
    (its percentiles over the whole frame) are mapped by a monotone curve onto those of all
    the child's photos pooled, so every photo of a child has the child's common grey levels
    and children keep their own tones. The curve is monotone: features an expression makes
    darker or brighter stay darker or brighter than the rest of the face. (Frames for the
    same face photographed ten times differently, framed at their true eyes: per-pixel spread
    4.1 grey levels of 255 after this step, 14.0 before; `docs/own_faces.md`.)
    """
    groups = np.asarray(groups)
    out = np.empty_like(images)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        pooled = np.percentile(images[members].astype(np.float64), TONE_PERCENTILES)
        for i in members:
            own = np.percentile(images[i].astype(np.float64), TONE_PERCENTILES)
            out[i] = _curve(own, pooled)[images[i]]
    return out


def _curve(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(256,) uint8 lookup table of the monotone curve through 0 -> 0, the points
    source (p,) -> target (p,) grey levels (increasing source; a tie keeps its first point)
    and 255 -> 255, linear between them."""
    xs = np.concatenate([[0.0], source, [255.0]])
    ys = np.maximum.accumulate(np.clip(np.concatenate([[0.0], target, [255.0]]), 0.0, 255.0))
    rising = np.concatenate([[True], np.diff(xs) > 0])
    return np.round(np.interp(np.arange(256), xs[rising], ys[rising])).astype(np.uint8)


def scale_to_white(gray: np.ndarray, white_of: np.ndarray | None = None) -> np.ndarray:
    """(h, w) uint8: `gray` (h, w) of non-negative intensities divided by a white point.

    The white point is the 99th percentile (`STRETCH_PERCENTILES[1]`: the backdrop, or the
    brightest skin) of `white_of` ((h', w'); None: `gray` itself); it becomes 255 and black
    stays 0. Unlike the stretch of `preprocess`, which also maps the 1st percentile to 0,
    this keeps the ratio of the skin to the brightest part of the picture, which is the
    child's skin tone: a dark-skinned child stays dark. An aligned photograph's frame
    (`vae.align.align_face`) is scaled by the white point of its frame before
    `even_lighting`, whose plane, extrapolated to the frame's corners, would otherwise set it.
    A white point of 0 (no light) gives uniform mid-grey 128.
    """
    gray = np.asarray(gray, dtype=np.float64)
    white = float(np.percentile(gray if white_of is None else white_of, STRETCH_PERCENTILES[1]))
    if white <= 1e-6:
        return np.full(gray.shape, 128, dtype=np.uint8)
    return np.round(np.clip(gray / white, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class ToneReference:
    """How the grey levels of a child's face spread about the child's median, by tone.

    At the percentiles `TONE_PERCENTILES` (p,), the face pixels of a child whose median grey
    is m lie at m + slope * m + intercept (grey levels of 255): a line per percentile fitted
    over the children of a reference set (`tone_reference`), so a dark child's spread is that
    of the reference's dark children, not of the average child.
    """

    slope: np.ndarray  # (p,)
    intercept: np.ndarray  # (p,) grey levels

    def quantiles(self, median: float) -> np.ndarray:
        """(p,) grey levels in [0, 255] of a child with this median grey."""
        return np.clip(median + self.slope * median + self.intercept, 0.0, 255.0)


def _face_quantiles(images: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, float]:
    """((p,) percentiles `TONE_PERCENTILES`, median) of the pixels of `images` (n, h, w)
    inside `region` (h, w) bool, pooled."""
    pixels = images[:, region].astype(np.float64)
    return np.percentile(pixels, TONE_PERCENTILES), float(np.median(pixels))


def tone_reference(images: np.ndarray, groups: np.ndarray, region: np.ndarray) -> ToneReference:
    """The `ToneReference` of a face set: images (n, h, w) uint8, groups (n,) the child of
    each, region (h, w) bool the face (`vae.align.face_region`). Needs two or more children
    of different medians (the default faces: `vae.sources.default_tone_reference`)."""
    groups = np.asarray(groups)
    fits = [_face_quantiles(images[groups == g], region) for g in np.unique(groups)]
    quantiles = np.array([q for q, _ in fits])
    medians = np.array([m for _, m in fits])
    if np.ptp(medians) == 0:
        raise ValueError("a tone reference needs children of different skin tones")
    slope, intercept = np.polyfit(medians, quantiles - medians[:, None], 1)
    return ToneReference(slope=slope, intercept=intercept)


def match_tone(images: np.ndarray, groups: np.ndarray, region: np.ndarray,
               reference: ToneReference) -> np.ndarray:
    """(n, h, w) uint8: each child's photos given the reference's grey levels for its tone.

    images: (n, h, w) uint8 faces; groups: (n,) the child of each; region: (h, w) bool, the
    face. A child's photos, pooled, have a distribution of face greys that the camera and
    the light shaped (a flat, dark or bright curve). One monotone curve per child maps the
    pooled face percentiles to the reference's at the child's own median
    (`ToneReference.quantiles`): the median, the child's tone as the photos show it (no tone
    label needed), is kept, the spread and curve about it become the reference's. The same
    curve is applied to every photo of the child (the whole frame, through 0 -> 0 and
    255 -> 255), so what differs between its photos, the expression, is kept.
    """
    groups = np.asarray(groups)
    out = np.empty_like(images)
    for group in np.unique(groups):
        members = groups == group
        quantiles, median = _face_quantiles(images[members], region)
        out[members] = _curve(quantiles, reference.quantiles(median))[images[members]]
    return out


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


def child_surround(images: np.ndarray, groups: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """(n, h, w) uint8: outside the face, each photo given its child's mean frame.

    images: (n, h, w) uint8 aligned faces; groups: (n,) the child of each; radius: (h, w)
    each pixel's distance from the face's centre in face-ellipse units
    (`vae.align.face_radius`). Aligned photographs of one child differ outside the face (the
    backdrop, the light on the hair, what the light step extrapolates to the frame's corners)
    more than clean frames do, and none of it is expression: the model codes whatever differs
    between a child's photos, on a sphere with room for little more than the expression. Each
    frame is kept as it is inside SURROUND_RADII[0] (the face, brows and chin with a margin),
    replaced by the mean of the child's frames beyond SURROUND_RADII[1] (hair, ears,
    backdrop), blended linearly between.
    """
    groups = np.asarray(groups)
    inner, outer = SURROUND_RADII
    own = np.clip((outer - radius) / (outer - inner), 0.0, 1.0)
    out = np.empty_like(images)
    for group in np.unique(groups):
        members = groups == group
        mean = images[members].astype(np.float64).mean(axis=0)
        out[members] = np.round(own * images[members] + (1.0 - own) * mean).astype(np.uint8)
    return out
