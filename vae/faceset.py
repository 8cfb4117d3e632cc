"""`FaceSet`: the in-memory form every face source is turned into before it is stored.

The procedural generator (`vae.procedural.faces`) and every reader of real data (`vae.sources`) return
one of these; `vae.store.write_store` writes it to the one HDF5 layout and
`vae.store.read_store` reads it back. Images are uint8 grayscale, shape (n, height, width).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vae.labels import EMOTIONS


@dataclass
class FaceSet:
    """A labelled set of grayscale face images.

    images: (n, height, width) uint8, 0 black .. 255 white.
    labels: (n,) int64 indices into `label_names`.
    identities: (n,) str, one id per person (child model, generated identity, ...); the
        train/validation split never puts one identity on both sides.
    label_names: the class names, `EMOTIONS` unless a source says otherwise.
    source: a short name ("synthetic", "cafe", "fer2013", "folder", "manifest").
    ground_truth: optional per-image arrays of length n (e.g. "au" (n, n_au) float32
        action-unit intensities, "mouth_open" (n,) bool, "file" (n,) str).
    attrs: provenance written as HDF5 attributes (preprocessing, seed, generator version...).
    """

    images: np.ndarray
    labels: np.ndarray
    identities: np.ndarray
    label_names: tuple[str, ...] = EMOTIONS
    source: str = "unknown"
    ground_truth: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"FaceSet.images must be uint8 of shape (n, height, width), "
                f"got {self.images.dtype} {self.images.shape}"
            )
        for name in ("labels", "identities"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"FaceSet.{name} has {len(getattr(self, name))} rows, images {n}")
        for name, values in self.ground_truth.items():
            if len(values) != n:
                raise ValueError(f"FaceSet.ground_truth[{name!r}] has {len(values)} rows, images {n}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.images.shape[1]), int(self.images.shape[2])
