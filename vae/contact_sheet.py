"""Contact sheet of a face set: identities down, emotions across, enlarged for human eyes.

Used to judge a face set by eye (does each column read as its emotion?) and in demos.
Pixels are enlarged by an integer factor (nearest neighbour) so nothing is smoothed away.
When the set describes how its expressions were made (attrs["expressions"], one line per
emotion, as the procedural generator writes), the lines are printed under the grid, so the
picture carries its own caption.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vae.faceset import FaceSet

_MIN_FACE_PX = 128  # each face is shown at least this tall
_GAP = 6  # pixels between cells
_TOP = 34  # column-title band
_LEFT = 92  # row-label band
_FONT_PX = 16
_CAPTION_PX = 12
_CAPTION_LINE = 16  # pixels per caption line


def sheet_layout(
    image_size: tuple[int, int], n_rows: int, n_cols: int, n_caption_lines: int = 0
) -> dict[str, int]:
    """Pixel layout of a sheet: zoom factor, cell size, caption top, total (height, width)."""
    h, w = image_size
    zoom = -(-_MIN_FACE_PX // h)  # ceil
    cell_h, cell_w = h * zoom, w * zoom
    grid_bottom = _TOP + n_rows * (cell_h + _GAP)
    return {
        "zoom": zoom,
        "cell_h": cell_h,
        "cell_w": cell_w,
        "caption_top": grid_bottom,
        "height": grid_bottom + (n_caption_lines * _CAPTION_LINE + 2 * _GAP if n_caption_lines else 0),
        "width": _LEFT + n_cols * (cell_w + _GAP),
    }


def contact_sheet(faceset: FaceSet, n_identities: int = 8, seed: int = 0, pose: int = 0) -> np.ndarray:
    """Grid image, (height, width) uint8 grey: rows = identities, columns = label_names.

    n_identities identities are drawn without replacement (seeded) from those in the set and
    shown in sorted order; each cell is the identity's image number `pose` (0 = first) of
    that label, or blank grey when it has none (the procedural set's pose 0 has the closed
    mouth, pose 1 the open one). Column titles are the label names, row labels the identity
    ids; the set's expression captions (attrs["expressions"]), if any, are printed below.
    """
    if n_identities < 1:
        raise ValueError(f"n_identities must be >= 1, got {n_identities}")
    if pose < 0:
        raise ValueError(f"pose must be >= 0 (0 = each cell's first image), got {pose}")
    ids = np.unique(faceset.identities)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(ids, size=min(n_identities, len(ids)), replace=False))
    names = faceset.label_names
    font = ImageFont.load_default(size=_FONT_PX)
    small = ImageFont.load_default(size=_CAPTION_PX)
    width = sheet_layout(faceset.image_size, len(chosen), len(names))["width"]
    caption = _wrap(_captions(faceset), small, width - 12)
    lay = sheet_layout(faceset.image_size, len(chosen), len(names), len(caption))
    sheet = np.full((lay["height"], lay["width"]), 255, dtype=np.uint8)
    for row, identity in enumerate(chosen):
        for col in range(len(names)):
            hits = np.flatnonzero((faceset.identities == identity) & (faceset.labels == col))
            face = faceset.images[hits[pose]] if len(hits) > pose else np.full(faceset.image_size, 128)
            big = np.kron(face, np.ones((lay["zoom"], lay["zoom"]), dtype=np.uint8))
            top = _TOP + row * (lay["cell_h"] + _GAP)
            left = _LEFT + col * (lay["cell_w"] + _GAP)
            sheet[top : top + lay["cell_h"], left : left + lay["cell_w"]] = big
    canvas = Image.fromarray(sheet)
    draw = ImageDraw.Draw(canvas)
    for col, name in enumerate(names):
        centre = _LEFT + col * (lay["cell_w"] + _GAP) + lay["cell_w"] // 2
        draw.text((centre, _TOP // 2), name, fill=0, font=font, anchor="mm")
    for row, identity in enumerate(chosen):
        middle = _TOP + row * (lay["cell_h"] + _GAP) + lay["cell_h"] // 2
        draw.text((6, middle), str(identity), fill=0, font=font, anchor="lm")
    for k, line in enumerate(caption):
        draw.text((6, lay["caption_top"] + _GAP + k * _CAPTION_LINE), line, fill=0, font=small)
    return np.asarray(canvas)


def _captions(faceset: FaceSet) -> list[str]:
    """attrs["expressions"]: a list of lines in memory, its JSON text once read from a store."""
    lines = faceset.attrs.get("expressions", [])
    if isinstance(lines, str):
        lines = json.loads(lines)
    return [str(line) for line in lines]


def _wrap(lines: list[str], font, width: int) -> list[str]:
    """Break each line at spaces so it fits `width` pixels; continuations are indented."""
    out = []
    for line in lines:
        current = ""
        for word in line.split(" "):
            trial = f"{current} {word}" if current else word
            if current and font.getlength(trial) > width:
                out.append(current)
                current = "    " + word
            else:
                current = trial
        out.append(current)
    return out


def save_contact_sheet(
    faceset: FaceSet, path: str | Path, n_identities: int = 8, seed: int = 0, pose: int = 0
) -> Path:
    """Write `contact_sheet(faceset, n_identities, seed, pose)` as a PNG at path; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"contact sheet path must end in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(faceset, n_identities, seed, pose)).save(path)
    return path
