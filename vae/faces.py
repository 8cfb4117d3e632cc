"""Procedural FACS faces: the offline default face set, a stand-in for CAFE.

A face is defined in normalised coordinates (u to the viewer's right, v up, origin at the
centre of the head; see `pixel_coordinates` for the frame) and rasterised analytically at any
(height, width): every edge is a signed distance turned into a one-pixel coverage ramp, so
images are anti-aliased without supersampling, and the whole batch is one set of numpy
operations over (faces, rows, columns). Expressions are FACS action units (AUs) with
continuous intensities in [0, 1]; the seven emotions are the standard EMFACS prototypes.
This module draws pixels only: no files, no global random state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass, fields

import numpy as np

from vae.faceset import FaceSet
from vae.labels import EMOTIONS

GENERATOR_VERSION = "faces-1"

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
    "AU20",  # lip stretcher
    "AU23",  # lip tightener
    "AU25",  # lips part
    "AU26",  # jaw drop
)

EMOTION_AUS: dict[str, dict[str, float]] = {
    "angry": {"AU4": 1.0, "AU5": 1.0, "AU7": 1.0, "AU23": 1.0},
    "disgusted": {"AU9": 1.0, "AU10": 1.0, "AU15": 0.4},
    "fearful": {"AU1": 1.0, "AU2": 1.0, "AU4": 1.0, "AU5": 1.0, "AU20": 1.0, "AU26": 1.0},
    "happy": {"AU6": 1.0, "AU12": 1.0},
    "neutral": {},
    "sad": {"AU1": 1.0, "AU4": 1.0, "AU15": 1.0},
    "surprised": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU26": 1.0},
}
"""EMFACS prototypes (closed-mouth form), AU name -> intensity in [0, 1]."""

# Added to a prototype for CAFE's open-mouth variant; fearful and surprised are always open.
_OPEN_MOUTH_AUS: dict[str, dict[str, float]] = {
    "angry": {"AU10": 0.6, "AU25": 1.0},
    "disgusted": {"AU25": 1.0},
    "fearful": {},
    "happy": {"AU25": 1.0, "AU26": 0.25},
    "neutral": {"AU25": 0.8},
    "sad": {"AU25": 0.7},
    "surprised": {},
}
_ALWAYS_OPEN = frozenset({"fearful", "surprised"})

# Horizontal half-extent (face units) that every frame shows; narrow frames zoom out to keep it.
_FRAME_HALF_WIDTH = 0.58
_FRAME_HALF_HEIGHT = 0.88


@dataclass(frozen=True)
class Identity:
    """One synthetic child's fixed features; lengths in face units (frame height = 2).

    The shaded head sits at the origin; eye and mouth heights are v coordinates.
    """

    face_width: float  # head half-width
    face_length: float  # head half-height
    jaw: float  # 0 narrow pointed chin .. 1 broad square jaw
    eye_spacing: float  # |u| of each eye centre
    eye_size: float  # multiplies eye width, opening and iris (1 = typical)
    eye_height: float  # v of the eye centres
    iris_darkness: float  # grey level of the iris, 0 black
    brow_thickness: float  # brow height at its inner end
    brow_height: float  # brow above the eye centre
    brow_density: float  # opacity of the brows, 0..1
    nose_length: float  # eye centre to nose tip
    nose_width: float  # half-width of the nostril wings
    mouth_width: float  # half-width of the relaxed mouth
    mouth_height: float  # v of the relaxed lip line
    lip_thickness: float  # multiplies both lips (1 = typical)
    skin_tone: float  # grey level of lit skin
    hair_darkness: float  # grey level of the hair
    hair_style: int  # 0 short, 1 long (falls behind the ears), 2 fringe
    hairline: float  # v of the hairline at the forehead's centre
    hair_volume: float  # scalp outline / head outline (> 1)


_IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "face_width": (0.45, 0.55),
    "face_length": (0.70, 0.80),
    "jaw": (0.0, 1.0),
    "eye_spacing": (0.18, 0.225),
    "eye_size": (0.85, 1.15),
    "eye_height": (-0.02, 0.05),
    "iris_darkness": (0.08, 0.45),
    "brow_thickness": (0.04, 0.065),
    "brow_height": (0.15, 0.19),
    "brow_density": (0.65, 0.95),
    "nose_length": (0.22, 0.28),
    "nose_width": (0.07, 0.095),
    "mouth_width": (0.14, 0.18),
    "mouth_height": (-0.47, -0.41),
    "lip_thickness": (0.8, 1.25),
    "skin_tone": (0.45, 0.85),
    "hair_darkness": (0.05, 0.6),
    "hairline": (0.42, 0.54),
    "hair_volume": (1.04, 1.12),
}


@dataclass(frozen=True)
class Pose:
    """Per-image nuisance: head roll and placement, and the light direction.

    roll: radians, counter-clockwise as seen; shift_u, shift_v: face units; scale: head size
    factor; light_azimuth: radians, positive = light from the viewer's right; light_elevation:
    radians above the horizontal.
    """

    roll: float = 0.0
    shift_u: float = 0.0
    shift_v: float = 0.0
    scale: float = 1.0
    light_azimuth: float = 0.0
    light_elevation: float = 0.5


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity, each parameter uniform over its range (hair style uniform of 3)."""
    values = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in _IDENTITY_RANGES.items()}
    return Identity(hair_style=int(rng.integers(3)), **values)


def sample_pose(rng: np.random.Generator) -> Pose:
    """Draw a small pose/lighting jitter: roll +-4 deg, shift +-0.04, scale +-4 %, light +-35 deg."""
    return Pose(
        roll=float(np.deg2rad(rng.uniform(-4.0, 4.0))),
        shift_u=float(rng.uniform(-0.04, 0.04)),
        shift_v=float(rng.uniform(-0.04, 0.04)),
        scale=float(rng.uniform(0.96, 1.04)),
        light_azimuth=float(np.deg2rad(rng.uniform(-35.0, 35.0))),
        light_elevation=float(np.deg2rad(rng.uniform(20.0, 45.0))),
    )


def _au_vector(aus: Mapping[str, float]) -> np.ndarray:
    """AU mapping -> (n_au,) float32 in ACTION_UNITS order; validates names and range."""
    unknown = sorted(set(aus) - set(ACTION_UNITS))
    if unknown:
        raise ValueError(f"unknown action units {unknown}; allowed: {', '.join(ACTION_UNITS)}")
    vec = np.array([float(aus.get(name, 0.0)) for name in ACTION_UNITS], dtype=np.float32)
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

    Returns (v, u): v (height,) float32 decreasing down the rows, u (width,) float32 increasing
    along the columns, in face units. The frame shows at least v in [-0.88, 0.88] and u in
    [-0.58, 0.58] with square pixels, so a narrow frame shows more height, a wide one more width.
    """
    height, width = _check_size(size)
    scale = min(height / (2.0 * _FRAME_HALF_HEIGHT), width / (2.0 * _FRAME_HALF_WIDTH))
    v = (height / 2.0 - (np.arange(height) + 0.5)) / scale
    u = ((np.arange(width) + 0.5) - width / 2.0) / scale
    return v.astype(np.float32), u.astype(np.float32)


def render_face(
    identity: Identity,
    aus: Mapping[str, float],
    size: tuple[int, int] = (64, 64),
    pose: Pose | None = None,
) -> np.ndarray:
    """Render one face: (height, width) float32 grey levels in [0, 1] (0 black).

    aus maps AU names from `ACTION_UNITS` to intensities in [0, 1] (missing = 0);
    pose None is frontal, centred, lit from above.
    """
    size = _check_size(size)
    batch = _render_batch([identity], _au_vector(aus)[None], [pose or Pose()], size)
    return batch[0]


def generate_faces(
    n_identities: int = 160,
    poses_per_emotion: int = 2,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> FaceSet:
    """The default synthetic face set: every identity poses every emotion poses_per_emotion times.

    Even-numbered poses have the closed-mouth form, odd-numbered ones the open-mouth form
    (fearful and surprised are always open). Each image jitters the prototype's AU intensities
    (a shared strength in [0.6, 1]), adds weak activity (< 0.1) to the other AUs, and draws a
    `sample_pose`. Returns n = n_identities * 7 * poses_per_emotion images of `size`
    (height, width), uint8, identities "syn0001"..., ground_truth "au" (n, n_au) float32 and
    "mouth_open" (n,) bool.
    """
    if n_identities < 1 or poses_per_emotion < 1:
        raise ValueError(
            f"n_identities and poses_per_emotion must be >= 1, got {n_identities} and {poses_per_emotion}"
        )
    size = _check_size(size)
    rng = np.random.default_rng(seed)
    people, labels, ids, au_rows, opens, poses = [], [], [], [], [], []
    for person in range(n_identities):
        identity = sample_identity(rng)
        for label, emotion in enumerate(EMOTIONS):
            for k in range(poses_per_emotion):
                is_open = emotion in _ALWAYS_OPEN or k % 2 == 1
                proto = _au_vector(EMOTION_AUS[emotion])
                if is_open:
                    proto = np.maximum(proto, _au_vector(_OPEN_MOUTH_AUS[emotion]))
                strength = rng.uniform(0.6, 1.0)
                noise = 0.1 * rng.random(len(ACTION_UNITS)) ** 2
                active = proto * strength * rng.uniform(0.9, 1.1, len(ACTION_UNITS))
                au_rows.append(np.clip(np.where(proto > 0, active, noise), 0.0, 1.0))
                people.append(identity)
                labels.append(label)
                ids.append(f"syn{person + 1:04d}")
                opens.append(is_open)
                poses.append(sample_pose(rng))
    au = np.asarray(au_rows, dtype=np.float32)
    chunk = 128  # bounds memory at ~chunk * height * width * 4 bytes per temporary
    images = np.concatenate(
        [
            _render_batch(people[i : i + chunk], au[i : i + chunk], poses[i : i + chunk], size)
            for i in range(0, len(au), chunk)
        ]
    )
    return FaceSet(
        images=np.round(images * 255.0).astype(np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        identities=np.asarray(ids),
        label_names=EMOTIONS,
        source="synthetic",
        ground_truth={"au": au, "mouth_open": np.asarray(opens, dtype=bool)},
        attrs={
            "generator": "vae.faces",
            "generator_version": GENERATOR_VERSION,
            "seed": int(seed),
            "size": list(size),
            "n_identities": int(n_identities),
            "poses_per_emotion": int(poses_per_emotion),
            "action_units": list(ACTION_UNITS),
        },
    )


# --- rasterisation ------------------------------------------------------------------------
# Every quantity below is an array broadcasting (faces, rows, columns); per-face parameters are
# (faces, 1, 1). Distances are in face units, negative inside a shape.


def _ramp(d: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Coverage of a shape with signed distance d, blurred over one pixel of size px."""
    t = d * (-1.0 / px)
    t += 0.5
    return np.clip(t, np.float32(0.0), np.float32(1.0), out=t)


def _line(dist: np.ndarray, width, px: np.ndarray) -> np.ndarray:
    """Coverage of a stroke `width` wide at unsigned distance dist from its centre line.

    Strokes thinner than a pixel are drawn one pixel wide and proportionally fainter, so
    they keep their ink instead of flickering between rows.
    """
    return _ramp(dist - 0.5 * np.maximum(width, px), px) * np.minimum(1.0, width / px)


def _gauss(x: np.ndarray, s) -> np.ndarray:
    return np.exp(-0.5 * (x / s) ** 2)


def _ellipse(x: np.ndarray, y: np.ndarray, a, b) -> np.ndarray:
    """Approximate signed distance to the ellipse x^2/a^2 + y^2/b^2 = 1 (first-order)."""
    k = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    grad = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2)
    return (k - 1.0) * k / (grad + 1e-6)


def _mix(img: np.ndarray, colour, alpha) -> np.ndarray:
    return img + alpha * (colour - img)


def _columns(items: list, cls) -> dict[str, np.ndarray]:
    """List of dataclass instances -> {field: (faces, 1, 1) float32}."""
    table = np.array([astuple(item) for item in items], dtype=np.float32)
    return {f.name: table[:, j, None, None] for j, f in enumerate(fields(cls))}


def _render_batch(
    identities: list[Identity], au: np.ndarray, poses: list[Pose], size: tuple[int, int]
) -> np.ndarray:
    """(faces, height, width) float32 in [0, 1]; au is (faces, n_au) in ACTION_UNITS order."""
    p = _columns(identities, Identity)
    q = _columns(poses, Pose)
    A = {name: au[:, j, None, None].astype(np.float32) for j, name in enumerate(ACTION_UNITS)}
    height, width = size

    # Pixel centres -> face coordinates (undo the pose's roll, shift and scale).
    rows, cols = pixel_coordinates(size)
    ys, xs = rows[None, :, None], cols[None, None, :]
    scale = 1.0 / float(rows[0] - rows[1])  # pixels per face unit
    cos, sin = np.cos(q["roll"]), np.sin(q["roll"])
    x0, y0 = xs - q["shift_u"], ys - q["shift_v"]
    u = (cos * x0 + sin * y0) / q["scale"]
    v = (-sin * x0 + cos * y0) / q["scale"]
    px = 1.0 / (scale * q["scale"])  # one pixel in face units
    ua = np.abs(u)  # the face is symmetric: features are drawn once, mirrored by |u|
    side = np.where(u >= 0, 1.0, -1.0).astype(np.float32)
    el, az = q["light_elevation"], q["light_azimuth"]
    lx, ly, lz = np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)

    tone, hair_dark = p["skin_tone"], p["hair_darkness"]
    ex, ey, es = p["eye_spacing"], p["eye_height"], p["eye_size"]

    # Background: light grey studio wall, brighter at the top.
    img = np.broadcast_to(0.80 + 0.06 * ys, u.shape).astype(np.float32)

    # Head outline: ellipse on top, a tapered superellipse below (the jaw); AU26 drops the chin.
    a = p["face_width"]
    dv = v
    upper = dv > 0
    b = np.where(upper, p["face_length"], p["face_length"] + 0.07 * A["AU26"])
    y = dv / b
    t = np.clip(-y, 0.0, 1.0)
    a_eff = a * (1.0 - (0.22 - 0.12 * p["jaw"]) * t * t)
    x = u / a_eff
    n = np.where(upper, 2.0, 2.0 + 1.2 * p["jaw"])
    ax, ay = np.abs(x) + 1e-6, np.abs(y) + 1e-6
    r = (ax**n + ay**n) ** (1.0 / n)
    grad = np.sqrt(((ax / r) ** (n - 1) / a_eff) ** 2 + ((ay / r) ** (n - 1) / b) ** 2)
    d_head = (r - 1.0) / grad

    # Lambert shading of a flattened ellipsoid head.
    nx, ny = 0.85 * x, 0.7 * y
    nz = np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0)) + 0.25
    diffuse = np.clip((nx * lx + ny * ly + nz * lz) / np.sqrt(nx * nx + ny * ny + nz * nz), 0, 1)

    # Hair behind the head (long style only).
    long_hair = (p["hair_style"] == 1).astype(np.float32)
    d_back = np.maximum(_ellipse(u, v - 0.05, a * 1.22, p["face_length"] * 1.08), -0.62 - v)
    hair_col = hair_dark * (0.55 + 0.7 * diffuse) * (1.0 + 0.06 * np.sin(u * 30.0 + 5.0 * v))
    img = _mix(img, hair_col, _ramp(d_back, px) * long_hair)

    # Shoulders (a plain smock) and neck, shadowed under the chin.
    img = _mix(img, 0.62 + 0.1 * lx * u, _ramp(_ellipse(u, v + 1.5, 0.95, 0.62), px))
    chin_v = -(p["face_length"] + 0.07 * A["AU26"])
    neck_col = tone * (0.5 + 0.2 * np.clip((chin_v - v) / 0.3, 0.0, 1.0))
    img = _mix(img, neck_col, _ramp(np.maximum(ua - 0.45 * a, v + 0.3), px))

    # Ears, behind the head outline.
    d_ear = _ellipse(ua - 0.97 * a, v - (ey - 0.03), 0.075, 0.13)
    img = _mix(img, tone * (0.62 + 0.12 * side * lx), _ramp(d_ear, px))

    # ---- expression geometry ----
    # Brows: a tapered stroke from inner end bi to outer end bo, centre line c(t), t in [0, 1].
    bi = 0.06 + 0.4 * (ex - 0.2) - 0.035 * A["AU4"]
    bo = ex + 0.14 * es
    bv = ey + p["brow_height"]
    tb = np.clip((ua - bi) / (bo - bi), 0.0, 1.0)
    lower_in = 0.11 * A["AU4"] * (1.0 - A["AU1"]) + 0.05 * A["AU9"]  # AU1 wins over AU4 inside
    arch = 0.025 + 0.03 * A["AU2"]
    rise_in = 0.11 * A["AU1"] - lower_in
    rise_out = 0.10 * A["AU2"] - 0.02 * A["AU4"]
    c_brow = bv + rise_in * (1 - tb) + rise_out * tb + arch * 4 * tb * (1 - tb)
    slope = (rise_out - rise_in + arch * 4 * (1 - 2 * tb)) / (bo - bi)
    half_th = 0.5 * p["brow_thickness"] * (1.0 - 0.45 * tb)
    d_brow = np.abs(v - c_brow) / np.sqrt(1 + slope * slope) - half_th
    d_brow = np.maximum(d_brow, np.maximum(bi - ua, ua - bo))
    brow_col = np.minimum(hair_dark, 0.35 * tone)

    # Eyes: opening between the upper lid up(s) and lower lid lo(s), s in [-1, 1] inner->outer.
    ew = 0.105 * es
    hu = es * np.maximum(
        0.05
        + 0.06 * A["AU5"]
        - 0.012 * A["AU6"]
        - 0.012 * A["AU7"]
        - 0.012 * A["AU4"] * (1.0 - A["AU5"])
        - 0.012 * A["AU9"],
        0.008,
    )
    hl = es * np.maximum(
        0.038 * (1.0 - 0.5 * A["AU6"] - 0.45 * A["AU7"] - 0.2 * A["AU9"]) + 0.008 * A["AU5"],
        0.006,
    )
    s = (ua - ex) / ew
    w = np.clip(1.0 - s * s, 0.0, 1.0)
    ey_s = ey + 0.008 * s
    up = ey_s + hu * w**0.65
    lo = ey_s - hl * w**0.85
    d_eye = np.maximum(np.maximum(v - up, lo - v), (np.abs(s) - 1.0) * ew)

    # Mouth: lip line m(s) + opening between inner lips ui/li; s = u / half-width.
    mw = p["mouth_width"] * (
        1.0
        + 0.28 * A["AU12"]
        + 0.5 * A["AU20"]
        - 0.25 * A["AU23"]
        - 0.2 * A["AU26"] * (1.0 - A["AU20"])
        + 0.05 * A["AU15"]
        + 0.08 * A["AU10"]
    )
    my = p["mouth_height"]
    dc = 0.13 * A["AU12"] - 0.075 * A["AU15"] - 0.035 * A["AU20"]
    gap = 0.045 * A["AU25"] + 0.2 * A["AU26"] + 0.03 * A["AU10"]
    gu = 0.3 * gap + 0.035 * A["AU10"] + 0.012 * A["AU9"]
    gl = 0.7 * gap
    sm = ua / mw
    wm = np.clip(1.0 - sm * sm, 0.0, 1.0)
    flat = 2.0 + 4.0 * A["AU20"] + 2.0 * A["AU12"]  # stretched / smiling mouths open squarer
    shape = np.clip(1.0 - np.abs(sm) ** flat, 0.0, 1.0) ** 0.5
    m_line = my + dc * sm * sm
    ui = m_line + gu * shape
    li = m_line - gl * shape
    thin = 1.0 - 0.3 * A["AU12"] - 0.4 * A["AU20"]
    tu = np.maximum(0.032 * p["lip_thickness"] * (1.0 - 0.75 * A["AU23"]) * thin + 0.01 * A["AU10"], 0.006)
    tl = np.maximum(0.042 * p["lip_thickness"] * (1.0 - 0.75 * A["AU23"]) * thin, 0.006)
    uo = ui + tu * wm**0.4 * (1.0 - 0.35 * _gauss(sm, 0.13))  # cupid's bow
    lo_lip = li - tl * wm**0.5
    corner_v = my + dc
    end_m = (np.abs(sm) - 1.0) * mw

    # Nose.
    nt = ey - p["nose_length"]
    n_up = 0.03 * A["AU9"] + 0.012 * A["AU10"]
    nw = p["nose_width"] * (1.0 + 0.2 * A["AU9"] + 0.1 * A["AU10"])

    # ---- skin: shading and folds, as a multiplicative factor on the lit skin ----
    f = np.ones_like(u)
    f -= 0.12 * _gauss(ua - ex, 0.09) * _gauss(v - ey - 0.02, 0.06)  # eye sockets
    cheek_up = 0.05 * A["AU6"] + 0.03 * A["AU12"]
    f += (
        (0.06 + 0.1 * A["AU6"] + 0.05 * A["AU12"])
        * _gauss(ua - 0.24, 0.08)
        * _gauss(v - (ey - 0.17 + cheek_up), 0.06)
    )
    # Nose: sides darker (more on the side away from the light), lit tip, shadow below.
    bridge = np.clip((ey - v) / (ey - nt + 1e-6), 0.0, 1.0)
    f -= (
        (0.06 + 0.12 * np.clip(-lx * side, 0.0, 1.0)) * _gauss(ua - 0.05, 0.018) * (bridge * (1 - bridge) * 4)
    )
    f += 0.08 * _gauss(u, 0.035) * _gauss(v - (nt + 0.02 + n_up), 0.035)
    f -= 0.18 * _gauss(u, 0.06) * _gauss(v - (nt - 0.055 + n_up), 0.018)
    # Nostril wings: a dark rim round each ala.
    d_ala = _ellipse(ua - (nw - 0.035), v - (nt - 0.012 + n_up), 0.04, 0.032)
    f -= 0.3 * _line(np.abs(d_ala), 0.012, px) * (ua > nw - 0.045)
    # Lower-lip shadow and chin highlight (both follow the jaw).
    f -= 0.12 * _gauss(u, 0.07) * _gauss(v - (my - gl - 0.038 * p["lip_thickness"] - 0.03), 0.02)
    f += 0.06 * _gauss(u, 0.08) * _gauss(v - (chin_v + 0.12), 0.06)
    # Lowered brows shade the upper lids.
    f -= 0.2 * A["AU4"] * _gauss(ua - ex, 0.08) * _gauss(v - (ey + hu + 0.03), 0.035)
    # Nasolabial folds: from the nostril wing to just outside the mouth corner.
    fold = 0.3 * np.clip(A["AU12"] + 0.7 * A["AU6"] + A["AU9"] + A["AU10"], 0, 1)
    top_v, bot_v = nt - 0.01 + n_up, corner_v - 0.02
    tf = (top_v - v) / (top_v - bot_v)
    u_fold = nw + 0.01 + (mw + 0.035 - nw - 0.01) * tf + 0.03 * np.sin(np.pi * np.clip(tf, 0, 1))
    window = np.clip(tf * 8.0, 0, 1) * np.clip((1.0 - tf) * 8.0, 0, 1)
    f -= fold * _line(np.abs(ua - u_fold), 0.014, px) * window * (1.0 - 0.6 * np.clip(tf, 0, 1))
    # Mouth corners: small shadows; AU15 adds lines running down from them.
    f -= 0.3 * _gauss(ua - mw - 0.01, 0.012) * _gauss(v - corner_v, 0.015)
    tm = np.clip((corner_v - v) / 0.1, 0.0, 1.0)
    f -= 0.3 * A["AU15"] * _line(np.abs(ua - mw - 0.01 + 0.015 * tm), 0.012, px) * (tm * (1 - tm) * 4)
    # Forehead wrinkles (AU1 centre, AU2 sides) and glabella lines (AU4) follow the brows.
    wrinkle_w = A["AU1"] * _gauss(ua, 0.12) + A["AU2"] * _gauss(ua - 0.22, 0.1)
    for k in range(3):
        f -= 0.22 * wrinkle_w * _line(np.abs(v - c_brow - 0.1 - 0.05 * k), 0.012, px)
    glab = np.clip((v - bv + 0.07) / 0.1, 0.0, 1.0)
    f -= 0.35 * A["AU4"] * _line(np.abs(ua - 0.03), 0.012, px) * (glab * (1 - glab) * 4)
    # Nose wrinkles (AU9): short bowed lines across the bridge.
    for k in range(3):
        bow = v - (ey - 0.02 + 0.035 * k) - 6.0 * u * u
        f -= 0.5 * A["AU9"] * _line(np.abs(bow), 0.016, px) * _gauss(u, 0.07)
    # Under-eye furrow pushed up by AU6/AU7; crow's feet (AU6) at the outer corners.
    f -= (
        (0.25 * A["AU6"] + 0.2 * A["AU7"])
        * _line(np.abs(v - (ey - hl - 0.03) + 0.15 * (ua - ex) ** 2 * 10), 0.012, px)
        * _gauss(ua - ex, 0.07)
    )
    for slope_cf in (-0.5, 0.0, 0.5):
        dx = ua - (ex + ew + 0.015)
        f -= 0.3 * A["AU6"] * _line(np.abs(v - ey - slope_cf * dx), 0.01, px) * ((dx > 0) * _gauss(dx, 0.03))
    skin = tone * (0.42 + 0.62 * diffuse) * f
    img = _mix(img, skin, _ramp(d_head, px))

    # ---- features ----
    img = _mix(img, brow_col, _ramp(d_brow, px) * p["brow_density"])

    # Eyes: sclera shaded under the lid, iris clipped by the lids, pupil and catch-light.
    sclera = (0.6 + 0.15 * tone) * (1.0 - 0.35 * np.exp(-(up - v) / 0.02))
    iris_v = ey + 0.004
    ri = 0.053 * es
    dist = np.sqrt((ua - ex) ** 2 + (v - iris_v) ** 2)
    iris_col = p["iris_darkness"] * (1.25 - 0.5 * (dist / ri) ** 2)
    eye = _mix(sclera, iris_col, _ramp(dist - ri, px))
    eye = _mix(eye, 0.04, _ramp(dist - 0.42 * ri, px))
    glint = np.sqrt((u - side * ex - 0.35 * ri) ** 2 + (v - iris_v - 0.35 * ri) ** 2)
    eye = _mix(eye, 0.95, 0.8 * _ramp(glint - 0.25 * ri, px))
    img = _mix(img, eye, _ramp(d_eye, px))
    # Lashes along the upper lid, a faint lower lid, the lid crease above.
    lash = 0.022 * es * (1.0 + 0.3 * np.clip(s, 0, 1))
    lid_window = _ramp((np.abs(s) - 1.06) * ew, px)
    img = _mix(img, 0.08, 0.9 * _line(np.abs(v - up - 0.3 * lash), lash, px) * lid_window)
    img = _mix(
        img,
        tone * 0.45,
        (0.35 + 0.3 * A["AU7"]) * _line(np.abs(v - lo), 0.01, px) * _ramp((np.abs(s) - 1.0) * ew, px),
    )
    crease = up + np.maximum(0.035 - 0.02 * A["AU5"], 0.012) * w**0.5
    img = _mix(
        img, tone * 0.5, 0.35 * _line(np.abs(v - crease), 0.012, px) * _ramp((np.abs(s) - 0.95) * ew, px)
    )

    # Nostrils.
    d_nostril = _ellipse(
        ua - 0.032 * nw / 0.085, v - (nt - 0.035 + n_up), 0.022 * nw / 0.085, 0.011 + 0.006 * A["AU9"]
    )
    img = _mix(img, tone * 0.25, 0.9 * _ramp(d_nostril, px))

    # Lips, mouth interior, teeth.
    d_lips = np.maximum(np.maximum(v - uo, lo_lip - v), end_m)
    lip_col = (
        tone
        * np.where(v > m_line, np.float32(0.52), np.float32(0.64))
        * (1.0 + 0.15 * _gauss(u, 0.06) * _gauss(v - (li - 0.6 * tl), 0.012))
    )
    img = _mix(img, lip_col, _ramp(d_lips, px))
    d_open = np.maximum(np.maximum(v - ui, li - v), end_m)
    teeth = 0.82 * (1.0 - 0.45 * sm * sm)
    inside = _mix(0.06 + 0.06 * tone, teeth, _ramp(ui - 0.045 - v, px))
    lower_teeth = 0.03 * np.clip(A["AU20"] + 0.5 * A["AU10"], 0, 1)
    inside = _mix(inside, teeth * 0.9, _ramp(v - li - lower_teeth, px) * (lower_teeth > 0))
    img = _mix(img, inside, _ramp(d_open, px))
    lip_line = _line(np.abs(v - m_line), 0.016 + 0.01 * A["AU23"], px) * _ramp(end_m, px)
    img = _mix(img, tone * 0.3, (0.6 + 0.4 * A["AU23"]) * lip_line)

    # Hair over the forehead: inside the scalp outline and above the hairline.
    fringe = (p["hair_style"] == 2).astype(np.float32)
    temple = (p["hairline"] - ey - 0.08) * np.clip(ua / a, 0.0, 1.0) ** 3
    hairline = p["hairline"] - 0.1 * fringe * (1.0 - (ua / a) ** 2) - temple
    d_scalp = _ellipse(u, v - 0.08, a * 1.04 * p["hair_volume"], 0.92 * p["face_length"] * p["hair_volume"])
    # Locks: a wavy outline instead of a smooth cap; their phase differs per identity.
    angle = np.arctan2(v - 0.08, u)
    d_scalp = d_scalp + 0.014 * np.sin(angle * 15.0 + 40.0 * p["hairline"])
    hair_edge = np.maximum(d_scalp, hairline - v)
    img = _mix(img, tone * 0.35, 0.35 * _line(np.abs(hair_edge), 0.03, px))  # shadow under hair
    img = _mix(img, hair_col, _ramp(hair_edge, px))

    return np.clip(img, 0.0, 1.0).astype(np.float32)
