"""Face sources: photographs and data sets in, a `FaceSet` of preprocessed images out.

Readers turn each source into a `FaceSet` of preprocessed uint8 images:
- `read_cafe`: CAFE as its archive ships it (numbered images + stimulus spreadsheet);
- `read_fer2013`: FER2013's `emotion,pixels,Usage` CSV;
- `read_folder`: one sub-folder per emotion;
- `read_manifest`: a CSV with columns path, emotion, identity.
The procedural faces (`vae.procedural`) are one more source. Every source ends in the one
store (`vae.store`); nothing downstream knows where a face came from.
Every file-facing error names the file (and spreadsheet row) it is about.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from vae.faceset import FaceSet
from vae.images import (
    STRETCH_PERCENTILES,
    SURROUND_RADII,
    ToneReference,
    child_surround,
    load_image,
    match_tone,
    match_within_child,
    preprocess,
    tone_reference,
)
from vae.labels import EMOTIONS, FER2013_CODES, canonical_emotion

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")


PREPROCESSING = (
    "grayscale (ITU-R 601-2 luma); centre crop to the target aspect ratio; "
    "Lanczos (antialiased) resize; per-image percentile stretch "
    f"(p{STRETCH_PERCENTILES[0]:g} -> 0, p{STRETCH_PERCENTILES[1]:g} -> 255, clipped)"
)
ALIGNED_PREPROCESSING = (
    "aligned (vae.align: face detected, eyes level at fixed places, else the box rule; "
    "photos without a face rejected, listed in attrs 'rejected'); grayscale (ITU-R 601-2 "
    "luma); bilinear resampling, antialiased; lighting gradient divided out (a plane fitted "
    f"to the log intensities); scaled to its white point (p{STRETCH_PERCENTILES[1]:g} -> 255, "
    "black kept); each child's common grey levels (each photo's percentiles mapped by a "
    "monotone curve onto those of the child's photos pooled); each child's tone curve (one monotone curve "
    "per child mapping its pooled face greys to the default faces' spread at the child's own "
    f"median); outside the face (blended from {SURROUND_RADII[0]:g} to {SURROUND_RADII[1]:g} "
    "face-ellipse radii), the mean of the child's frames"
)
# Children of the default faces (`vae.procedural`, seed 0) whose spread of face greys, by tone,
# aligned photographs are given (`default_tone_reference`)
TONE_REFERENCE_CHILDREN = 32


# ----------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Photos:
    """Photographs read for a store: the faces kept and the photos rejected with the reason.

    images: (m, height, width) uint8, the kept faces in the order of the paths.
    kept: (n,) bool over the paths read.
    truth: per kept face, from alignment only: "align_method" (m,) str ("eyes" or "box"),
        "left_eye" and "right_eye" (m, 2) float64 (x, y) in the photo's pixels.
    rejected: (path, reason) of every photo in which no face was found (alignment only).
    """

    images: np.ndarray
    kept: np.ndarray
    truth: dict[str, np.ndarray]
    rejected: tuple[tuple[str, str], ...]


def _read_images(paths: Sequence[Path], size: tuple[int, int], align: bool = False) -> Photos:
    """Read and preprocess `paths` in order; with `align`, detect and frame each face
    (`vae.align`) and reject the photos without one instead of keeping the whole picture."""
    if not align:
        images = np.empty((len(paths), *size), dtype=np.uint8)
        for i, path in enumerate(paths):
            images[i] = preprocess(load_image(path), size)
        return Photos(images, np.ones(len(paths), dtype=bool), {}, ())
    from vae.align import NoFace, align_face  # scikit-image only when photos are aligned

    faces, found, rejected = [], [], []
    kept = np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        try:
            face, where = align_face(load_image(path), size)
        except NoFace as reason:
            rejected.append((str(path), str(reason)))
            continue
        kept[i] = True
        faces.append(face)
        found.append(where)
    truth = {
        "align_method": np.array([a.method for a in found], dtype=str),
        "left_eye": np.array([a.left_eye for a in found], dtype=np.float64).reshape(-1, 2),
        "right_eye": np.array([a.right_eye for a in found], dtype=np.float64).reshape(-1, 2),
    }
    images = np.array(faces, dtype=np.uint8).reshape(-1, *size)
    return Photos(images, kept, truth, tuple(rejected))


def _faceset(photos: Photos, labels: np.ndarray, identities: np.ndarray, source: str,
             truth: dict[str, np.ndarray], attrs: dict[str, object], where: Path) -> FaceSet:
    """A FaceSet of the kept photos: per-photo arrays (n rows) are cut to the kept faces;
    alignment adds its truth and records the rejects (attrs["rejected"], JSON)."""
    if not photos.kept.any():
        raise ValueError(
            f"no face found in any of the {len(photos.kept)} photos in {where} (e.g. "
            f"{photos.rejected[0][0]}: {photos.rejected[0][1]})"
        )
    keep = photos.kept
    attrs = dict(attrs)
    images = photos.images
    if photos.truth:
        attrs["preprocessing"] = ALIGNED_PREPROCESSING
        attrs["rejected"] = [{"file": f, "reason": r} for f, r in photos.rejected]
        children = np.asarray(identities)[keep]
        from vae.align import face_radius

        images = child_surround(child_grey_levels(images, children), children,
                                face_radius(images.shape[1:]))
    return FaceSet(
        images=images,
        labels=np.asarray(labels)[keep],
        identities=np.asarray(identities)[keep],
        source=source,
        ground_truth={**{k: np.asarray(v)[keep] for k, v in truth.items()}, **photos.truth},
        attrs=attrs,
    )


def child_grey_levels(images: np.ndarray, children: np.ndarray) -> np.ndarray:
    """(n, h, w) uint8: aligned frames (n, h, w) given, child by child (`children`, (n,)), the
    child's common grey levels (`match_within_child`) and then the default faces' spread of
    greys for the child's tone (`match_tone`), both measured in the face region."""
    from vae.align import face_region

    size = images.shape[1:]
    return match_tone(match_within_child(images, children), children, face_region(size),
                      default_tone_reference(size))


@lru_cache(maxsize=4)
def default_tone_reference(size: tuple[int, int]) -> ToneReference:
    """The spread of face greys by tone (`vae.images.ToneReference`) of the default faces:
    `TONE_REFERENCE_CHILDREN` children drawn at `size` (height, width), seed 0, measured in
    the face region of the aligned frame (`vae.align.face_region`). About a second."""
    from vae.align import face_region
    from vae.procedural.faces import generate_faces

    faces = generate_faces(TONE_REFERENCE_CHILDREN, poses_per_emotion=2, size=size, seed=0)
    return tone_reference(faces.images, faces.identities, face_region(size))


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive (height, width), got {size}")
    return height, width


def _is_image_file(path: Path) -> bool:
    # Hidden files include macOS "._1007.jpg" resource forks, which are not images.
    hidden = path.name.startswith(".")
    return path.is_file() and not hidden and path.suffix.lower() in IMAGE_SUFFIXES


def _label_indices(emotions: Sequence[str]) -> np.ndarray:
    return np.array([EMOTIONS.index(e) for e in emotions], dtype=np.int64)


# ----------------------------------------------------------------------------- tables


def _read_table(path: Path) -> pd.DataFrame:
    """A CSV or spreadsheet (.xlsx/.xlsm/.xls) as strings, with column names stripped.

    Empty rows are dropped but the index keeps the position of each row, so
    `index + 2` is the row number a spreadsheet user sees (row 1 is the header).
    """
    if not path.is_file():
        raise FileNotFoundError(f"table not found: {path}")
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
            table = pd.read_excel(path, dtype=str)
        else:
            table = pd.read_csv(path, dtype=str, skip_blank_lines=False)
    except Exception as err:  # pandas/openpyxl raise many types for unreadable tables
        raise ValueError(f"cannot read table {path}: {type(err).__name__}: {err}") from err
    table.columns = [str(c).strip() for c in table.columns]
    return table.dropna(how="all")


def _find_column(table: pd.DataFrame, name: str, path: Path) -> str:
    """The table's own spelling of column `name` (matched ignoring case and spaces)."""
    wanted = name.strip().lower()
    for column in table.columns:
        if column.lower() == wanted:
            return column
    raise ValueError(
        f"{path} has no column {name!r} (columns: {', '.join(map(repr, table.columns))})"
    )


def _cell(value: object) -> str:
    """A table cell as stripped text; empty for a missing cell; '1007' for '1007.0'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value).strip()
    if re.fullmatch(r"\d+\.0+", text):
        text = text.split(".")[0]
    return "" if text.lower() == "nan" else text


# ----------------------------------------------------------------------------- CAFE


@dataclass(frozen=True)
class CafeColumns:
    """Column names of the CAFE stimulus spreadsheet (matched ignoring case and spaces).

    number: the stimulus number, which is the image's file name without extension (1007 ->
        1007.jpg).
    model: the child model's id (the identity; splits never share a model).
    emotion: the emotion code, e.g. "happy", "Happiness", "disgust", "happy_open",
        "happy open", "happy closed". An open/closed/teeth part is read as the mouth.
    mouth: mouth position ("open", "closed", "teeth"). Optional: if the spreadsheet has no
        such column, the mouth is read from the emotion cell.
    """

    number: str = "number"
    model: str = "model"
    emotion: str = "emotion"
    mouth: str = "mouth"


# "teeth" (teeth showing) counts as open: the lips are apart, which is what the decoder sees.
_MOUTH_WORDS = {"open": True, "opened": True, "teeth": True, "closed": False, "close": False}


def _parse_emotion_cell(text: str) -> tuple[str, bool | None]:
    """'happy_open' -> ('happy', True); 'Disgusted' -> ('disgusted', None)."""
    words = [w for w in re.split(r"[\s_\-/]+", text.strip().lower()) if w]
    mouth = [_MOUTH_WORDS[w] for w in words if w in _MOUTH_WORDS]
    rest = [w for w in words if w not in _MOUTH_WORDS and w not in ("mouth", "showing")]
    if len(set(mouth)) > 1:
        raise ValueError(f"emotion {text!r} says both open and closed")
    return canonical_emotion(" ".join(rest)), (mouth[0] if mouth else None)


def _parse_mouth(text: str) -> bool:
    words = [w for w in re.split(r"[\s_\-/]+", text.strip().lower()) if w in _MOUTH_WORDS]
    if not words or len({_MOUTH_WORDS[w] for w in words}) > 1:
        raise ValueError(f"mouth {text!r} is not one of {', '.join(sorted(_MOUTH_WORDS))}")
    return _MOUTH_WORDS[words[0]]


def read_cafe(
    image_dir: str | os.PathLike,
    spreadsheet: str | os.PathLike,
    size: tuple[int, int] = (64, 40),
    columns: CafeColumns = CafeColumns(),
    align: bool = False,
) -> FaceSet:
    """The CAFE set from its numbered images and its stimulus spreadsheet.

    image_dir: folder of numbered image files (1007.jpg, 1008.png, ...); files whose name
        does not end in an image suffix (the spreadsheet itself, notes) are ignored.
    spreadsheet: CSV or XLSX export of the stimulus spreadsheet, header in row 1.
    size: (height, width) of the stored images; the study used 64x40.
    align: find and frame each face (`vae.align`); photos without one are left out and
        listed in attrs["rejected"]. Otherwise the whole image is centre-cropped.
    Identity = the model id. Ground truth: "mouth_open" (n,) bool, "file" (n,) str.
    Errors name the image file or the spreadsheet row (1-based, header = row 1) for: an image
    with no row, a row with no image, a duplicate number, a label that does not map.
    """
    image_dir, spreadsheet, size = Path(image_dir), Path(spreadsheet), _check_size(size)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"CAFE image folder not found: {image_dir}")
    files: dict[int, Path] = {}
    for path in sorted(p for p in image_dir.iterdir() if _is_image_file(p)):
        if not path.stem.isdigit():
            raise ValueError(
                f"CAFE image {path} is not named by its stimulus number (expected e.g. 1007.jpg)"
            )
        number = int(path.stem)
        if number in files:
            raise ValueError(f"two CAFE images have number {number}: {files[number]} and {path}")
        files[number] = path
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in CAFE folder {image_dir}")

    table = _read_table(spreadsheet)
    number_col = _find_column(table, columns.number, spreadsheet)
    model_col = _find_column(table, columns.model, spreadsheet)
    emotion_col = _find_column(table, columns.emotion, spreadsheet)
    try:
        mouth_col: str | None = _find_column(table, columns.mouth, spreadsheet)
    except ValueError:
        mouth_col = None

    rows: dict[int, tuple[int, str, str, bool]] = {}  # number -> (row, model, emotion, open)
    for index, record in table.iterrows():
        row = int(index) + 2
        where = f"{spreadsheet} row {row}"
        number_text = _cell(record[number_col])
        if not number_text.isdigit():
            raise ValueError(f"{where}: {columns.number!r} is {number_text!r}, not a number")
        number = int(number_text)
        if number in rows:
            raise ValueError(f"{where}: number {number} is already in row {rows[number][0]}")
        model = _cell(record[model_col])
        if not model:
            raise ValueError(f"{where}: {columns.model!r} is empty")
        try:
            emotion, mouth = _parse_emotion_cell(_cell(record[emotion_col]))
            mouth_text = _cell(record[mouth_col]) if mouth_col else ""
            if mouth_text:
                column_mouth = _parse_mouth(mouth_text)
                if mouth is not None and mouth != column_mouth:
                    raise ValueError(
                        f"emotion {_cell(record[emotion_col])!r} contradicts mouth {mouth_text!r}"
                    )
                mouth = column_mouth
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if mouth is None:
            raise ValueError(
                f"{where}: no mouth position: column {columns.mouth!r} is "
                f"{'empty' if mouth_col else 'missing'} and emotion "
                f"{_cell(record[emotion_col])!r} has no open/closed part"
            )
        rows[number] = (row, model, emotion, mouth)

    for number, path in files.items():
        if number not in rows:
            raise ValueError(f"CAFE image {path} has no row with number {number} in {spreadsheet}")
    for number, (row, *_) in rows.items():
        if number not in files:
            raise ValueError(
                f"{spreadsheet} row {row}: no image numbered {number} in {image_dir}"
            )

    numbers = sorted(files)
    return _faceset(
        _read_images([files[k] for k in numbers], size, align),
        labels=_label_indices([rows[k][2] for k in numbers]),
        identities=np.array([rows[k][1] for k in numbers], dtype=str),
        source="cafe",
        truth={
            "mouth_open": np.array([rows[k][3] for k in numbers], dtype=bool),
            "file": np.array([files[k].name for k in numbers], dtype=str),
        },
        attrs={
            "preprocessing": PREPROCESSING,
            "source_path": str(image_dir),
            "spreadsheet": str(spreadsheet),
            "identity": "CAFE model id",
        },
        where=image_dir,
    )


# ----------------------------------------------------------------------------- FER2013

FER2013_SIDE = 48
_PIXELS = re.compile(r"\d+(?:\s+\d+)*")


def read_fer2013(
    csv_path: str | os.PathLike,
    size: tuple[int, int] = (64, 64),
    usage: str | Sequence[str] | None = None,
) -> FaceSet:
    """FER2013's CSV (columns emotion, pixels, Usage; 48x48 space-separated pixel strings).

    usage: keep only rows whose Usage is this value or one of these values ("Training",
        "PublicTest", "PrivateTest"; case ignored); None keeps every row.
    FER2013 has no identity labels, so every row is its own identity ("fer2013-<row>"),
    which keeps `split_by_identity` working; attrs["identity"] records that.
    Ground truth: "usage" (n,) str, "row" (n,) int64 (CSV line number, header = 1).
    """
    csv_path, size = Path(csv_path), _check_size(size)
    table = _read_table(csv_path)
    emotion_col = _find_column(table, "emotion", csv_path)
    pixels_col = _find_column(table, "pixels", csv_path)
    usage_col = _find_column(table, "usage", csv_path)
    usages = table[usage_col].fillna("").str.strip()
    if usage is not None:
        wanted = {usage.lower()} if isinstance(usage, str) else {u.lower() for u in usage}
        present = set(usages.str.lower())
        if not wanted <= present:
            raise ValueError(
                f"usage {sorted(wanted - present)} not in {csv_path} "
                f"(its Usage values: {sorted(set(usages))})"
            )
        keep = usages.str.lower().isin(wanted).to_numpy()
        table, usages = table[keep], usages[keep]

    n_pixels = FER2013_SIDE * FER2013_SIDE
    images = np.empty((len(table), *size), dtype=np.uint8)
    labels = np.empty(len(table), dtype=np.int64)
    for i, (index, code, pixels) in enumerate(
        zip(table.index, table[emotion_col], table[pixels_col], strict=True)
    ):
        where = f"{csv_path} line {int(index) + 2}"
        code_text = _cell(code)
        if not code_text.isdigit() or int(code_text) not in FER2013_CODES:
            raise ValueError(f"{where}: emotion {code_text!r} is not a code 0..6")
        labels[i] = EMOTIONS.index(FER2013_CODES[int(code_text)])
        text = _cell(pixels)
        # the pattern check makes fromstring (5x faster than split + int) safe
        flat = np.fromstring(text, dtype=np.int64, sep=" ") if _PIXELS.fullmatch(text) else None
        if flat is None or flat.size != n_pixels or flat.max() > 255:
            raise ValueError(
                f"{where}: pixels must be {n_pixels} integers 0..255 separated by spaces "
                f"({FER2013_SIDE}x{FER2013_SIDE}), got {len(text.split())} values"
            )
        images[i] = preprocess(flat.reshape(FER2013_SIDE, FER2013_SIDE), size)
    rows = table.index.to_numpy(dtype=np.int64) + 2
    return FaceSet(
        images=images,
        labels=labels,
        identities=np.array([f"fer2013-{r}" for r in rows], dtype=str),
        source="fer2013",
        ground_truth={"usage": usages.to_numpy(dtype=str), "row": rows},
        attrs={
            "preprocessing": PREPROCESSING,
            "source_path": str(csv_path),
            "usage": "all" if usage is None else ", ".join(sorted(set(usages))),
            "identity": "per row: FER2013 has no identity labels, each image is its own identity",
        },
    )


# ----------------------------------------------------------------------------- folder / manifest

_IDENTITY_PREFIX = re.compile(r"^([^_]+)_.+$")


def read_folder(root: str | os.PathLike, size: tuple[int, int] = (64, 64),
                align: bool = False) -> FaceSet:
    """A labelled face set laid out as one sub-folder per emotion.

    root/<emotion>/<file>: <emotion> is any accepted variant ("happy", "Happiness", ...).
    The identity is the file name's prefix before the first "_" (child07_happy.png ->
    "child07"); a name without "_" is its own identity (its stem). Files without an image
    suffix are ignored; a sub-folder whose name is not an emotion is an error.
    align: find and frame each face (`vae.align`); photos without one are left out and
        listed in attrs["rejected"]. Otherwise the whole image is centre-cropped.
    Ground truth: "file" (n,) str, the path relative to `root`.
    """
    root, size = Path(root), _check_size(size)
    if not root.is_dir():
        raise FileNotFoundError(f"face folder not found: {root}")
    paths: list[Path] = []
    emotions: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            emotion = canonical_emotion(folder.name)
        except ValueError as err:
            raise ValueError(f"folder {folder} is not named after an emotion: {err}") from None
        files = sorted(p for p in folder.iterdir() if _is_image_file(p))
        paths += files
        emotions += [emotion] * len(files)
    if not paths:
        raise ValueError(
            f"no images in {root}: expected {root}/<emotion>/<image> with <emotion> one of "
            f"{', '.join(EMOTIONS)}"
        )
    identities = [
        m.group(1) if (m := _IDENTITY_PREFIX.match(p.stem)) else p.stem for p in paths
    ]
    return _faceset(
        _read_images(paths, size, align),
        labels=_label_indices(emotions),
        identities=np.array(identities, dtype=str),
        source="folder",
        truth={"file": np.array([p.relative_to(root).as_posix() for p in paths], dtype=str)},
        attrs={
            "preprocessing": PREPROCESSING,
            "source_path": str(root),
            "identity": "file name prefix before the first '_', else the file stem",
        },
        where=root,
    )


def read_manifest(csv_path: str | os.PathLike, size: tuple[int, int] = (64, 64),
                  align: bool = False) -> FaceSet:
    """A labelled face set listed in a CSV with columns path, emotion, identity.

    Relative paths are relative to the manifest's folder. Rows keep the manifest's order.
    align: find and frame each face (`vae.align`); photos without one are left out and
        listed in attrs["rejected"]. Otherwise the whole image is centre-cropped.
    Ground truth: "file" (n,) str, the path as written in the manifest.
    """
    csv_path, size = Path(csv_path), _check_size(size)
    table = _read_table(csv_path)
    cols = {name: _find_column(table, name, csv_path) for name in ("path", "emotion", "identity")}
    paths: list[Path] = []
    emotions: list[str] = []
    identities: list[str] = []
    for index, record in table.iterrows():
        where = f"{csv_path} row {int(index) + 2}"
        path_text, identity = _cell(record[cols["path"]]), _cell(record[cols["identity"]])
        if not path_text or not identity:
            raise ValueError(f"{where}: path and identity must not be empty")
        try:
            emotions.append(canonical_emotion(_cell(record[cols["emotion"]])))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        path = csv_path.parent / path_text
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image file not found: {path}")
        paths.append(path)
        identities.append(identity)
    if not paths:
        raise ValueError(f"manifest {csv_path} lists no images")
    return _faceset(
        _read_images(paths, size, align),
        labels=_label_indices(emotions),
        identities=np.array(identities, dtype=str),
        source="manifest",
        truth={"file": np.array([_cell(p) for p in table[cols["path"]]], dtype=str)},
        attrs={
            "preprocessing": PREPROCESSING,
            "source_path": str(csv_path),
            "identity": "manifest identity column",
        },
        where=csv_path,
    )
