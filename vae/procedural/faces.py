"""Procedural FACS child faces: the offline default face set, a stand-in for CAFE.

CAFE (photos of 2-8 year olds posing 7 emotions) is access-restricted, so the default data
is drawn: shaded grayscale children's heads (large eyes low on a round head, full cheeks, a
short nose, a small chin, hair in five styles) whose expressions are FACS action units (AUs)
with continuous intensities in [0, 1]. The seven emotions are Ekman & Friesen's EMFACS
prototypes (`EMOTION_AUS`, `EMOTION_AUS_OPEN`), drawn strongly enough to read at a glance:
a lab would rather have caricatured-clear stimuli than subtle ones.

Like CAFE's studio shots, the faces are frontal, centred and evenly lit; what varies within an
identity besides the expression is only a small pose and lighting jitter (`sample_pose`).
Pixels are bit-identical on every CPU (`vae.procedural.raster`): a store built on any machine hashes the
same. This module draws pixels only: no files, no global random state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass, fields

import numpy as np

from vae.faceset import FaceSet
from vae.labels import EMOTIONS
from vae.procedural.drawing import HAIR_STYLES, draw_faces

GENERATOR_VERSION = "faces-3"

ACTION_UNITS: tuple[str, ...] = (
    "AU1",  # inner brow raiser
    "AU2",  # outer brow raiser
    "AU4",  # brow lowerer
    "AU5",  # upper lid raiser
    "AU6",  # cheek raiser
    "AU7",  # lid tightener
    "AU9",  # nose wrinkler
    "AU10",  # upper lip raiser
    "AU12",  # lip corner puller
    "AU15",  # lip corner depressor
    "AU16",  # lower lip depressor
    "AU17",  # chin raiser
    "AU20",  # lip stretcher
    "AU23",  # lip tightener
    "AU24",  # lip pressor
    "AU25",  # lips part
    "AU26",  # jaw drop
    "AU27",  # mouth stretch
)

EMOTION_AUS: dict[str, dict[str, float]] = {
    "angry": {"AU4": 1.0, "AU5": 0.3, "AU7": 1.0, "AU17": 0.5, "AU23": 0.8, "AU24": 1.0},
    "disgusted": {"AU4": 0.4, "AU7": 0.6, "AU9": 1.0, "AU10": 1.0, "AU15": 0.6, "AU17": 0.7},
    "fearful": {"AU1": 1.0, "AU2": 0.8, "AU4": 0.8, "AU5": 1.0, "AU20": 1.0, "AU25": 1.0, "AU26": 1.0},
    "happy": {"AU6": 1.0, "AU12": 1.0},
    "neutral": {},
    "sad": {"AU1": 1.0, "AU4": 0.7, "AU15": 1.0, "AU17": 0.7},
    "surprised": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU25": 1.0, "AU26": 1.0, "AU27": 0.3},
}
"""EMFACS prototypes, closed-mouth form (fearful and surprised: their only, open form).

AU name -> intensity in [0, 1] (1 = the strongest this generator draws):
    angry      AU4 1.0 + AU5 0.3 + AU7 1.0 + AU17 0.5 + AU23 0.8 + AU24 1.0
               brows down and together in a V over shadowed lids, lips pressed thin, chin
               raised (AU5 only 0.3: wide-open eyes read as surprise to a photo-trained reader)
    disgusted  AU4 0.4 + AU7 0.6 + AU9 1.0 + AU10 1.0 + AU15 0.6 + AU17 0.7
               nose wrinkled, brows lowered, lids narrowed, upper lip raised, corners down,
               chin up: an arched closed mouth
    fearful    AU1 1.0 + AU2 0.8 + AU4 0.8 + AU5 1.0 + AU20 1.0 + AU25 1.0 + AU26 1.0
               brows raised, straight and drawn together, white above the iris, lips
               stretched sideways over an open mouth
    happy      AU6 1.0 + AU12 1.0
               cheeks raised, lower lids pushed up into crescents, crow's feet, corners up
    neutral    no action unit
    sad        AU1 1.0 + AU4 0.7 + AU15 1.0 + AU17 0.7
               oblique brows with their inner ends up, corners down, chin raised into a pout
    surprised  AU1 1.0 + AU2 1.0 + AU5 1.0 + AU25 1.0 + AU26 1.0 + AU27 0.3
               brows high and curved, eyes wide, jaw dropped into a relaxed oval mouth
"""

EMOTION_AUS_OPEN: dict[str, dict[str, float]] = {
    "angry": {"AU4": 1.0, "AU5": 0.8, "AU7": 1.0, "AU10": 0.8, "AU23": 0.8, "AU25": 1.0, "AU26": 0.3},
    "disgusted": {"AU4": 0.4, "AU7": 0.6, "AU9": 1.0, "AU10": 1.0, "AU15": 0.4, "AU16": 1.0,
                  "AU25": 1.0, "AU26": 0.3},
    "fearful": EMOTION_AUS["fearful"],
    "happy": {"AU6": 1.0, "AU12": 1.0, "AU25": 1.0, "AU26": 0.3},
    "neutral": {"AU25": 0.8},
    "sad": {"AU1": 1.0, "AU4": 0.7, "AU15": 1.0, "AU25": 0.8},
    "surprised": EMOTION_AUS["surprised"],
}
"""CAFE's open-mouth variants: angry bares clenched teeth (AU10 0.8 + AU25, no pressing),
disgusted shows both rows of teeth (AU10 + AU16 + AU25 + AU26 0.3, with AU4 0.4 and AU7 0.6),
happy is a toothy smile (AU25 + AU26 0.3), neutral and sad part the lips (AU25 0.8); fearful
and surprised as above."""

_ALWAYS_OPEN = frozenset({"fearful", "surprised"})  # CAFE has them open-mouthed only
_MOUTH_OPENING = ("AU25", "AU26", "AU27")
_STRENGTH = (0.75, 1.0)  # every image scales its prototype by a strength drawn from this range

# Horizontal half-extent (face units) that every frame shows; narrow frames zoom out to keep it.
_FRAME_HALF_WIDTH = 0.58
_FRAME_HALF_HEIGHT = 0.88


@dataclass(frozen=True)
class Identity:
    """One synthetic child's fixed features; lengths in face units (frame height 1.76).

    The head is centred near the origin; heights are v coordinates (up positive), widths are
    distances from the midline. Eyes sit just below the middle of the head, as in children.
    """

    head_width: float  # half-width of the head at the cheeks
    head_length: float  # half-height of the head outline (crown to chin)
    head_centre: float  # v of the head's centre
    chin: float  # 0 broad round chin .. 1 small narrow chin
    cheek_fullness: float  # 0 .. 1, how far the cheeks bulge the outline
    eye_height: float  # v of the eye centres
    eye_spacing: float  # |u| of each eye centre
    eye_size: float  # multiplies eye width, opening and iris (1 = typical)
    iris_darkness: float  # grey level of the iris, 0 black
    brow_height: float  # brow above the eye centre
    brow_thickness: float  # brow height at its inner end
    brow_arch: float  # rise of the brow's middle above its ends
    brow_density: float  # opacity of the brows, 0 .. 1
    nose_length: float  # eye centre to nose tip
    nose_width: float  # half-width of the nose wings
    mouth_height: float  # v of the relaxed lip line
    mouth_width: float  # half-width of the relaxed mouth
    lip_thickness: float  # multiplies both lips (1 = typical)
    skin_tone: float  # grey level of lit skin
    hair_style: int  # index into `HAIR_STYLES`
    hair_darkness: float  # grey level of the hair
    hair_volume: float  # thickness of the hair over the skull
    hair_length: float  # 0 .. 1: long and fringe styles end at the chin .. the shoulders
    hairline: float  # v of the hairline at the middle of the forehead
    fringe: float  # v of the fringe's lower edge (fringe style)
    hair_parting: float  # u of the parting
    hair_seed: float  # phase of the hair's texture and locks
    shirt_tone: float  # grey level of the top


_IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "head_width": (0.49, 0.55),
    "head_length": (0.72, 0.78),
    "head_centre": (0.0, 0.04),
    "chin": (0.0, 1.0),
    "cheek_fullness": (0.3, 1.0),
    "eye_height": (-0.09, -0.04),
    "eye_spacing": (0.20, 0.23),
    "eye_size": (0.93, 1.07),
    "iris_darkness": (0.08, 0.42),
    "brow_height": (0.145, 0.17),
    "brow_thickness": (0.036, 0.05),
    "brow_arch": (0.015, 0.035),
    "brow_density": (0.6, 0.9),
    "nose_length": (0.15, 0.185),
    "nose_width": (0.055, 0.07),
    "mouth_width": (0.12, 0.145),
    "lip_thickness": (0.85, 1.2),
    "skin_tone": (0.36, 0.84),
    "hair_volume": (0.045, 0.075),
    "hair_length": (0.0, 1.0),
    "hair_parting": (-0.16, 0.16),
    "hair_seed": (0.0, 100.0),
    "shirt_tone": (0.2, 0.8),
}
# Hair colour: mostly dark, some brown, some fair (grey levels).
_HAIR_SHADES = ((0.55, (0.04, 0.22)), (0.3, (0.22, 0.45)), (0.15, (0.45, 0.7)))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity: each length uniform over its range, a hair style and hair shade."""
    values = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in _IDENTITY_RANGES.items()}
    style = int(rng.integers(len(HAIR_STYLES)))
    weights = np.array([w for w, _ in _HAIR_SHADES])
    lo, hi = _HAIR_SHADES[int(rng.choice(len(_HAIR_SHADES), p=weights))][1]
    eye_height = values["eye_height"]
    values["mouth_height"] = eye_height - float(rng.uniform(0.32, 0.36))
    values["hairline"] = eye_height + values["brow_height"] + float(rng.uniform(0.30, 0.38))
    values["fringe"] = eye_height + values["brow_height"] + float(rng.uniform(0.21, 0.27))
    return Identity(hair_style=style, hair_darkness=float(rng.uniform(lo, hi)), **values)


@dataclass(frozen=True)
class Pose:
    """Per-image nuisance: head roll and placement, and the light direction.

    roll: radians, counter-clockwise as seen; shift_u, shift_v: face units; scale: head size
    factor; light_azimuth: radians, positive = light from the viewer's right; light_elevation:
    radians above the horizontal. All must stay within +-pi/2.
    """

    roll: float = 0.0
    shift_u: float = 0.0
    shift_v: float = 0.0
    scale: float = 1.0
    light_azimuth: float = 0.0
    light_elevation: float = 0.5


POSE_JITTER: dict[str, tuple[float, float]] = {
    "roll": (-1.0, 1.0),  # degrees
    "shift_u": (-0.01, 0.01),  # face units (a third of a pixel at 64x64)
    "shift_v": (-0.01, 0.01),
    "scale": (0.99, 1.01),
    "light_azimuth": (-8.0, 8.0),  # degrees
    "light_elevation": (25.0, 35.0),  # degrees
}
"""Ranges of `sample_pose` (uniform): a studio set-up with the child centred and frontal.

Sub-pixel on purpose: a shift of 0.02 or a 2 % scale already changes the pixels of a 64x64
face more (mean |change| about 5-6 grey levels) than a smile does (about 1.4), and a model
that takes identity from the neutral face must carry whatever else varies next to the
expression. What remains keeps models from relying on exact pixel positions."""


def sample_pose(rng: np.random.Generator) -> Pose:
    """Draw a small pose and lighting jitter uniformly within `POSE_JITTER`."""
    draw = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in POSE_JITTER.items()}
    for name in ("roll", "light_azimuth", "light_elevation"):
        draw[name] = draw[name] * (np.pi / 180.0)
    return Pose(**draw)


def _au_vector(aus: Mapping[str, float]) -> np.ndarray:
    """AU mapping -> (n_au,) float64 in ACTION_UNITS order; validates names and range."""
    unknown = sorted(set(aus) - set(ACTION_UNITS))
    if unknown:
        raise ValueError(f"unknown action units {unknown}; allowed: {', '.join(ACTION_UNITS)}")
    vec = np.array([float(aus.get(name, 0.0)) for name in ACTION_UNITS], dtype=np.float64)
    bad = [(n, x) for n, x in zip(ACTION_UNITS, vec, strict=True) if not 0.0 <= x <= 1.0]
    if bad:
        raise ValueError(f"action-unit intensities must be in [0, 1], got {bad}")
    return vec


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"size must be (height, width) with both >= 8 pixels, got {size!r}")
    return int(size[0]), int(size[1])


def pixel_coordinates(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Face coordinates of the pixel centres of a frontal, unshifted face.

    Returns (v, u): v (height,) float64 decreasing down the rows, u (width,) float64 increasing
    along the columns, in face units. The frame shows at least v in [-0.88, 0.88] and u in
    [-0.58, 0.58] with square pixels, so a narrow frame shows more height, a wide one more width.
    """
    height, width = _check_size(size)
    scale = min(height / (2.0 * _FRAME_HALF_HEIGHT), width / (2.0 * _FRAME_HALF_WIDTH))
    v = (height / 2.0 - (np.arange(height) + 0.5)) / scale
    u = ((np.arange(width) + 0.5) - width / 2.0) / scale
    return v, u


def render_face(
    identity: Identity,
    aus: Mapping[str, float],
    size: tuple[int, int] = (64, 64),
    pose: Pose | None = None,
) -> np.ndarray:
    """Render one face: (height, width) float64 grey levels in [0, 1] (0 black).

    aus maps AU names from `ACTION_UNITS` to intensities in [0, 1] (missing = 0);
    pose None is frontal, centred, lit from above.
    """
    size = _check_size(size)
    return _render_batch([identity], _au_vector(aus)[None], [pose or Pose()], size)[0]


def sample_set(n_identities: int, poses_per_emotion: int, seed: int
               ) -> tuple[list[Identity], list[int], list[str], np.ndarray, list[bool], list[Pose]]:
    """What `generate_faces` draws before rendering, image by image (each child, then each of
    its images): (identity, label, identity id, AU intensities (n_au,), mouth open, pose) as
    lists of n = n_identities * 7 * poses_per_emotion (the AUs as one (n, n_au) array). The
    random draws of a seed live here alone, so a child's drawn traits can be had without
    rendering (`vae.photolike`)."""
    if n_identities < 1 or poses_per_emotion < 1:
        raise ValueError(
            f"n_identities and poses_per_emotion must be >= 1, got {n_identities} and {poses_per_emotion}"
        )
    rng = np.random.default_rng(seed)
    closed_only = np.isin(ACTION_UNITS, _MOUTH_OPENING)
    people, labels, ids, au_rows, opens, poses = [], [], [], [], [], []
    for person in range(n_identities):
        identity = sample_identity(rng)
        for label, emotion in enumerate(EMOTIONS):
            for k in range(poses_per_emotion):
                is_open = emotion in _ALWAYS_OPEN or k % 2 == 1
                proto = _au_vector((EMOTION_AUS_OPEN if is_open else EMOTION_AUS)[emotion])
                strength = rng.uniform(*_STRENGTH)
                u = rng.random(len(ACTION_UNITS))
                noise = 0.06 * u * u * ~closed_only
                active = proto * strength * rng.uniform(0.9, 1.1, len(ACTION_UNITS))
                au_rows.append(np.clip(np.where(proto > 0, active, noise), 0.0, 1.0))
                people.append(identity)
                labels.append(label)
                ids.append(f"syn{person + 1:04d}")
                opens.append(is_open)
                poses.append(sample_pose(rng))
    return people, labels, ids, np.asarray(au_rows, dtype=np.float64), opens, poses


def generate_faces(
    n_identities: int = 160,
    poses_per_emotion: int = 2,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> FaceSet:
    """The default synthetic face set: every identity poses every emotion poses_per_emotion times.

    Even-numbered poses have the closed-mouth form (`EMOTION_AUS`), odd-numbered ones the
    open-mouth form (`EMOTION_AUS_OPEN`; fearful and surprised are always open). Each image
    scales its prototype by a strength drawn from [0.75, 1] (and each AU by a further
    [0.9, 1.1]), adds weak activity (< 0.06) to the other AUs except those that open the
    mouth, and draws a `sample_pose`. Returns n = n_identities * 7 * poses_per_emotion images
    of `size` (height, width), uint8, identities "syn0001"..., ground_truth "au" (n, n_au)
    float32, "mouth_open" (n,) bool and "pose" (n, 6) float32 (`Pose` fields, angles in
    degrees). Bit-identical for a given seed on every machine.
    """
    size = _check_size(size)
    people, labels, ids, au, opens, poses = sample_set(n_identities, poses_per_emotion, seed)
    chunk = 16  # bounds memory at ~chunk * height * width * 8 bytes per temporary
    images = np.concatenate(
        [
            _render_batch(people[i : i + chunk], au[i : i + chunk], poses[i : i + chunk], size)
            for i in range(0, len(au), chunk)
        ]
    )
    pose_table = np.array([astuple(pose) for pose in poses], dtype=np.float64)
    for name in ("roll", "light_azimuth", "light_elevation"):
        j = [f.name for f in fields(Pose)].index(name)
        pose_table[:, j] *= 180.0 / np.pi
    return FaceSet(
        images=np.floor(images * 255.0 + 0.5).astype(np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        identities=np.asarray(ids),
        label_names=EMOTIONS,
        source="synthetic",
        ground_truth={
            "au": au.astype(np.float32),
            "mouth_open": np.asarray(opens, dtype=bool),
            "pose": pose_table.astype(np.float32),
        },
        attrs={
            "generator": "vae.procedural",
            "generator_version": GENERATOR_VERSION,
            "seed": int(seed),
            "size": list(size),
            "n_identities": int(n_identities),
            "poses_per_emotion": int(poses_per_emotion),
            "action_units": list(ACTION_UNITS),
            "pose_fields": [f.name for f in fields(Pose)],
            "expressions": expression_captions(),
        },
    )


def expression_captions() -> list[str]:
    """A heading, then one line per emotion naming its action units and intensities in the
    closed and open forms, e.g. "happy: AU6 1.0 + AU12 1.0 | open: AU6 1.0 + AU12 1.0 + AU25
    1.0 + AU26 0.3". Stored in the face set's attrs and printed under its contact sheet.
    """

    def join(aus: Mapping[str, float]) -> str:
        return " + ".join(f"{name} {value:.1f}" for name, value in aus.items()) or "no AU"

    low, high = _STRENGTH
    lines = [f"FACS action units (intensity 0-1; each image scales them by {low:g}-{high:g}):"]
    for emotion in EMOTIONS:
        if emotion in _ALWAYS_OPEN:
            lines.append(f"{emotion}: {join(EMOTION_AUS[emotion])} (always open)")
        else:
            lines.append(f"{emotion}: {join(EMOTION_AUS[emotion])} | open: {join(EMOTION_AUS_OPEN[emotion])}")
    return lines


def _columns(items: list, cls) -> dict[str, np.ndarray]:
    """List of dataclass instances -> {field: (faces, 1, 1) float64}."""
    table = np.array([astuple(item) for item in items], dtype=np.float64)
    return {f.name: table[:, j, None, None] for j, f in enumerate(fields(cls))}


def _render_batch(
    identities: list[Identity], au: np.ndarray, poses: list[Pose], size: tuple[int, int]
) -> np.ndarray:
    """(faces, height, width) float64 in [0, 1]; au is (faces, n_au) in ACTION_UNITS order."""
    aus = {name: au[:, j, None, None].astype(np.float64) for j, name in enumerate(ACTION_UNITS)}
    rows, cols = pixel_coordinates(size)
    return draw_faces(_columns(identities, Identity), aus, _columns(poses, Pose), rows, cols)
