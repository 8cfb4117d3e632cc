"""Which face stands for a child, and where expression changes a child's face.

An identity model (`ModelConfig.kind == "identity"`) draws a child from a REFERENCE face: the
identity's closed-mouth neutral face (`reference_index`). In training every image of a child is
paired with that reference, except the reference image itself, which gets another neutral image
of the same child when there is one, so the model cannot learn to copy its target through the
identity path (`reference_indices`).

`expression_pixel_weights` finds, from the data alone (so it works for CAFE as for the
procedural faces), the pixels whose value changes with the emotion within a child: the loss can
weight them up so that the small features carrying expression (brows, eyes, mouth) are kept.

Pure numpy on `FaceSet`s: no files, no torch.
"""

from __future__ import annotations

import numpy as np

from vae.faceset import FaceSet
from vae.labels import canonical_emotion


def _neutral_rows(faceset: FaceSet, identity_id: str) -> np.ndarray:
    """Indices of the identity's neutral images, closed-mouth ones first (stable order)."""
    ids = np.asarray(faceset.identities).astype(str)
    names = np.array([canonical_emotion(n) for n in faceset.label_names])
    rows = np.flatnonzero((ids == str(identity_id)) & (names[faceset.labels] == "neutral"))
    mouth_open = faceset.ground_truth.get("mouth_open")
    if mouth_open is not None and len(rows):
        rows = rows[np.argsort(np.asarray(mouth_open, dtype=bool)[rows], kind="stable")]
    return rows


def children_without_neutral(faceset: FaceSet) -> list[str]:
    """The identities (sorted) with no neutral image: an identity model cannot draw them."""
    ids = np.asarray(faceset.identities).astype(str)
    names = np.array([canonical_emotion(n) for n in faceset.label_names])
    return sorted(set(ids) - set(ids[names[faceset.labels] == "neutral"]))


def reference_index(faceset: FaceSet, identity_id: str) -> int:
    """Row of the identity's reference face: its first closed-mouth neutral image.

    Sets without `ground_truth["mouth_open"]` use the first neutral image. Raises ValueError
    (naming the identity) when the identity is unknown or has no neutral image.
    """
    ids = np.asarray(faceset.identities).astype(str)
    if str(identity_id) not in set(ids):
        known = ", ".join(sorted(set(ids))[:5])
        raise ValueError(f"identity {identity_id!r} is not in this face set (e.g. {known})")
    rows = _neutral_rows(faceset, identity_id)
    if not len(rows):
        raise ValueError(
            f"identity {identity_id!r} has no neutral face; an identity model takes each child "
            "from its neutral face (add one, or train with model.kind: plain)"
        )
    return int(rows[0])


def reference_face(faceset: FaceSet, identity_id: str) -> np.ndarray:
    """The identity's reference face (H, W) uint8 (see `reference_index`)."""
    return faceset.images[reference_index(faceset, identity_id)]


def reference_images(faceset: FaceSet, identity_ids) -> np.ndarray:
    """(n, 1, H, W) float32 in [0, 1]: the reference faces of `identity_ids`, ready for a model."""
    rows = [reference_index(faceset, i) for i in identity_ids]
    return faceset.images[rows].astype(np.float32)[:, None] / 255.0


def reference_indices(faceset: FaceSet) -> np.ndarray:
    """(n,) int64: for every image, the row of the reference face it is trained against.

    That is its identity's reference face, except for the reference image itself, which is
    paired with the identity's next neutral image when there is one.
    """
    ids = np.asarray(faceset.identities).astype(str)
    out = np.empty(len(ids), dtype=np.int64)
    for identity_id in np.unique(ids):
        rows = np.flatnonzero(ids == identity_id)
        neutral = _neutral_rows(faceset, identity_id)
        if not len(neutral):
            reference_index(faceset, identity_id)  # raises with the explanation
        out[rows] = neutral[0]
        if len(neutral) > 1:
            out[neutral[0]] = neutral[1]
    return out


def expression_pixel_weights(faceset: FaceSet, indices=None, strength: float = 1.0) -> np.ndarray:
    """(H, W) float32 reconstruction weights, mean 1: 1 + strength * (expression variance).

    The expression variance of a pixel is how much its value changes between a child's
    emotions beyond what pose and light already change it: per identity, the variance of the
    per-emotion mean images minus the part of it that within-emotion scatter explains (the
    one-way ANOVA estimate var(means) - mean(within variance / n per emotion), clipped at 0),
    averaged over identities. So head outlines that move with pose get little extra weight;
    brows, eyes and mouth get more (the square root, tried too, also raised the outlines). The
    map is scaled to mean 1 before `strength` is applied and the weights are renormalised to
    mean 1 so the loss keeps its scale. indices: the images to use (training set); strength 0
    gives all ones.
    """
    indices = np.arange(len(faceset)) if indices is None else np.asarray(indices)
    images = faceset.images[indices].astype(np.float64) / 255.0
    ids = np.asarray(faceset.identities).astype(str)[indices]
    labels = np.asarray(faceset.labels)[indices]
    total, count = np.zeros(images.shape[1:]), 0
    for identity_id in np.unique(ids):
        mine = ids == identity_id
        groups = [images[mine & (labels == c)] for c in np.unique(labels[mine])]
        if len(groups) < 2:
            continue
        means = np.stack([g.mean(0) for g in groups])
        noise = np.mean([g.var(0, ddof=1) / len(g) if len(g) > 1 else np.zeros(g.shape[1:])
                         for g in groups], axis=0)
        total += np.clip(means.var(0, ddof=1) - noise, 0.0, None)
        count += 1
    variance = total / max(count, 1)
    scale = variance.mean()
    # below 1e-12 (pixel values in [0, 1]) the variance is rounding noise: nothing changes
    weights = 1.0 + strength * (variance / scale if scale > 1e-12 else np.zeros_like(variance))
    return (weights / weights.mean()).astype(np.float32)
