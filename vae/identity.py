"""Which face stands for a child, and where expression changes a child's face.

An identity model (`ModelConfig.kind == "identity"`) draws a child from a REFERENCE face: the
identity's closed-mouth neutral face (`reference_index`). In training every image of a child is
paired with that reference, except the reference image itself, which gets another neutral image
of the same child when there is one, so the model cannot learn to copy its target through the
identity path (`reference_indices`).

`expression_pixel_weights` finds, from the data alone (so it works for CAFE as for the
procedural faces), the pixels whose value changes with the emotion within a child: the loss can
weight them up so that the small features carrying expression (brows, eyes, mouth) are kept.
`emotion_pixel_weights` splits that map by emotion: each emotion's own pixels (a smile's corners
and raised cheeks, which the pooled map leaves below 1 because open mouths and brows dominate it).

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


def emotion_pixel_weights(faceset: FaceSet, indices=None, strength: float = 1.0) -> np.ndarray:
    """(n_classes, H, W) float32 reconstruction weights, one map per emotion, each of mean 1.

    Emotion c's map is 1 + strength * (how far c's mean face lies from the child's mean over
    all emotions, squared, less what c's own scatter explains: (m_c - m)^2 - var_c / n_c,
    clipped at 0, averaged over identities), scaled by the same number as
    `expression_pixel_weights` (the pooled map's mean, of which these are the per-emotion
    parts), then renormalised to mean 1. So each image is weighted where ITS emotion changes
    the face. An emotion no identity shows gets all ones. indices: the images to use
    (training set); strength 0 gives all ones.
    """
    indices = np.arange(len(faceset)) if indices is None else np.asarray(indices)
    images = faceset.images[indices].astype(np.float64) / 255.0
    ids = np.asarray(faceset.identities).astype(str)[indices]
    labels = np.asarray(faceset.labels)[indices]
    n_classes = len(faceset.label_names)
    parts = np.zeros((n_classes, *images.shape[1:]))
    counts = np.zeros(n_classes)
    pooled, n_pooled = np.zeros(images.shape[1:]), 0
    for identity_id in np.unique(ids):
        mine = ids == identity_id
        present = np.unique(labels[mine])
        if len(present) < 2:
            continue
        groups = {c: images[mine & (labels == c)] for c in present}
        means = {c: g.mean(0) for c, g in groups.items()}
        grand = np.mean(list(means.values()), axis=0)
        noise = {c: g.var(0, ddof=1) / len(g) if len(g) > 1 else np.zeros(g.shape[1:])
                 for c, g in groups.items()}
        for c in present:
            parts[c] += np.clip((means[c] - grand) ** 2 - noise[c], 0.0, None)
            counts[c] += 1
        stacked = np.stack(list(means.values()))
        pooled += np.clip(stacked.var(0, ddof=1) - np.mean(list(noise.values()), axis=0),
                          0.0, None)
        n_pooled += 1
    scale = (pooled / max(n_pooled, 1)).mean()
    weights = np.ones((n_classes, *images.shape[1:]))
    if scale > 1e-12:  # below it (pixel values in [0, 1]) the variance is rounding noise
        seen = counts > 0
        weights[seen] += strength * parts[seen] / counts[seen, None, None] / scale
    return (weights / weights.mean(axis=(1, 2), keepdims=True)).astype(np.float32)
