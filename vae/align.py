"""Photographs -> aligned face crops: find the face, find the eyes, put them at fixed places.

A lab's own photographs are not cropped alike: faces sit at different places, sizes and tilts.
`align_face` makes every face the same frame the procedural faces use, so nothing downstream
knows where a face came from:
1. detect: scikit-image's LBP frontal-face cascade (shipped with scikit-image, no download),
   on the photo shrunk to DETECT_SIDE pixels, upright and, unless the upright search already
   gave a confident eye pair, turned by +-20 and +-40 degrees (a cascade only finds faces
   within about 15 degrees of upright); when that gives no confident pair, the search is
   repeated on the photo with its local contrast equalised (`equalised`), whose faces are
   kept only with a confident eye pair (the cascade misses more faces with dark skin);
2. eyes: in each of the largest boxes, the pair of irises (dark round blobs against the
   whites of the eyes: difference of Gaussians at the iris scale with a surround no wider
   than the eye, and both sides of the blob brighter, so brows, dark on both sides, lose;
   sampled from the full-size photo) whose framed face is most mirror-symmetric, refined
   twice on the levelled face, and kept only if it fits the box (`plausible`: eye line and
   eye distance) and its pupils are dark against the whole face (`eye_darkness`: two dark
   spots in a spoon's highlights are dark only beside the highlights); the pair whose
   framing the cascade itself confirms best wins
   (`locate_face`). Neither step needs the eye as a whole darker than the skin around it:
   on dark skin its whites make it brighter; only the pupil must be dark;
3. frame: a similarity transform (rotation, scale, shift) puts the eyes level at
   `EYE_ROW` of the frame height, `EYE_DISTANCE` frame heights apart, centred left-right;
   when no plausible eye pair is found, the box rule places the eyes where they sit in an
   average detected box (`BOX_EYES`), upright, and the face is kept with method "box";
4. crop, grey, normalise: the frame is resampled (bilinear, antialiased when shrinking) from
   the grey photo, its lighting gradient across the face divided out
   (`vae.images.even_lighting`), then scaled to its white point (`vae.images.scale_to_white`:
   black stays black, so the skin keeps its tone); a build also gives each child's photos
   their common grey levels and the default faces' spread of greys for the child's tone
   (`vae.images.match_within_child`, `vae.images.match_tone`, in `vae.sources`) and, outside
   the face, the mean of the child's frames (`vae.images.child_surround`).
A photo without a face (or with a face too small to show the eyes) is rejected with its reason
(`NoFace`), never silently dropped.

Coordinates: (x, y) = (column, row) in source pixels, y down, the centre of the top-left pixel
at (0, 0). "left eye" is the eye on the image's left (the person's right eye).
This module is pure: arrays in, arrays and records out, no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

# The output frame, as fractions of its height (the procedural faces: eye line 0.54 of the
# height from the top, eyes 0.245 heights apart; `vae.procedural.faces`).
EYE_ROW = 0.54
EYE_DISTANCE = 0.245
# Narrow frames (e.g. CAFE's 64x40) zoom out so that at least this share of a square frame's
# width is shown, as the procedural faces do (1.16 of 1.76 face units).
MIN_WIDTH_SHARE = 0.66

# Box rule: where the eyes sit in a detected box (fractions of its side, x then y), measured on
# hand-marked photographs (scikit-image's astronaut, matplotlib's Grace Hopper); used when no
# plausible eye pair is found.
BOX_EYES = ((0.26, 0.35), (0.69, 0.35))
BOX_EYE_DISTANCE = BOX_EYES[1][0] - BOX_EYES[0][0]

MIN_FACE_PX = 32  # the cascade's smallest face, in pixels of the searched copy
DETECT_SIDE = 384  # photos are searched shrunk to this shorter side (faces are large in portraits)
DETECT_ANGLES = (0.0, 20.0, -20.0, 40.0, -40.0)  # degrees the photo is turned for the cascade
DETECT_NEIGHBOURS = 4  # a face counts when the cascade finds it this often (nearby places, scales)
RETRY_NEIGHBOURS = 2  # ... on the retry with the equalised photo
CONFIDENT_RANK = 0.3  # a pair ranked this well ends the search (test photos: true 0.35..0.67, false < 0.25)
# A pair is plausible only if its eye line is within MAX_ROLL_OFF degrees of the turn at which
# the cascade found the face (the cascade finds faces within about 15 degrees of upright) and
# its eye distance is EYE_SPACING box sides (what `find_eyes` asks of the first pair; refining
# can drift from it, onto the mouth corners or inner eye corners of a small face)
MAX_ROLL_OFF = 25.0
EYE_SPACING = (0.25, 0.65)
# A pair must sit on dark irises: the paler eye darker than all but EYE_DARKNESS of the face
# (`eye_darkness`). Pupils and irises are among the darkest parts of a face whatever the skin
# tone (290 photo-like photos, 224 of them of dark-skinned children: at most 0.20 where framed
# right; the astronaut and Grace Hopper: 0.02; LFW thumbnails framed right: 0.43 at most); two
# dark spots in the highlights on scikit-image's coffee cup's spoon: 0.49; a pair on the
# cheeks of a small LFW face (41): 0.52
EYE_DARKNESS = 0.45
_WORK_SIDE = 100.0  # eyes are searched in the box resampled to this many pixels
_IRIS_SIGMA = 2.0  # DoG inner scale at _WORK_SIDE (an iris is about 8 px across there)
_SURROUND = 2.5  # DoG outer scale, in _IRIS_SIGMA: the whites of the eye, not the cheeks
_SCLERA_WEIGHT = 0.5  # weight of the whites beside the irises in a pair's score
_HEIGHT_WEIGHT = 0.3  # how firmly the eyes are held near the box rule's eye line (brows lose)
_FLANK = 7.0  # where the whites are looked for: this many patch pixels beside the iris
_MARGIN = 0.5  # the searched patch extends this many box sides beyond the box on every side
_SYMMETRY_FRAME = (44, 40)
_SYMMETRY_EYES = np.array([[11.5, 11.5], [27.5, 11.5]])


class NoFace(ValueError):
    """The photo shows no usable face; str(err) is the reason shown in the rejects sheet."""


@dataclass(frozen=True)
class Alignment:
    """Where the face was found in the source photo (source pixels, (x, y)).

    left_eye, right_eye: eye centres used for the frame (found or by the box rule).
    method: "eyes" (found) or "box" (box rule). box: (x, y, side) of the detection in the
    searched copy: the photo shrunk to DETECT_SIDE pixels (shorter side, when larger) and
    turned by `angle` degrees (counter-clockwise) about its centre.
    """

    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    method: str
    box: tuple[float, float, float]
    angle: float

    @property
    def roll(self) -> float:
        """Tilt of the eye line in degrees (positive: the right eye lower in the image)."""
        (x0, y0), (x1, y1) = self.left_eye, self.right_eye
        return float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))

    @property
    def eye_distance(self) -> float:
        """Interocular distance in source pixels."""
        return float(np.hypot(self.right_eye[0] - self.left_eye[0],
                              self.right_eye[1] - self.left_eye[1]))


# ----------------------------------------------------------------------------- geometry


def target_eyes(size: tuple[int, int]) -> np.ndarray:
    """(2, 2) eye centres (x, y) in the output frame of `size` (height, width) pixels."""
    height, width = size
    side = min(float(height), width / MIN_WIDTH_SHARE)  # the square frame's side, in pixels
    half = EYE_DISTANCE * side / 2.0
    y = EYE_ROW * height - 0.5
    cx = width / 2.0 - 0.5
    return np.array([[cx - half, y], [cx + half, y]])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) matrix A of the similarity mapping the two points src (2, 2) onto dst (2, 2):
    dst = A[:, :2] @ src + A[:, 2] (rotation, uniform scale, shift; no reflection)."""
    s, d = src[1] - src[0], dst[1] - dst[0]
    ratio = complex(*d) / complex(*s)  # rotation and scale as one complex number
    a, b = ratio.real, ratio.imag
    linear = np.array([[a, -b], [b, a]])
    return np.column_stack([linear, dst[0] - linear @ src[0]])


def _rotation_about(centre: np.ndarray, degrees: float) -> np.ndarray:
    """(2, 3) map of a point of the photo to the copy turned counter-clockwise (as seen on
    screen, y down) by `degrees` about `centre` (x, y)."""
    t = np.radians(degrees)
    linear = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    return np.column_stack([linear, centre - linear @ centre])


def _invert(affine: np.ndarray) -> np.ndarray:
    linear = np.linalg.inv(affine[:, :2])
    return np.column_stack([linear, -linear @ affine[:, 2]])


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


def warp(gray: np.ndarray, affine: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(height, width) float image: output pixel p samples `gray` at inverse(affine)(p),
    bilinear, edge pixels repeated outside the photo. When the map shrinks the photo, the
    photo is first blurred (Gaussian, sigma = (1 / scale - 1) / 2 source pixels) so fine
    texture does not alias into the small frame; only the part of the photo sampled is
    blurred."""
    inverse = _invert(affine)
    rows, cols = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float64)
    x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
    y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    if scale < 0.99:
        sigma = 0.5 * (1.0 / scale - 1.0)
        pad = int(np.ceil(4 * sigma)) + 2
        top = int(np.clip(np.floor(y.min()) - pad, 0, gray.shape[0] - 1))
        left = int(np.clip(np.floor(x.min()) - pad, 0, gray.shape[1] - 1))
        bottom = int(np.clip(np.ceil(y.max()) + pad + 1, top + 1, gray.shape[0]))
        right = int(np.clip(np.ceil(x.max()) + pad + 1, left + 1, gray.shape[1]))
        gray = ndi.gaussian_filter(gray[top:bottom, left:right], sigma)
        x, y = x - left, y - top
    return ndi.map_coordinates(gray, [y, x], order=1, mode="nearest")


# ----------------------------------------------------------------------------- detection


@lru_cache(maxsize=1)
def _cascade():
    from skimage.data import lbp_frontal_face_cascade_filename
    from skimage.feature import Cascade

    return Cascade(lbp_frontal_face_cascade_filename())


def face_boxes(gray: np.ndarray, neighbours: int = DETECT_NEIGHBOURS
               ) -> list[tuple[float, float, float]]:
    """Face boxes (x, y, side) the cascade finds in a grey image (h, w), largest first.

    x, y: the box's top-left pixel; side in pixels. The cascade merges its neighbouring hits
    itself and keeps a face found at least `neighbours` times (at nearby places and scales).
    """
    biggest = int(min(gray.shape))
    if biggest < MIN_FACE_PX:
        return []
    found = _cascade().detect_multi_scale(
        img=gray, scale_factor=1.15, step_ratio=1, min_size=(MIN_FACE_PX, MIN_FACE_PX),
        max_size=(biggest, biggest), min_neighbor_number=neighbours,
    )
    boxes = [(float(d["c"]), float(d["r"]), float(d["width"])) for d in found]
    return sorted(boxes, key=lambda b: -b[2])


def _shrunk(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the photo shrunk to DETECT_SIDE pixels on its shorter side when larger, the (2, 3) map
    from the photo to it): the cascade needs no more, and searching is faster."""
    k = min(1.0, DETECT_SIDE / min(gray.shape))
    to_small = np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]])
    if k == 1.0:
        return gray, to_small
    size = (max(1, round(gray.shape[0] * k)), max(1, round(gray.shape[1] * k)))
    return warp(gray, to_small, size), to_small


# ----------------------------------------------------------------------------- eyes


def _dog(patch: np.ndarray) -> np.ndarray:
    """Difference of Gaussians at the iris scale, in units of the patch's contrast: negative
    on dark round blobs (irises, pupils, nostrils, mouth corners)."""
    surround = ndi.gaussian_filter(patch, _SURROUND * _IRIS_SIGMA)
    dog = ndi.gaussian_filter(patch, _IRIS_SIGMA) - surround
    return dog / max(float(patch.std()), 1e-6)


def _dark_blobs(dog: np.ndarray, n: int = 8) -> np.ndarray:
    """(m, 3) rows (x, y, depth) of the m <= n deepest dark blobs of `dog` in the upper face
    (rows 0.15..0.62, columns 0.08..0.92 of the box), in patch pixels."""
    minima = (dog == ndi.minimum_filter(dog, size=7)) & (dog < 0)
    o, w = _WORK_SIDE * _MARGIN, _WORK_SIDE
    band = np.zeros_like(minima)
    band[int(o + 0.15 * w) : int(o + 0.62 * w), int(o + 0.08 * w) : int(o + 0.92 * w)] = True
    ys, xs = np.nonzero(minima & band)
    order = np.argsort(dog[ys, xs])[:n]
    return np.column_stack([xs[order], ys[order], -dog[ys[order], xs[order]]]).astype(np.float64)


def _flanks(patch: np.ndarray, blobs: np.ndarray) -> np.ndarray:
    """(m,) how much brighter than each blob's centre both its sides are (the whites of an eye
    beside the iris), in units of the face's contrast: high for an open eye whatever the skin
    tone, about 0 for a brow (dark on both sides)."""
    smooth = ndi.gaussian_filter(patch, 1.0)
    o, w = int(_WORK_SIDE * _MARGIN), int(_WORK_SIDE)
    scale = max(float(smooth[o : o + w, o : o + w].std()), 1e-6)
    xs, ys = blobs[:, 0].astype(int), blobs[:, 1].astype(int)
    d = int(_FLANK)
    sides = np.minimum(smooth[ys, xs - d], smooth[ys, xs + d])
    return (sides - smooth[ys, xs]) / scale


def _symmetry(patch: np.ndarray, left: np.ndarray, right: np.ndarray) -> float:
    """Correlation (-1..1) of the face framed by this eye pair with its mirror image.

    The frame is tight (0.75 eye distances beside and above the eyes, 2 below): brows, eyes,
    nose and mouth, little hair or background, which need not be symmetric.
    """
    face = warp(patch, similarity(np.stack([left, right]), _SYMMETRY_EYES), _SYMMETRY_FRAME)
    face = face - ndi.gaussian_filter(face, 3.0)  # features, not the shading across the face
    mirror = face[:, ::-1]
    a, b = face - face.mean(), mirror - mirror.mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))


def find_eyes(patch: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(eye centres (2, 2) (x, y) in patch pixels, the pair's score), or None.

    The patch is the detected box resampled to _WORK_SIDE pixels with a margin of _MARGIN box
    sides on every side.

    Candidate pairs of dark blobs must be 0.25..0.65 box sides apart, tilted at most 30
    degrees, with their midpoint in the middle half of the box; the pair whose framed face is
    most mirror-symmetric wins (plus a little of the blobs' darkness and of the whites beside
    them, `_flanks`, minus penalties for an eye distance and an eye line far from the box
    rule's: squinting eyes show no whites, and the brows above them are as symmetric), and
    only if that face is symmetric at all (correlation >= 0.3). Each eye is then placed at sub-pixel
    precision by a parabola through the DoG around its minimum.
    """
    dog = _dog(patch)
    blobs = _dark_blobs(dog)
    o, w = _WORK_SIDE * _MARGIN, _WORK_SIDE
    flank = _flanks(patch, blobs)
    best, best_score = None, -np.inf
    for i, j in ((i, j) for i in range(len(blobs)) for j in range(len(blobs))):
        left, right = blobs[i, :2], blobs[j, :2]
        dx, dy = right - left
        dist = np.hypot(dx, dy)
        if dx <= 0 or not 0.25 * w <= dist <= 0.65 * w or abs(dy) > np.tan(np.radians(30)) * dx:
            continue
        if not o + 0.25 * w <= (left[0] + right[0]) / 2.0 <= o + 0.75 * w:
            continue
        sym = _symmetry(patch, left, right)
        spacing = (dist / w - BOX_EYE_DISTANCE) / 0.08
        height = ((left[1] + right[1]) / 2.0 - o - BOX_EYES[0][1] * w) / w / 0.08
        score = (sym + 0.1 * min(blobs[i, 2], blobs[j, 2]) - 0.1 * spacing * spacing
                 - _HEIGHT_WEIGHT * height * height + _SCLERA_WEIGHT * min(flank[i], flank[j]))
        if sym >= 0.3 and score > best_score:
            best, best_score = (left, right), score
    if best is None:
        return None
    return np.stack([_subpixel(dog, best[0]), _subpixel(dog, best[1])]), float(best_score)


def _subpixel(values: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Refine an integer extremum (x, y) of `values` by a parabola along each axis."""
    x, y = int(point[0]), int(point[1])
    out = point.astype(np.float64).copy()
    for axis, (a, b, c) in enumerate((
        (values[y, x - 1], values[y, x], values[y, x + 1]),
        (values[y - 1, x], values[y, x], values[y + 1, x]),
    )):
        curvature = a - 2 * b + c
        if curvature != 0:
            out[axis] += float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5))
    return out


# ----------------------------------------------------------------------------- the pipeline


def locate_face(gray: np.ndarray) -> Alignment:
    """Find the face and its eyes in a grey photo (h, w) float. Raises NoFace.

    The photo is searched upright and turned by each angle of `DETECT_ANGLES` (a cascade finds
    faces within about 15 degrees of upright; the turned copies also find false faces, in
    hair, clothes or background). In each copy's three largest boxes the eyes are searched
    first in the box, then twice more in a patch levelled and scaled by the eyes just found
    (where the box rule expects them), which corrects a pair picked on a tilted face.
    The pair ranked best wins: its `find_eyes` score (mostly the mirror symmetry of the face
    it frames) minus its `_frame_error` (how far the cascade's box for the face it frames is
    from where a real pair would put it). A pair in whose frame the cascade finds no face at
    all is not a face's eyes (a zoomed-in or turned frame of a small face: LFW 7, 21, 33, 39,
    98) and is dropped; its box is then framed by the box rule. The search stops at the first
    angle that gives a pair ranked at least CONFIDENT_RANK.

    When the photo as it is gives no such pair, the search is repeated on the photo with its
    local contrast equalised (`equalised`: the cascade misses faces whose features are faint
    against the skin, most often dark skin in uneven light); a face found only there is kept
    only with an eye pair ranked at least CONFIDENT_RANK (its frame checked by the cascade on
    the equalised face), never by the box rule. When no box shows an eye pair, the largest box
    of the most upright search of the photo as it is is kept by the box rule (method "box").
    """
    best, fallback = _search(gray, _as_is, DETECT_NEIGHBOURS)
    if best is None or best[0] < CONFIDENT_RANK:
        retry, _ = _search(gray, equalised, RETRY_NEIGHBOURS)
        if retry is not None and retry[0] >= CONFIDENT_RANK:
            best = retry
    if best is not None:
        return best[1]
    if fallback is None:
        raise NoFace(
            f"no face found (scikit-image frontal-face cascade, photo as it is and with its "
            f"local contrast equalised, turned by {', '.join(f'{a:g}' for a in DETECT_ANGLES)} "
            f"degrees; faces must be frontal and at least {MIN_FACE_PX / DETECT_SIDE:.0%} of "
            f"the photo's shorter side)"
        )
    box, angle, to_copy = fallback
    left, right = box_rule(box, to_copy)
    return Alignment(_point(left), _point(right), "box", box, angle)


def _as_is(gray: np.ndarray) -> np.ndarray:
    return gray


def equalised(gray: np.ndarray) -> np.ndarray:
    """(h, w) float in [0, 1]: `gray` with its local contrast equalised (CLAHE over tiles of
    an eighth of the image, clip limit 0.02), what the cascade searches on a retry."""
    from skimage.exposure import equalize_adapthist

    lo, hi = float(gray.min()), float(gray.max())
    return equalize_adapthist((gray - lo) / max(hi - lo, 1e-6), clip_limit=0.02)


def _search(gray: np.ndarray, look, neighbours: int):
    """One search of the photo as `look` (image -> image) shows it to the cascade (a face
    found at least `neighbours` times):
    ((rank, Alignment) of the best eye pair or None, (box, angle, to_copy) of the first box
    without an eye pair or None). Eyes are searched in `gray` itself."""
    small, to_small = _shrunk(gray)
    small = look(small)
    centre = np.array([small.shape[1] - 1, small.shape[0] - 1], dtype=np.float64) / 2.0
    best, fallback = None, None
    for angle in DETECT_ANGLES:
        turn = _rotation_about(centre, angle)
        copy = small if angle == 0.0 else warp(small, turn, small.shape)
        to_copy = np.column_stack([turn[:, :2] @ to_small[:, :2],
                                   turn[:, :2] @ to_small[:, 2] + turn[:, 2]])
        for box in face_boxes(copy, neighbours)[:3]:
            photo_to_patch = _box_patch(box, to_copy)
            found = _eyes_in_patch(gray, photo_to_patch)
            if found is not None:
                eyes, score = _refine(gray, *found)
                dark = eye_darkness(gray, eyes) <= EYE_DARKNESS
                found = found if dark and plausible(eyes, box, angle, to_copy) else None
            if found is not None:
                rank = score - _frame_error(gray, eyes, look, neighbours)
                found = found if np.isfinite(rank) else None  # no face in the pair's frame
            if found is not None:
                if best is None or rank > best[0]:
                    best = (rank, Alignment(*map(_point, eyes), "eyes", box, angle))
            elif fallback is None:
                fallback = (box, angle, to_copy)
        if best is not None and best[0] >= CONFIDENT_RANK:
            break  # most photos: upright, clear eyes; the turned searches would only cost time
    return best, fallback


def plausible(eyes: np.ndarray, box: tuple[float, float, float], angle: float,
              to_copy: np.ndarray) -> bool:
    """Whether an eye pair (2, 2) (x, y) photo pixels fits the box (x, y, side) the cascade
    found in the copy turned by `angle` degrees (`to_copy`: (2, 3) photo -> copy): its eye line
    within MAX_ROLL_OFF degrees of `angle`, its eye distance EYE_SPACING box sides. A pair that
    does not is not a face's eyes (a face turned 45 degrees framed upright, a cup's two
    highlights, the mouth corners of a small face); the box rule frames the face instead."""
    (x0, y0), (x1, y1) = eyes
    roll = float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))
    side = box[2] / np.sqrt(abs(np.linalg.det(to_copy[:, :2])))  # box side in photo pixels
    spacing = float(np.hypot(x1 - x0, y1 - y0)) / side
    return abs(roll - angle) <= MAX_ROLL_OFF and EYE_SPACING[0] <= spacing <= EYE_SPACING[1]


def eye_darkness(gray: np.ndarray, eyes: np.ndarray) -> float:
    """The share (0..1) of the face darker than the paler of the two eyes (2, 2) (x, y photo
    pixels): near 0 on a face's irises, about half on spots that are dark only against a
    highlight (a spoon's) or on the cheeks. The face is levelled and scaled by the eyes as the
    box rule expects it (the box, brows to chin and cheek to cheek, `_WORK_SIDE` pixels) and
    smoothed a little (1 pixel, an iris is about 8 across)."""
    n = _patch_side()
    patch = ndi.gaussian_filter(warp(gray, similarity(eyes, _box_eyes()), (n, n)), 1.0)
    o, w = _WORK_SIDE * _MARGIN, _WORK_SIDE
    face = patch[int(o + 0.15 * w) : int(o + 0.95 * w), int(o + 0.1 * w) : int(o + 0.9 * w)]
    paler = max(patch[int(round(y)), int(round(x))] for x, y in _box_eyes())
    return float(np.mean(face < paler))


def box_rule(box: tuple[float, float, float], to_copy: np.ndarray | None = None) -> np.ndarray:
    """(2, 2) eyes (x, y) in photo pixels that the box rule gives a box (x, y, side) found in
    the photo (to_copy None) or in a copy turned by the (2, 3) map `to_copy`."""
    to_copy = np.eye(2, 3) if to_copy is None else to_copy
    return _apply(_invert(_box_patch(box, to_copy)), _box_eyes())


def _point(xy: np.ndarray) -> tuple[float, float]:
    return float(xy[0]), float(xy[1])


def _patch_side() -> int:
    return int(round(_WORK_SIDE * (1 + 2 * _MARGIN)))


def _box_eyes() -> np.ndarray:
    """(2, 2) where the box rule puts the eyes, in patch pixels."""
    return _WORK_SIDE * _MARGIN + np.array(BOX_EYES) * _WORK_SIDE


def _box_patch(box: tuple[float, float, float], to_copy: np.ndarray) -> np.ndarray:
    """(2, 3) map photo -> the patch of a box (x, y, side) found in a turned copy."""
    x, y, side = box
    k, o = _WORK_SIDE / side, _WORK_SIDE * _MARGIN
    to_patch = np.array([[k, 0.0, o - k * x], [0.0, k, o - k * y]])
    return np.column_stack([to_patch[:, :2] @ to_copy[:, :2],
                            to_patch[:, :2] @ to_copy[:, 2] + to_patch[:, 2]])


def _eyes_in_patch(gray: np.ndarray, photo_to_patch: np.ndarray
                   ) -> tuple[np.ndarray, float] | None:
    """(eyes (2, 2) in photo pixels, score) found in the patch, or None."""
    n = _patch_side()
    found = find_eyes(warp(gray, photo_to_patch, (n, n)))
    if found is None:
        return None
    return _apply(_invert(photo_to_patch), found[0]), found[1]


def _frame_error(gray: np.ndarray, eyes: np.ndarray, look, neighbours: int) -> float:
    """How far the cascade's own box disagrees with the face framed by `eyes` (inf: no face),
    searched as in `_search` (`look`, `neighbours`).

    The face is levelled and scaled so that a real face's box would lie where the box rule
    expects it; the error is the distance of the nearest detected box's centre from there plus
    |log| of its size ratio, both in box sides. A pair on a real face scores near 0; a pair on
    the mouth corners or nostrils frames the face shifted or shrunk, and scores high.
    """
    n = _patch_side()
    patch = look(warp(gray, similarity(eyes, _box_eyes()), (n, n)))
    found = _cascade().detect_multi_scale(
        img=patch, scale_factor=1.1, step_ratio=1, min_size=(50, 50), max_size=(n, n),
        min_neighbor_number=neighbours)
    centre, w = _WORK_SIDE * _MARGIN + _WORK_SIDE / 2.0, _WORK_SIDE
    errors = [
        np.hypot(d["c"] + d["width"] / 2 - centre, d["r"] + d["height"] / 2 - centre) / w
        + abs(np.log(d["width"] / w))
        for d in found
    ]
    return float(min(errors, default=np.inf))


def _refine(gray: np.ndarray, eyes: np.ndarray, score: float) -> tuple[np.ndarray, float]:
    for _ in range(2):
        again = _eyes_in_patch(gray, similarity(eyes, _box_eyes()))
        if again is None:
            break
        eyes, score = again
    return eyes, score


def crop_face(gray: np.ndarray, alignment: Alignment, size: tuple[int, int]) -> np.ndarray:
    """(height, width) float frame of the face: eyes level at their target places."""
    src = np.array([alignment.left_eye, alignment.right_eye])
    return warp(gray, similarity(src, target_eyes(size)), size)


def align_face(image, size: tuple[int, int] = (64, 64)) -> tuple[np.ndarray, Alignment]:
    """One photograph -> (uint8 (height, width) aligned grey face, its Alignment).

    image: a PIL image or an array (h, w) grey or (h, w, 3|4) RGB(A).
    The frame is lit evenly (`vae.images.even_lighting`: the lighting gradient across the face,
    `face_region`, divided out) and scaled to its white point (`vae.images.scale_to_white`).
    Raises NoFace (a ValueError) with the reason when no usable face is found.
    """
    from vae.images import even_lighting, scale_to_white, to_gray_float

    gray = to_gray_float(image).astype(np.float64)
    alignment = locate_face(gray)
    crop = crop_face(gray, alignment, size)
    return scale_to_white(even_lighting(crop, face_region(size)), white_of=crop), alignment


def face_region(size: tuple[int, int]) -> np.ndarray:
    """(height, width) bool: the face in the frame, an ellipse from the brows to the chin and
    cheek to cheek (centre 0.6 eye distances below the eye line, half-axes 1.0 and 1.25 eye
    distances), where `vae.images.even_lighting` measures the light."""
    return face_radius(size) <= 1.0


def face_radius(size: tuple[int, int]) -> np.ndarray:
    """(height, width) float: each pixel's distance from the face's centre in units of the
    `face_region` ellipse (1 on its edge; `vae.images.child_surround`)."""
    eyes = target_eyes(size)
    spacing = eyes[1, 0] - eyes[0, 0]
    rows, cols = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float64)
    u = (cols - eyes[:, 0].mean()) / spacing
    v = (rows - eyes[0, 1] - 0.6 * spacing) / (1.25 * spacing)
    return np.sqrt(u * u + v * v)
