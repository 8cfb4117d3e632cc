"""Contact sheet of a face set: identities down, emotions across, enlarged for human eyes.

Used to judge a face set by eye (does each column read as its emotion?) and in demos.
Pixels are enlarged by an integer factor (nearest neighbour) so nothing is smoothed away.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vae.faceset import FaceSet

_MIN_FACE_PX = 128  # each face is shown at least this tall
_GAP = 6  # pixels between cells
_TOP = 34  # column-title band
_LEFT = 92  # row-label band
_FONT_PX = 16


def sheet_layout(image_size: tuple[int, int], n_rows: int, n_cols: int) -> dict[str, int]:
    """Pixel layout of a sheet: zoom factor, cell size, total (height, width)."""
    h, w = image_size
    zoom = -(-_MIN_FACE_PX // h)  # ceil
    cell_h, cell_w = h * zoom, w * zoom
    return {
        "zoom": zoom,
        "cell_h": cell_h,
        "cell_w": cell_w,
        "height": _TOP + n_rows * (cell_h + _GAP),
        "width": _LEFT + n_cols * (cell_w + _GAP),
    }


def contact_sheet(faceset: FaceSet, n_identities: int = 8, seed: int = 0) -> np.ndarray:
    """Grid image, (height, width) uint8 grey: rows = identities, columns = label_names.

    n_identities identities are drawn without replacement (seeded) from those in the set and
    shown in sorted order; each cell is the identity's first image of that label, or blank grey
    when it has none. Column titles are the label names, row labels the identity ids.
    """
    if n_identities < 1:
        raise ValueError(f"n_identities must be >= 1, got {n_identities}")
    ids = np.unique(faceset.identities)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(ids, size=min(n_identities, len(ids)), replace=False))
    names = faceset.label_names
    lay = sheet_layout(faceset.image_size, len(chosen), len(names))
    sheet = np.full((lay["height"], lay["width"]), 255, dtype=np.uint8)
    for row, identity in enumerate(chosen):
        for col in range(len(names)):
            hits = np.flatnonzero((faceset.identities == identity) & (faceset.labels == col))
            face = faceset.images[hits[0]] if len(hits) else np.full(faceset.image_size, 128)
            big = np.kron(face, np.ones((lay["zoom"], lay["zoom"]), dtype=np.uint8))
            top = _TOP + row * (lay["cell_h"] + _GAP)
            left = _LEFT + col * (lay["cell_w"] + _GAP)
            sheet[top : top + lay["cell_h"], left : left + lay["cell_w"]] = big
    canvas = Image.fromarray(sheet)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=_FONT_PX)
    for col, name in enumerate(names):
        centre = _LEFT + col * (lay["cell_w"] + _GAP) + lay["cell_w"] // 2
        draw.text((centre, _TOP // 2), name, fill=0, font=font, anchor="mm")
    for row, identity in enumerate(chosen):
        middle = _TOP + row * (lay["cell_h"] + _GAP) + lay["cell_h"] // 2
        draw.text((6, middle), str(identity), fill=0, font=font, anchor="lm")
    return np.asarray(canvas)


def save_contact_sheet(faceset: FaceSet, path: str | Path, n_identities: int = 8, seed: int = 0) -> Path:
    """Write `contact_sheet(faceset, n_identities, seed)` as a PNG at path; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"contact sheet path must end in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(faceset, n_identities, seed)).save(path)
    return path
