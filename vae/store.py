"""The one HDF5 face store every source is written to, and identity-disjoint torch splits.

`write_store` / `read_store` are the one on-disk layout for every source (photographs, data
sets, the procedural faces); `store_hash` is the data hash a VAE checkpoint records.
A store is never overwritten: it is written to a temporary file in the same folder and only
then linked into place, so a crash never leaves half a store under the real name.
Every file-facing error names the file (and HDF5 dataset) it is about.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import torch

from vae import __version__
from vae.faceset import FaceSet

STORE_FORMAT = 1

_REQUIRED = ("images", "labels", "identities", "label_names")
_STRING = h5py.string_dtype(encoding="utf-8")


def write_store(faceset: FaceSet, path: str | os.PathLike) -> Path:
    """Write `faceset` to a new HDF5 store at `path`; never overwrites.

    Layout: images (n, h, w) uint8 (chunked, gzip); labels (n,) int64; identities (n,) and
    label_names (k,) utf-8 strings; ground_truth/<name> (n, ...) arrays. Root attributes:
    source, preprocessing, created_utc (ISO 8601), vae_version, store_format, and every
    `faceset.attrs` entry (str, numbers, bools and numeric arrays as is; anything else as
    its JSON text). Missing parent folders are created.
    Raises FileExistsError naming the file if it exists.
    """
    path = Path(path)
    _refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with h5py.File(tmp, "x") as f:
            n, height, width = faceset.images.shape
            f.create_dataset(
                "images",
                data=faceset.images,
                chunks=(max(1, min(n, 256)), height, width),
                compression="gzip",
                compression_opts=4,
            )
            f.create_dataset("labels", data=np.asarray(faceset.labels, dtype=np.int64))
            f.create_dataset("identities", data=_as_text(faceset.identities), dtype=_STRING)
            f.create_dataset("label_names", data=_as_text(faceset.label_names), dtype=_STRING)
            truth = f.create_group("ground_truth")
            for name, values in faceset.ground_truth.items():
                values = np.asarray(values)
                if values.dtype.kind in "OUS":
                    truth.create_dataset(name, data=_as_text(values), dtype=_STRING)
                else:
                    truth.create_dataset(name, data=values)
            for key, value in faceset.attrs.items():
                f.attrs[key] = _attr_value(value)
            f.attrs["source"] = faceset.source
            f.attrs.setdefault("preprocessing", "none: images stored as given")
            f.attrs["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            f.attrs["vae_version"] = __version__
            f.attrs["store_format"] = STORE_FORMAT
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        _link_no_overwrite(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise _exists_error(path)


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(
        f"{path} already exists and is never overwritten; delete it or choose another --out"
    )


def _link_no_overwrite(tmp: Path, path: Path) -> None:
    """Move `tmp` to `path` atomically, failing if `path` appeared meanwhile."""
    try:
        os.link(tmp, path)  # atomic and refuses an existing target, unlike os.replace
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError:  # file systems without hard links: check, then replace
        _refuse_existing(path)
        os.replace(tmp, path)


def _as_text(values: Sequence[object] | np.ndarray) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def _attr_value(value: object) -> object:
    if isinstance(value, str | bool | int | float | np.generic):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    return json.dumps(value, default=str)


def read_store(path: str | os.PathLike) -> FaceSet:
    """Read a store written by `write_store`.

    Errors name the file: FileNotFoundError if it is missing; ValueError if it is not HDF5,
    truncated, lacks a dataset (named), or is inconsistent (lengths, label range).
    FaceSet.attrs holds every root attribute except source.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face store not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            for name in _REQUIRED:
                if not isinstance(f.get(name), h5py.Dataset):
                    raise ValueError(
                        f"face store {path} has no dataset {name!r}; rebuild it with "
                        f"python -m vae.data build"
                    )
            images = f["images"][()]
            labels = f["labels"][()].astype(np.int64)
            identities = np.array(f["identities"].asstr()[()], dtype=str)
            label_names = tuple(f["label_names"].asstr()[()])
            truth = {}
            for name, ds in f.get("ground_truth", {}).items():
                truth[name] = (
                    np.array(ds.asstr()[()], dtype=str)
                    if h5py.check_string_dtype(ds.dtype)
                    else ds[()]
                )
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except OSError as err:  # h5py: not HDF5, truncated, unreadable chunk
        raise ValueError(
            f"cannot read face store {path}: not a complete HDF5 file ({err}); "
            f"it may be truncated or not a store: delete it and rebuild it"
        ) from err
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"face store {path}: dataset 'images' must be uint8 (n, h, w), "
            f"got {images.dtype} {images.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(label_names)):
        raise ValueError(
            f"face store {path}: dataset 'labels' has values outside 0..{len(label_names) - 1}"
        )
    source = str(attrs.pop("source", "unknown"))
    try:
        return FaceSet(images, labels, identities, label_names, source, truth, attrs)
    except ValueError as err:
        raise ValueError(f"face store {path} is inconsistent: {err}") from None


def store_hash(path: str | os.PathLike) -> str:
    """sha256 hex digest of the store's *content* (the data hash a checkpoint records).

    It covers images, labels, identities, label names, source and ground truth, not the file
    bytes: a store rebuilt on another machine (new creation time, other gzip build) holds the
    same faces and must hash the same, or a committed model would not recognise its data.
    """
    faces = read_store(path)
    digest = hashlib.sha256()

    def add(name: str, values: np.ndarray | Sequence[str] | str) -> None:
        digest.update(name.encode() + b"\0")
        if isinstance(values, str):
            digest.update(values.encode())
        elif isinstance(values, np.ndarray) and values.dtype.kind not in "OUS":
            digest.update(str(values.dtype).encode() + str(values.shape).encode())
            digest.update(np.ascontiguousarray(values).tobytes())
        else:
            digest.update("\n".join(map(str, values)).encode())

    add("images", faces.images)
    add("labels", np.asarray(faces.labels, dtype=np.int64))
    add("identities", list(faces.identities))
    add("label_names", list(faces.label_names))
    add("source", faces.source)
    for key in sorted(faces.ground_truth):
        add(f"ground_truth/{key}", faces.ground_truth[key])
    return digest.hexdigest()


# ----------------------------------------------------------------------------- splits / torch


def split_by_identity(
    identities: Sequence[str] | np.ndarray, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Identity-disjoint train/validation indices.

    identities: (n,) one id per image. round(val_fraction * n_identities) identities (at
    least one if val_fraction > 0, at most all but one) go to validation, chosen by a
    permutation seeded with `seed` of the sorted unique ids, so the split depends only on
    the set of identities and the seed. Returns (train_idx, val_idx), sorted int64 arrays.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    identities = np.asarray(identities).astype(str)
    unique = np.unique(identities)
    if val_fraction > 0 and len(unique) < 2:
        raise ValueError(
            f"an identity-disjoint split needs at least 2 identities, got {len(unique)}"
        )
    n_val = round(val_fraction * len(unique))
    if val_fraction > 0:
        n_val = min(max(n_val, 1), len(unique) - 1)
    order = np.random.default_rng(seed).permutation(len(unique))
    is_val = np.isin(identities, unique[order[:n_val]])
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)


class FaceDataset(torch.utils.data.Dataset):
    """A torch view of some images of a FaceSet.

    Item i: (image float32 (1, H, W) in [0, 1], label int64 scalar tensor).
    `tensors()` gives the whole subset at once for full-batch work on small sets.
    """

    def __init__(self, faceset: FaceSet, indices: Sequence[int] | np.ndarray) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        self.indices = indices
        self.images = torch.from_numpy(np.ascontiguousarray(faceset.images[indices]))
        self.labels = torch.from_numpy(np.asarray(faceset.labels, dtype=np.int64)[indices])
        self.identities = np.asarray(faceset.identities)[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].unsqueeze(0).float().div_(255.0), self.labels[i]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images float32 (n, 1, H, W) in [0, 1], labels int64 (n,))."""
        return self.images.unsqueeze(1).float().div_(255.0), self.labels


def load_splits(
    path: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0
) -> tuple[FaceDataset, FaceDataset, FaceSet]:
    """Read a store and split it by identity: (train, val, the whole FaceSet)."""
    faceset = read_store(path)
    train_idx, val_idx = split_by_identity(faceset.identities, val_fraction, seed)
    return FaceDataset(faceset, train_idx), FaceDataset(faceset, val_idx), faceset
