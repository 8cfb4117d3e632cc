"""Contact sheets of an aligned photo set: every face kept, and every photo rejected and why.

A lab checks its own photographs by eye after `python -m vae.data build ... --align`: the kept
sheet shows each aligned face as the store holds it, under its file name, its emotion, and
"box" when the eyes were not found and the box rule framed it; the rejected sheet shows each
rejected photo as it is, beside its file name and the reason. Faces are enlarged by an integer
factor (nearest neighbour) so nothing is smoothed away.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vae.faceset import FaceSet

_MIN_FACE_PX = 96  # each kept face is shown at least this tall
_COLUMNS = 12
_GAP = 6
_LABEL = 30  # two text lines under each kept face
_FONT_PX = 11
_THUMB = 160  # a rejected photo is fitted into this square
_REASON_WIDTH = 420  # pixels of text beside a rejected photo


def rejected(faceset: FaceSet) -> list[tuple[str, str]]:
    """(file, reason) of the photos the alignment rejected (attrs["rejected"]; [] if none)."""
    entries = faceset.attrs.get("rejected", [])
    if isinstance(entries, str):  # JSON text once read back from a store
        entries = json.loads(entries)
    return [(str(e["file"]), str(e["reason"])) for e in entries]


def kept_sheet(faceset: FaceSet) -> np.ndarray:
    """(height, width) uint8 grid of every face in the set, in store order, each under two
    lines: its file name (ground truth "file", else its index) and "emotion" or
    "emotion, box: check" in a black frame (the box rule framed it: the eyes were not found,
    so the face may be framed loosely, or not be a face at all)."""
    h, w = faceset.image_size
    zoom = -(-_MIN_FACE_PX // h)
    cell_w = max(w * zoom, 80)
    n = len(faceset)
    rows = -(-n // _COLUMNS)
    width = _GAP + min(n, _COLUMNS) * (cell_w + _GAP)
    height = _GAP + rows * (h * zoom + _LABEL + _GAP)
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=_FONT_PX)
    files = faceset.ground_truth.get("file")
    methods = faceset.ground_truth.get("align_method")
    for i in range(n):
        top = _GAP + (i // _COLUMNS) * (h * zoom + _LABEL + _GAP)
        left = _GAP + (i % _COLUMNS) * (cell_w + _GAP)
        face = np.kron(faceset.images[i], np.ones((zoom, zoom), dtype=np.uint8))
        canvas.paste(Image.fromarray(face), (left + (cell_w - w * zoom) // 2, top))
        name = Path(str(files[i])).name if files is not None else f"#{i}"
        note = faceset.label_names[int(faceset.labels[i])]
        if methods is not None and methods[i] == "box":
            note += ", box: check"
            draw.rectangle((left - 3, top - 3, left + cell_w + 2, top + h * zoom + 2), outline=0,
                           width=2)
        for k, line in enumerate((name, note)):
            draw.text((left, top + h * zoom + 2 + 13 * k), _fit(line, font, cell_w), fill=0,
                      font=font)
    return np.asarray(canvas)


def rejected_sheet(entries: list[tuple[str, str]]) -> np.ndarray:
    """(height, width) uint8 sheet: one row per rejected photo, the photo (grey, fitted into
    _THUMB pixels) beside its file name and the reason; one line saying so when none."""
    font = ImageFont.load_default(size=_FONT_PX + 2)
    width = 3 * _GAP + _THUMB + _REASON_WIDTH
    if not entries:
        canvas = Image.new("L", (width, 40), 255)
        ImageDraw.Draw(canvas).text((_GAP, 12), "no photo was rejected", fill=0, font=font)
        return np.asarray(canvas)
    canvas = Image.new("L", (width, _GAP + len(entries) * (_THUMB + _GAP)), 255)
    draw = ImageDraw.Draw(canvas)
    for i, (file, reason) in enumerate(entries):
        top = _GAP + i * (_THUMB + _GAP)
        try:
            with Image.open(file) as photo:
                thumb = photo.convert("L")
                thumb.thumbnail((_THUMB, _THUMB))
            canvas.paste(thumb, (_GAP, top))
        except OSError:
            draw.text((_GAP, top), "(unreadable)", fill=0, font=font)
        lines = [file, *_wrap(reason, font, _REASON_WIDTH)]
        for k, line in enumerate(lines[: _THUMB // 16]):
            draw.text((2 * _GAP + _THUMB, top + 16 * k), _fit(line, font, _REASON_WIDTH),
                      fill=0, font=font)
    return np.asarray(canvas)


def save_align_sheets(faceset: FaceSet, store: str | Path) -> tuple[Path, Path]:
    """Write <store stem>-kept.png and <store stem>-rejected.png beside the store."""
    store = Path(store)
    kept = store.with_name(store.stem + "-kept.png")
    rejects = store.with_name(store.stem + "-rejected.png")
    kept.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(kept_sheet(faceset)).save(kept)
    Image.fromarray(rejected_sheet(rejected(faceset))).save(rejects)
    return kept, rejects


def _fit(text: str, font, width: int) -> str:
    """`text`, cut in the middle with "..." when it is wider than `width` pixels."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 4 and font.getlength(f"{text[: keep // 2]}...{text[-(keep // 2):]}") > width:
        keep -= 1
    return f"{text[: keep // 2]}...{text[-(keep // 2):]}"


def _wrap(text: str, font, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split(" "):
        trial = f"{current} {word}" if current else word
        if current and font.getlength(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    return [*lines, current]
