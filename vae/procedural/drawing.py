"""Draws the procedural child faces of `vae.procedural.faces` from identity, action units and pose.

`draw_faces` takes per-face parameter columns (each (faces, 1, 1) float64) and returns
(faces, height, width) grey levels in [0, 1]. The face lives in normalised coordinates (u to
the viewer's right, v up, see `vae.procedural.faces.pixel_coordinates`); it is left-right symmetric, so
features are drawn once as functions of |u|. Every action unit's effect is written next to the
feature it moves, with its displacement in face units at intensity 1 (the frame is 1.76 units
tall: at 64x64 one pixel is 0.0275 units).

Speed: each feature is computed only inside a window of the frame that holds it (`_Window`);
every shading term has compact support (`vae.procedural.raster.bump`), so a window that covers a feature
gives exactly the pixels a full-frame computation would. Determinism: only `vae.procedural.raster`
primitives are used, so the pixels are bit-identical on every CPU (see that module).
"""

from __future__ import annotations

import numpy as np

from vae.procedural.raster import (
    bump,
    ellipse,
    hash01,
    mix,
    noise,
    ramp,
    sincos,
    smoothstep,
    stroke,
    wave,
)

HAIR_STYLES: tuple[str, ...] = ("crop", "long", "fringe", "curly", "tied")
"""Hair styles by `Identity.hair_style` index: short crop, long straight hair from a parting,
a fringe over bob-to-long hair, big curly hair, hair pulled back from a side parting."""


class _Window:
    """A rectangle of the frame and the face coordinates of its pixels (views, no copies).

    Built from a box in face coordinates (|u| <= u_max, v_lo <= v <= v_hi; per-face arrays or
    scalars) that is mapped through every face's pose, so it holds the box for all faces.
    """

    def __init__(self, frame: dict, u_max, v_lo, v_hi):
        rows, cols, q = frame["rows"], frame["cols"], frame["q"]
        sin_r, cos_r = frame["roll"]
        xs, ys = [], []
        for cu in (-1.0, 1.0):
            for cv in (v_lo, v_hi):
                uu, vv = cu * u_max, cv
                xs.append(q["scale"] * (cos_r * uu - sin_r * vv) + q["shift_u"])
                ys.append(q["scale"] * (sin_r * uu + cos_r * vv) + q["shift_v"])
        margin = 3.0 * float(rows[0] - rows[1])  # ramps reach half a pixel beyond an edge
        x_lo, x_hi = min(np.min(x) for x in xs) - margin, max(np.max(x) for x in xs) + margin
        y_lo, y_hi = min(np.min(y) for y in ys) - margin, max(np.max(y) for y in ys) + margin
        r0 = int(np.searchsorted(-rows, -y_hi))  # rows decrease down the image
        r1 = int(np.searchsorted(-rows, -y_lo, side="right"))
        c0 = int(np.searchsorted(cols, x_lo))
        c1 = int(np.searchsorted(cols, x_hi, side="right"))
        self.index = (slice(None), slice(r0, r1), slice(c0, c1))
        self.u, self.v = frame["u"][self.index], frame["v"][self.index]
        self.ua, self.side = frame["ua"][self.index], frame["side"][self.index]


def draw_faces(p: dict, a: dict, q: dict, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(faces, height, width) float64 in [0, 1].

    p: identity columns (`vae.procedural.faces.Identity` fields), a: action-unit intensities by name
    ("AU1"...), q: pose columns (`vae.procedural.faces.Pose` fields); each value (faces, 1, 1) float64.
    rows (height,) and cols (width,): v and u of the pixel centres of an unposed face.
    """
    # Pixel centres -> face coordinates (undo the pose's roll, shift and scale).
    ys, xs = rows[None, :, None], cols[None, None, :]
    sin_r, cos_r = sincos(q["roll"])
    x0, y0 = xs - q["shift_u"], ys - q["shift_v"]
    u = (cos_r * x0 + sin_r * y0) / q["scale"]
    v = (-sin_r * x0 + cos_r * y0) / q["scale"]
    frame = {
        "rows": rows,
        "cols": cols,
        "q": q,
        "roll": (sin_r, cos_r),
        "u": u,
        "v": v,
        "ua": np.abs(u),
        "side": np.where(u >= 0, 1.0, -1.0),
    }
    px = float(rows[0] - rows[1]) / q["scale"]  # one pixel in face units
    sin_e, cos_e = sincos(q["light_elevation"])
    sin_a, cos_a = sincos(q["light_azimuth"])
    light = (sin_a * cos_e, sin_e, cos_a * cos_e)
    ey = p["eye_height"]

    head = _head(p, a, u, v)
    img = 0.84 + 0.05 * ys + 0.0 * u  # a plain, light studio wall, slightly brighter above
    below = _Window(frame, 2.0, -2.0, -0.68)  # the neck and top lie below v = -0.7
    img[below.index] = _clothes(img[below.index], p, head["chin_v"], below, px)
    hair = _hair(p, head, frame, px, light)
    img = mix(img, hair["colour"], hair["back"])
    ears = _Window(frame, 0.75, ey - 0.22, ey + 0.06)
    img[ears.index] = _ears(img[ears.index], p, ears, px, light)

    # Skin: lit head times the relief of the face; expression lives in the relief windows.
    eyes = _Window(frame, 0.45, ey - 0.21, ey + 0.25)
    brows = _Window(frame, 0.45, ey - 0.02, ey + p["brow_height"] + 0.42)
    lower = _Window(frame, 0.48, head["chin_v"] - 0.04, ey + 0.13)
    eye = _eye_geometry(p, a, eyes)
    brow = _brow_geometry(p, a, brows)
    mouth = _mouth_geometry(p, a, lower)
    relief = np.ones_like(u)
    relief[eyes.index] += _eye_relief(p, a, eye, eyes, px)
    relief[brows.index] += _brow_relief(a, brow, brows, px)
    relief[lower.index] += _lower_relief(p, a, mouth, head, lower, px, light)
    skin = p["skin_tone"] * (0.40 + 0.64 * _diffuse(head, light)) * relief
    img = mix(img, skin, ramp(head["d"], px))

    img[brows.index] = _brows(img[brows.index], p, a, brow, brows, px)
    img[eyes.index] = _eyes(img[eyes.index], p, a, eye, eyes, px)
    img[lower.index] = _mouth(_nose(img[lower.index], p, a, lower, px), p, a, mouth, lower, px)
    img = mix(img, hair["colour"], hair["front"])
    img = img * (1.0 - hair["shadow"])
    return np.clip(img, 0.0, 1.0)


# --- the head ---------------------------------------------------------------------------------


def _head(p: dict, a: dict, u: np.ndarray, v: np.ndarray) -> dict:
    """Head outline and the coordinates used to shade it.

    A child's head: round, widest at the full cheeks, a small chin (`chin` narrows the lower
    third). AU26 drops the chin by 0.05, AU27 by 0.09.
    """
    half_w, half_h, centre = p["head_width"], p["head_length"], p["head_centre"]
    jaw_drop = 0.05 * a["AU26"] + 0.09 * a["AU27"]
    b = np.where(v > centre, half_h, half_h + jaw_drop)
    y = (v - centre) / b
    lower = np.clip((-y - 0.25) / 0.75, 0.0, 1.0)
    width = half_w * (1.0 + 0.04 * y) * (1.0 - (0.06 + 0.16 * p["chin"]) * lower * lower)
    width = width * (1.0 + 0.05 * p["cheek_fullness"] * bump(y + 0.42, 0.16))
    x = u / width
    return {
        "d": ellipse(u, v - centre, width, b),
        "x": x,
        "y": y,
        "r2": x * x + y * y,
        "width": width,
        "chin_v": centre - half_h - jaw_drop,
        "top_v": centre + half_h,
    }


def _diffuse(head: dict, light: tuple) -> np.ndarray:
    """Lambert term of a flattened ellipsoid head lit from `light` (unit vector)."""
    nx, ny = 0.9 * head["x"], 0.75 * head["y"]
    nz = np.sqrt(np.clip(1.0 - head["r2"], 0.0, 1.0)) + 0.35
    dot = nx * light[0] + ny * light[1] + nz * light[2]
    return np.clip(dot / np.sqrt(nx * nx + ny * ny + nz * nz), 0.0, 1.0)


def _clothes(img, p, chin_v, w: _Window, px):
    """Neck (in the chin's shadow) and the shoulders of a plain top."""
    u, v, ua = w.u, w.v, w.ua
    shirt = ellipse(u, v + 1.52, 1.05, 0.72)
    collar = 0.55 * stroke(np.abs(ellipse(u, v + 0.80, 0.2, 0.09)), 0.02, px)
    img = mix(img, p["shirt_tone"] * (1.0 - 0.25 * collar), ramp(shirt, px))
    chin_shadow = np.clip((chin_v + 0.02 - v) / 0.25, 0.0, 1.0)
    neck = p["skin_tone"] * (0.48 + 0.22 * chin_shadow)
    flare = ua / 0.19
    return mix(img, neck, ramp(np.maximum(ua - 0.19, v + 0.82 - 0.08 * flare * flare), px))


def _ears(img, p, w: _Window, px, light):
    """Ears just outside the head outline at eye-to-nose height, under short hair only."""
    ua, v = w.ua, w.v
    ear_v = p["eye_height"] - 0.08
    shown = (p["hair_style"] == HAIR_STYLES.index("crop")) | (p["hair_style"] == HAIR_STYLES.index("tied"))
    d = np.where(shown, ellipse(ua - 0.965 * p["head_width"], v - ear_v, 0.07, 0.115), 1.0)
    inner = bump(ua - 0.975 * p["head_width"], 0.02) * bump(v - ear_v, 0.05)
    tone = p["skin_tone"] * (0.62 + 0.15 * w.side * light[0]) * (1.0 - 0.35 * inner)
    return mix(img, tone, ramp(d, px))


# --- eyes -------------------------------------------------------------------------------------


def _eye_geometry(p: dict, a: dict, w: _Window) -> dict:
    """Lids of both eyes: the opening lies between the upper lid `up` and the lower lid `lo`.

    s = (|u| - eye centre) / half-width: -1 at the inner corner, +1 at the outer one.
    """
    ex, ey, es = p["eye_spacing"], p["eye_height"], p["eye_size"]
    ew = 0.132 * es
    # AU5 raises the upper lid 0.06 (white shows above the iris; a quarter less under a
    # lowered brow: the glare of anger); AU4 without AU5 lowers it 0.014, AU6 0.010, AU7
    # 0.012, AU9 0.010.
    hu = 0.052 + 0.060 * a["AU5"] * (1.0 - 0.25 * a["AU4"]) - 0.010 * a["AU6"]
    hu = hu - 0.012 * a["AU7"] - 0.014 * a["AU4"] * (1.0 - a["AU5"]) - 0.010 * a["AU9"]
    hu = es * np.maximum(hu, 0.008)
    # AU7 raises and straightens the lower lid (0.02), AU9 raises it 0.012; AU6 pushes its
    # middle up 0.036 into the crescent of a smiling eye.
    hl = es * np.maximum(0.042 - 0.020 * a["AU7"] - 0.012 * a["AU9"] + 0.004 * a["AU5"], 0.008)
    crescent = es * (0.036 * a["AU6"] + 0.006 * a["AU12"])
    s = (w.ua - ex) / ew
    arc = np.clip(1.0 - s * s, 0.0, 1.0)
    round_arc = np.sqrt(arc)
    tilt = 0.008 * s
    lower_shape = 0.6 * arc + 0.4 * round_arc + 0.4 * a["AU7"] * (round_arc - arc)
    return {
        "ex": ex,
        "ey": ey,
        "ew": ew,
        "ri": 0.066 * es,
        "hu": hu,
        "s": s,
        "round_arc": round_arc,
        "up": ey + tilt + hu * (0.4 * arc + 0.6 * round_arc),
        "lo": ey + tilt - hl * lower_shape + crescent * arc,
    }


def _eye_relief(p, a, g, w: _Window, px) -> np.ndarray:
    """Sockets; AU4's shadow on the upper lid (deep: the brow's overhang is what photographs
    of anger show most); AU6 bags and crow's feet; AU7 lid tension."""
    ua, v, ex, ey = w.ua, w.v, g["ex"], g["ey"]
    f = -0.10 * bump(ua - ex, 0.10) * bump(v - ey - 0.03, 0.07)
    f = f - 0.40 * a["AU4"] * bump(ua - ex + 0.04, 0.10) * bump(v - (ey + g["hu"] + 0.03), 0.04)
    near = bump(ua - ex, 0.07)
    bag = 0.22 * a["AU6"] + 0.15 * a["AU7"]
    f = f - bag * stroke(np.abs(v - (g["lo"] - 0.035)), 0.012, px) * near
    f = f + 0.08 * a["AU6"] * near * bump(v - (g["lo"] - 0.018), 0.012)
    dx = ua - (ex + g["ew"] + 0.015)
    for slope in (-0.5, 0.0, 0.5):
        crow = stroke(np.abs(v - ey - slope * dx), 0.01, px) * (dx > 0) * bump(dx, 0.025)
        f = f - 0.3 * a["AU6"] * crow
    return f


def _eyes(img, p, a, g, w: _Window, px):
    """Sclera shaded under the lid, iris and pupil clipped by the lids, lashes, lid crease."""
    ua, v, s, up, lo = w.ua, w.v, g["s"], g["up"], g["lo"]
    ex, ey, ew, ri = g["ex"], g["ey"], g["ew"], g["ri"]
    d_eye = np.maximum(np.maximum(v - up, lo - v), (np.abs(s) - 1.0) * ew)
    sclera = 0.88 * (1.0 - 0.25 * s * s) * (1.0 - 0.35 * bump(up - v, 0.025))
    iris_v = ey + 0.006
    du, dv = ua - ex, v - iris_v
    dist = np.sqrt(du * du + dv * dv)
    rel = dist / ri
    eye = mix(sclera, p["iris_darkness"] * (1.3 - 0.5 * rel * rel), ramp(dist - ri, px))
    eye = mix(eye, 0.03, ramp(dist - 0.42 * ri, px))
    gu, gv = w.u - w.side * ex - 0.32 * ri, dv - 0.32 * ri
    eye = mix(eye, 0.95, 0.85 * ramp(np.sqrt(gu * gu + gv * gv) - 0.22 * ri, px))
    img = mix(img, eye, ramp(d_eye, px))
    # Lashes along the upper lid, flicking out past the outer corner; a faint lower lid.
    lash = 0.024 * g["ri"] / 0.066 * (1.0 + 0.4 * np.clip(s, 0, 1))
    flick = 0.01 * np.clip(s - 0.7, 0, 1) / 0.3
    within = ramp((np.abs(s) - 1.08) * ew, px)
    img = mix(img, 0.06, 0.92 * stroke(np.abs(v - up - 0.3 * lash - flick), lash, px) * within)
    lid = (0.35 + 0.3 * a["AU7"]) * stroke(np.abs(v - lo), 0.010, px) * ramp((np.abs(s) - 1.0) * ew, px)
    img = mix(img, p["skin_tone"] * 0.5, lid)
    crease = up + np.maximum(0.034 - 0.024 * a["AU5"], 0.010) * g["round_arc"]
    fold = 0.35 * stroke(np.abs(v - crease), 0.012, px) * ramp((np.abs(s) - 0.95) * ew, px)
    return mix(img, p["skin_tone"] * 0.5, fold)


# --- brows ------------------------------------------------------------------------------------


def _brow_geometry(p: dict, a: dict, w: _Window) -> dict:
    """Centre line of a brow from its inner end bi to its outer end bo (|u|).

    The line passes through three heights (inner, middle, outer) above the neutral brow line.
    """
    ex, bv = p["eye_spacing"], p["eye_height"] + p["brow_height"]
    ew = 0.132 * p["eye_size"]
    # AU4 draws the inner ends 0.03 towards the midline, AU9 0.012.
    bi = ex - 0.85 * ew - 0.030 * a["AU4"] - 0.012 * a["AU9"]
    bo = ex + 1.1 * ew
    # Heights at intensity 1: AU1 inner +0.13, middle +0.07; AU2 outer +0.11, middle +0.10;
    # AU4 all -0.04 and, unless AU1 holds it up, the inner end a further -0.085 (the V of
    # anger); AU9 the inner end -0.035, middle -0.02 (disgust). AU4 also flattens the arch.
    arch = p["brow_arch"] * (1.0 - 0.6 * a["AU4"])
    h_in = 0.13 * a["AU1"] + 0.02 * a["AU2"] - 0.04 * a["AU4"] - 0.085 * a["AU4"] * (1 - a["AU1"])
    h_in = h_in - 0.035 * a["AU9"] * (1 - a["AU1"])
    h_mid = arch + 0.07 * a["AU1"] + 0.10 * a["AU2"] - 0.04 * a["AU4"] - 0.02 * a["AU9"]
    h_out = -0.01 + 0.01 * a["AU1"] + 0.11 * a["AU2"] - 0.03 * a["AU4"] - 0.01 * a["AU9"]
    t = np.clip((w.ua - bi) / (bo - bi), 0.0, 1.0)
    centre = bv + h_in * (1 - t) * (1 - 2 * t) + 4 * h_mid * t * (1 - t) + h_out * t * (2 * t - 1)
    slope = (h_in * (4 * t - 3) + 4 * h_mid * (1 - 2 * t) + h_out * (4 * t - 1)) / (bo - bi)
    return {"bv": bv, "bi": bi, "bo": bo, "t": t, "centre": centre, "slope": slope}


def _brow_relief(a, g, w: _Window, px) -> np.ndarray:
    """AU4 knots the glabella with two dark vertical furrows and a shadow where the brows bunch;
    AU1 wrinkles the middle of the forehead, AU2 its sides, in lines that follow the brows."""
    ua, v = w.ua, w.v
    glab = np.clip((v - g["bv"] + 0.06) / 0.12, 0.0, 1.0)
    f = -0.60 * a["AU4"] * stroke(np.abs(ua - 0.028), 0.016, px) * (glab * (1 - glab) * 4)
    f = f - 0.30 * a["AU4"] * bump(ua, 0.06) * bump(v - g["bv"] + 0.02, 0.04)
    wrinkle = a["AU1"] * bump(ua, 0.12) + a["AU2"] * bump(ua - 0.25, 0.09)
    for k in range(3):
        f = f - 0.16 * wrinkle * stroke(np.abs(v - g["centre"] - 0.085 - 0.045 * k), 0.012, px)
    return f


def _brows(img, p, a, g, w: _Window, px):
    """A tapered brow stroke; AU4 also bunches its inner end 35 % thicker."""
    t = g["t"]
    half = 0.5 * p["brow_thickness"] * (1.0 - 0.5 * t) * (1.0 + 0.35 * a["AU4"] * (1 - t))
    d = np.abs(w.v - g["centre"]) / np.sqrt(1 + g["slope"] * g["slope"]) - half
    d = np.maximum(d, np.maximum(g["bi"] - w.ua, w.ua - g["bo"]))
    colour = np.minimum(p["hair_darkness"], 0.4 * p["skin_tone"])
    return mix(img, colour, ramp(d, px) * p["brow_density"])


# --- nose, cheeks, mouth, chin ------------------------------------------------------------------


def _nose_position(p: dict, a: dict) -> tuple:
    """(tip v, wing half-width): AU9 lifts the tip 0.022 and widens the wings 25 %, AU10
    lifts 0.01 and widens 10 %."""
    tip = p["eye_height"] - p["nose_length"] + 0.022 * a["AU9"] + 0.010 * a["AU10"]
    return tip, p["nose_width"] * (1.0 + 0.25 * a["AU9"] + 0.10 * a["AU10"])


def _mouth_geometry(p: dict, a: dict, w: _Window) -> dict:
    """Lip line, mouth opening and lip outlines as heights over |u| in the window."""
    # Width at intensity 1: AU12 +30 %, AU20 +42 %, AU23 -12 %, AU24 -8 %, AU27 -15 %.
    mw = p["mouth_width"] * (
        1.0
        + 0.30 * a["AU12"]
        + 0.42 * a["AU20"]
        - 0.12 * a["AU23"]
        - 0.08 * a["AU24"]
        - 0.15 * a["AU27"]
        - 0.08 * a["AU26"] * (1.0 - a["AU20"])
        + 0.06 * a["AU15"]
        + 0.05 * a["AU10"]
    )
    # Corners relative to the middle of the lip line: AU12 +0.08, AU15 -0.055, AU20 -0.015.
    dc = 0.080 * a["AU12"] - 0.055 * a["AU15"] - 0.015 * a["AU20"]
    # AU10 lifts the mouth 0.025 towards the nose, AU17 pushes the lower lip up 0.006; both
    # arch the middle of the lip line (0.02, 0.018): with AU15 the closed mouth is a frown.
    my = p["mouth_height"] + 0.025 * a["AU10"] + 0.006 * a["AU17"]
    arch = 0.018 * a["AU17"] + 0.020 * a["AU10"]
    sm = w.ua / mw
    s2 = sm * sm
    wm = np.clip(1.0 - s2, 0.0, 1.0)
    line = my + dc * s2 * (0.6 + 0.4 * s2) + arch * wm
    # Opening: AU25 0.035, AU26 0.09, AU27 0.16, shared 28:72 between the lips; when the lips
    # are apart AU10 raises the upper one a further 0.04, AU16 lowers the lower one 0.035.
    gap = 0.035 * a["AU25"] + 0.09 * a["AU26"] + 0.16 * a["AU27"]
    parted = np.clip(a["AU25"] + a["AU26"] + a["AU27"], 0.0, 1.0)
    gu = 0.28 * gap + parted * (0.040 * a["AU10"] + 0.02 * a["AU12"])
    gl = 0.72 * gap + parted * (0.035 * a["AU16"] + 0.02 * a["AU20"])
    # Stretched (AU20), raised (AU10), smiling (AU12) and tightened (AU23) mouths open squarer.
    square = 0.9 * np.clip(a["AU20"] + 0.7 * a["AU10"] + 0.4 * a["AU12"] + 0.5 * a["AU23"], 0.0, 1.0)
    s4 = s2 * s2
    shape = np.sqrt(np.clip((1.0 - square) * wm + square * (1.0 - s4 * s4), 0.0, 1.0))
    # Lips: AU23 thins them 55 %, AU24 presses them 60 %, AU12 stretches 25 %, AU20 35 %.
    thin = (1.0 - 0.55 * a["AU23"]) * (1.0 - 0.6 * a["AU24"]) * (1.0 - 0.25 * a["AU12"] - 0.35 * a["AU20"])
    tu = np.maximum(0.026 * p["lip_thickness"] * thin, 0.006)
    tl = np.maximum(0.036 * p["lip_thickness"] * thin, 0.008)
    ui, li = line + gu * shape, line - gl * shape
    return {
        "mw": mw,
        "sm": sm,
        "s2": s2,
        "line": line,
        "ui": ui,
        "li": li,
        # Upper lip outline with its cupid's bow; AU10 lifts it 0.022 beside the philtrum.
        "uo": ui
        + tu * np.sqrt(wm) * (1.0 - 0.3 * bump(sm, 0.15))
        + 0.022 * a["AU10"] * bump(np.abs(sm) - 0.4, 0.22),
        "lo": li - tl * np.sqrt(wm),
        "bottom": my + arch - gl - tl,  # lowest point of the lower lip
        "corner_v": my + dc,
        "end": (np.abs(sm) - 1.0) * mw,
    }


def _lower_relief(p, a, g, head, w: _Window, px, light) -> np.ndarray:
    """Cheeks, nose shading and wrinkles, nasolabial folds, mouth corners and chin."""
    u, ua, v = w.u, w.ua, w.v
    ey = p["eye_height"]
    nt, nw = _nose_position(p, a)
    # Cheeks: round, full and lit; AU6 lifts them 0.05 and AU12 0.03, and both fill them.
    cheek_v = ey - 0.17 + 0.05 * a["AU6"] + 0.03 * a["AU12"]
    fullness = 0.05 + 0.04 * p["cheek_fullness"] + 0.10 * a["AU6"] + 0.06 * a["AU12"]
    f = fullness * bump(ua - 0.27, 0.09) * bump(v - cheek_v, 0.07)

    # Nose: shaded sides (more on the side away from the light), lit tip, shadow under it.
    bridge = np.clip((ey - 0.03 - v) / (ey - 0.03 - nt), 0.0, 1.0)
    away = np.clip(-4.0 * light[0] * w.side, 0.0, 1.0)
    f = f - (0.05 + 0.10 * away) * bump(ua - 0.05, 0.02) * (bridge * (1 - bridge) * 4)
    f = f + 0.10 * bump(u, 0.03) * bump(v - (nt + 0.025), 0.03)
    f = f - 0.22 * bump(u, 0.055) * bump(v - (nt - 0.055), 0.016)
    wing = ellipse(ua - (nw - 0.028), v - (nt - 0.015), 0.034, 0.03)
    f = f - 0.28 * stroke(np.abs(wing), 0.010, px) * (ua > nw - 0.03)
    # AU9 wrinkles the nose: bowed lines across the bridge and slanted lines beside it.
    for k in range(2):
        bow = v - (ey + 0.005 - 0.04 * k) + 3.0 * u * u
        f = f - 0.70 * a["AU9"] * stroke(np.abs(bow), 0.020, px) * bump(u, 0.06)
        slant = v - (ey - 0.025 - 0.03 * k) + 0.9 * (ua - 0.05)
        f = f - 0.5 * a["AU9"] * stroke(np.abs(slant), 0.016, px) * bump(ua - 0.075, 0.022)

    # Nasolabial folds from the nose wing to just outside the mouth corner: soft in a child's
    # neutral face, deep with AU9/AU10 (disgust) and AU12/AU6 (smile).
    pull = a["AU12"] + 0.6 * a["AU6"] + a["AU9"] + 0.9 * a["AU10"] + 0.4 * a["AU20"]
    depth = 0.04 + 0.36 * np.clip(pull, 0, 1)
    top_v, bot_v = nt - 0.005, g["corner_v"] - 0.015
    tf = (top_v - v) / (top_v - bot_v)
    bow = 2.0 * tf - 1.0
    u_fold = nw + 0.012 + (g["mw"] + 0.025 - nw - 0.012) * tf + 0.02 * (1 - bow * bow)
    window = np.clip(tf * 6.0, 0, 1) * np.clip((1.0 - tf) * 6.0, 0, 1)
    f = f - depth * window * (stroke(np.abs(ua - u_fold), 0.016, px) + 0.6 * bump(ua - u_fold + 0.02, 0.02))

    # Mouth corners in shadow, tucked into dimples by AU12; AU15 draws lines down from them;
    # AU24 bulges the skin above the pressed lips.
    corner = bump(ua - g["mw"] - 0.008, 0.012) * bump(v - g["corner_v"], 0.015)
    f = f - (0.25 + 0.25 * a["AU12"]) * corner
    tm = np.clip((g["corner_v"] - v) / 0.09, 0.0, 1.0)
    down = stroke(np.abs(ua - g["mw"] - 0.01 + 0.015 * tm), 0.013, px) * (tm * (1 - tm) * 4)
    f = f - 0.3 * a["AU15"] * down
    f = f - 0.2 * a["AU24"] * stroke(np.abs(v - g["uo"] - 0.02), 0.012, px) * bump(u, 0.08)
    # Chin: a lit boss (raised by AU17) over a crease under the lower lip (deepened by AU17).
    f = f - 0.14 * bump(u, 0.07) * bump(v - (g["bottom"] - 0.028), 0.02)
    f = f + (0.05 + 0.09 * a["AU17"]) * bump(u, 0.08) * bump(v - (head["chin_v"] + 0.11), 0.05)
    return f - 0.25 * a["AU17"] * stroke(np.abs(v - (g["bottom"] - 0.03)), 0.016, px) * bump(u, 0.06)


def _nose(img, p, a, w: _Window, px):
    """Nostrils: dark, wider and taller with AU9."""
    nt, nw = _nose_position(p, a)
    d = ellipse(w.ua - 0.45 * nw, w.v - (nt - 0.032), 0.022 * nw / 0.065, 0.011 + 0.006 * a["AU9"])
    return mix(img, p["skin_tone"] * 0.25, 0.9 * ramp(d, px))


def _mouth(img, p, a, g, w: _Window, px):
    """Lips, the dark mouth, upper and lower teeth, and the lip line of a closed mouth."""
    u, v, tone, end = w.u, w.v, p["skin_tone"], g["end"]
    d_lips = np.maximum(np.maximum(v - g["uo"], g["lo"] - v), end)
    sheen = 1.0 + 0.18 * bump(u, 0.06) * bump(v - (g["li"] - 0.018), 0.012)
    lip = tone * np.where(v > g["line"], 0.56, 0.70) * sheen
    img = mix(img, lip, ramp(d_lips, px))
    d_open = np.maximum(np.maximum(v - g["ui"], g["li"] - v), end)
    teeth = 0.86 * (1.0 - 0.5 * g["s2"])
    inside = mix(0.07 + 0.06 * tone, teeth, ramp(g["ui"] - 0.036 - v, px))
    # Lower teeth show when AU16 lowers the lip, AU20 stretches it or AU10 bares the teeth.
    low = 0.026 * np.clip(a["AU16"] + a["AU20"] + 0.5 * a["AU10"], 0.0, 1.0)
    inside = mix(inside, 0.8 * teeth, ramp(v - g["li"] - low, px) * (low > 0.002))
    img = mix(img, inside, ramp(d_open, px))
    # Lip line where the lips meet: darker and wider when pressed (AU24) or smiling (AU12).
    width = 0.020 + 0.010 * a["AU24"] + 0.008 * a["AU12"]
    meet = stroke(np.abs(v - g["line"]), width, px) * ramp(end - 0.004, px)
    return mix(img, tone * 0.22, (0.8 + 0.2 * a["AU24"]) * meet)


# --- hair -----------------------------------------------------------------------------------


def _hair(p, head, frame, px, light) -> dict:
    """Hair coverage behind the head ("back") and over it ("front"), its grey level, and the
    shadow it casts on the forehead, each (faces, height, width).

    Each style (`hair_style`, see HAIR_STYLES) is drawn only for the faces that wear it.
    """
    shape = frame["u"].shape
    out = {key: np.zeros(shape) for key in ("back", "front", "colour", "shadow")}
    whole = _Window(frame, 2.0, -2.0, 2.0)
    # Short hair ends above the jaw (0.4 below the eyes at most), long and curly hair lower.
    short = _Window(frame, 2.0, float(np.min(p["eye_height"])) - 0.4, 2.0)
    for k, style in enumerate(HAIR_STYLES):
        idx = np.flatnonzero(p["hair_style"][:, 0, 0] == k)
        if len(idx) == 0:
            continue
        win = short if style in ("crop", "tied") else whole
        rows = {name: value[idx] for name, value in p.items()}
        outline = {"width": head["width"][win.index][idx], "top_v": head["top_v"][idx]}
        coords = (win.u[idx], win.v[idx], win.ua[idx])
        drawn = _hair_style(style, rows, outline, coords, px[idx], tuple(x[idx] for x in light))
        for key, value in drawn.items():
            out[key][(idx, *win.index[1:])] = value
    return out


def _hair_style(style: str, p, head, coords, px, light) -> dict:
    """`_hair` for the faces of one style.

    The mass over the skull has a lumpy (locks) or scalloped (curls) outline. Its front edge is
    a hairline that comes down to the temples (crop: a short, ragged fringe; fringe: uneven
    locks across the forehead). Long and fringe styles hang to `hair_length` with curtains over
    the face's edges; short styles show the back of the head down to the nape beside the jaw;
    tied hair has two bunches beside the head.
    """
    u, v, ua = coords
    hw, centre, ey, seed = p["head_width"], p["head_centre"], p["eye_height"], p["hair_seed"]
    thick = p["hair_volume"] * {"curly": 2.6, "crop": 0.6, "tied": 0.5}.get(style, 1.0)
    # Position along the outline: -1 on the left through 0 at the crown to 1 on the right
    # (mirrored below the centre), a cheap stand-in for the angle round the head.
    along = u / (np.abs(u) + np.abs(v - centre) + 1e-9)
    outline = ellipse(u, v - centre - 0.02, hw * 1.02 + thick, p["head_length"] + thick)
    if style == "curly":
        turn = along * 5.0 + seed  # round bumps, like a cloud's edge
        turn = 2.0 * (turn - np.floor(turn)) - 1.0
        curls = np.sqrt(np.clip(1.0 - turn * turn, 0.0, 1.0))
        outline = outline - 0.04 * curls
    else:
        outline = outline - 0.5 * thick * (noise(along * 7.0, seed) - 0.5)

    # The front edge.
    temple = ey + 0.09
    to_temple = smoothstep((ua - 0.16) / (hw - 0.1))  # clear of the raised brows
    edge = p["hairline"] - (p["hairline"] - temple) * to_temple + 0.012 * (noise(u * 30.0, seed) - 0.5)
    if style == "crop":  # short locks combed forward
        locks = 0.05 + 0.025 * noise(u * 20.0, seed + 7) + 0.008 * np.abs(wave(u * 16.0 + seed))
        edge = edge - locks * (1 - to_temple)
    elif style == "fringe":
        locks = 0.022 * (noise(u * 16.0, seed + 7) - 0.5) - 0.012 * np.abs(wave(u * 11.0 + seed))
        bangs = p["fringe"] + locks - 0.03 * p["hair_parting"] * u / 0.15
        edge = bangs - (bangs - temple) * smoothstep((ua - 0.30) / (hw - 0.25))
    front = np.maximum(outline, edge - v)
    if style == "curly":  # curls frame the face in an oval opening with a curly rim
        top = p["hairline"] + 0.02 - (ey - 0.2)
        opening = ellipse(u, v - (ey - 0.2), 0.95 * hw, top) - 0.025 * curls
        front = np.maximum(outline, -opening)
        edge = ey - 0.2 + top * np.sqrt(np.clip(1.0 - (u / (0.95 * hw)) ** 2, 0.0, 1.0))

    face_edge = head["width"] * 0.93
    if style in ("long", "fringe"):
        # Hanging from the widest point of the head, the ends curving in and uneven; in front,
        # curtains overlap the face's edges at eye level and recede below.
        bottom = ey - 0.3 - 0.55 * p["hair_length"]
        width = (hw * 1.02 + thick) * (1.0 - 0.06 * np.clip((ey - v) / 0.5, 0.0, 1.0))
        rel = ua / width
        ends = bottom + 0.08 * rel * rel * rel + 0.04 * (noise(u * 14.0, seed + 5) - 0.5)
        hang = np.where(v < centre, np.maximum(ua - width, ends - v), outline)
        back = np.minimum(outline, hang)
        inner = face_edge - 0.04 + 0.07 * smoothstep((ey + 0.05 - v) / 0.35)
        front = np.minimum(front, np.maximum(np.maximum(inner - ua, ends - v), hang))
    elif style == "curly":
        back = outline
    else:
        back = np.maximum(outline, ey - 0.22 - v)  # the back of the head, down to the nape
    if style == "tied":
        out = ua - (hw + 0.07)  # bunches hang from behind the ears, splaying outwards
        bunch = ellipse(out - 0.3 * (ey - 0.02 - v), v - (ey - 0.16), 0.07, 0.19)
        back = np.minimum(back, bunch - 0.012 * (noise(v * 25.0, seed + 3) - 0.5))

    cover = ramp(front, 1.2 * px)
    shadow = 0.3 * bump(v - edge + 0.02, 0.025) * (ua < face_edge) * ramp(outline, px) * (1 - cover)
    colour = _hair_colour(p, head, u, v, px, light, thick, curly=style == "curly")
    if style in ("crop", "long", "tied"):  # a parting: a thin line of scalp towards the crown
        part = stroke(np.abs(u - p["hair_parting"]), 0.012, px)
        part = part * np.clip((v - p["hairline"]) / 0.08, 0.0, 1.0)
        part = part * np.clip((head["top_v"] - 0.05 - v) / 0.1, 0, 1)
        colour = mix(colour, p["skin_tone"] * 0.75, 0.7 * part)
    return {"back": ramp(back, 1.5 * px), "front": cover, "colour": colour, "shadow": shadow}


def _hair_colour(p, head, u, v, px, light, thick, curly: bool):
    """Grey level of the hair: locks combed from the parting (or curls), a sheen, shading."""
    dark, seed = p["hair_darkness"], p["hair_seed"]
    if curly:
        texture = 0.5 + _fade(0.05, px) * (_curls(u, v, seed) - 0.5)
    else:
        du = u - p["hair_parting"]
        dv = head["top_v"] + 0.35 - v
        direction = du / np.sqrt(du * du + dv * dv)  # locks fan out from above the parting
        # Locks about 0.05 units wide, single strands 0.012; each fades out as it nears the
        # pixel size (at 64x64 a pixel is 0.0275), so small images do not alias into moire.
        texture = 0.5 + _fade(0.05, px) * 0.9 * (noise(direction * 14.0, seed) - 0.5)
        if np.max(_fade(0.012, px)) > 0:  # strands are invisible at 64x64: skip the work
            texture = texture + _fade(0.012, px) * 0.5 * (noise(direction * 60.0, seed + 2) - 0.5)
    # Sheen: a bright band across the crown, towards the light; darker away from it.
    rx = u / (p["head_width"] + thick)
    ry = (v - p["head_centre"]) / (p["head_length"] + thick)
    r = np.sqrt(rx * rx + ry * ry)
    sheen = bump(r - 0.72, 0.09) * np.clip(ry * 2.0, 0.0, 1.0) * (1.0 + 0.5 * light[0] * rx)
    lit = 0.75 + 0.35 * np.clip(rx * light[0] + ry * light[1] + 0.5, 0.0, 1.0)
    gloss = (0.05 if curly else 0.10) + (0.11 if curly else 0.22) * dark
    return dark * (0.55 + 0.9 * texture) * lit + gloss * sheen


def _fade(period: float, px):
    """Weight of a texture of this period (face units): 1 from 3 pixels up, 0 at 1 pixel."""
    return np.clip(0.5 * period / px - 0.5, 0.0, 1.0)


def _curls(u, v, seed):
    """Texture of tight curls in [0, 1]: rings packed on a staggered grid, lit on one side."""
    x, y = u * 19.0, v * 19.0
    j = np.floor(y)
    x = x + 0.5 * (j - 2.0 * np.floor(0.5 * j))  # stagger alternate rows
    i = np.floor(x)
    cell = i * 157.0 + j * 113.0 + 1000.0 * seed
    dx = x - i - 0.5 - 0.2 * (hash01(cell) - 0.5)
    dy = y - j - 0.5 - 0.2 * (hash01(cell + 50.0) - 0.5)
    ring = bump(np.sqrt(dx * dx + dy * dy) - 0.25, 0.07) * np.clip(0.5 + dy - dx, 0.0, 1.0)
    return 0.3 + 0.35 * hash01(cell + 9.0) + 0.35 * ring
