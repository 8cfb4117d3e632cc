"""How good is a latent space for MCMCP? Metrics on the validation identities' codes.

The pure functions take codes (n, d) and integer labels (n,) as numpy arrays and return numbers,
so they can be tested on synthetic codes without a network. `latent_metrics` runs a trained
model over a face set and collects everything into one JSON-serialisable dict.

Sphere metrics (kNN, silhouette, overlap, spread, shares) need unit vectors: for the Gaussian
baseline they are computed on its codes normalised to directions (the dict says so in
`sphere_metrics_on`), and its norms are reported separately (`mean_code_norm`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import SphericalVoronoi
from scipy.special import betainc
from sklearn.metrics import silhouette_score

# ---------------------------------------------------------------- pure functions on codes


def normalise(codes: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d) unit vectors."""
    codes = np.asarray(codes, dtype=np.float64)
    return codes / np.linalg.norm(codes, axis=-1, keepdims=True)


def geodesic_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Great-circle distances (n, m) in radians between unit vectors a (n, d) and b (m, d)."""
    b = a if b is None else b
    return np.arccos(np.clip(a @ b.T, -1.0, 1.0))


def knn_accuracy(codes: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour emotion accuracy with geodesic distance.

    codes: (n, d) unit vectors; labels: (n,) int. Ties in the vote go to the lowest label.
    """
    labels = np.asarray(labels)
    dist = geodesic_distances(codes)
    np.fill_diagonal(dist, np.inf)
    k = min(k, len(codes) - 1)
    neighbours = np.argsort(dist, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(codes), int(labels.max()) + 1))
    np.add.at(votes, (np.repeat(np.arange(len(codes)), k), labels[neighbours].ravel()), 1.0)
    return float(np.mean(votes.argmax(1) == labels))


def silhouette(codes: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of the emotion clusters under geodesic distance (-1 .. 1, higher = tighter)."""
    dist = geodesic_distances(codes)
    np.fill_diagonal(dist, 0.0)
    return float(silhouette_score(dist, labels, metric="precomputed"))


def class_centroids(codes: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, d) mean directions (normalised class means); NaN rows for absent classes."""
    labels = np.asarray(labels)
    out = np.full((n_classes, codes.shape[1]), np.nan)
    for c in range(n_classes):
        if np.any(labels == c):
            out[c] = normalise(codes[labels == c].mean(0))
    return out


def centroid_overlap(codes: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> float:
    """Fraction of codes whose nearest class centroid (geodesically) belongs to another emotion."""
    cos = codes @ np.nan_to_num(centroids, nan=0.0).T
    cos[:, np.isnan(centroids[:, 0])] = -np.inf
    return float(np.mean(cos.argmax(1) != np.asarray(labels)))


def mean_resultant_length(codes: np.ndarray) -> float:
    """||mean of unit codes||: 0 when spread evenly over the sphere, 1 when all identical."""
    return float(np.linalg.norm(np.mean(codes, axis=0)))


def uniformity(codes: np.ndarray, t: float = 2.0) -> float:
    """log E_{i<j} exp(-t ||z_i - z_j||^2) (Wang & Isola 2020): lower = more uniform."""
    sq = np.sum((codes[:, None, :] - codes[None, :, :]) ** 2, axis=-1)
    iu = np.triu_indices(len(codes), k=1)
    x = -t * sq[iu]
    return float(np.log(np.mean(np.exp(x - x.max()))) + x.max())


def voronoi_shares(centroids: np.ndarray) -> np.ndarray:
    """Fraction of the sphere (d=3) or circle (d=2) nearest each centroid; sums to 1.

    centroids: (k, d) distinct unit vectors, d in {2, 3}.
    """
    d = centroids.shape[1]
    if d == 2:
        # the circle's Voronoi cells: each point owns half of the arc to each neighbour
        angles = np.mod(np.arctan2(centroids[:, 1], centroids[:, 0]), 2 * np.pi)
        order = np.argsort(angles)
        gaps = np.diff(np.append(angles[order], angles[order[0]] + 2 * np.pi))
        shares = np.empty(len(angles))
        shares[order] = (gaps + np.roll(gaps, 1)) / 2 / (2 * np.pi)
        return shares
    if d != 3:
        raise ValueError(f"voronoi_shares needs d=2 or d=3, got d={d}")
    sv = SphericalVoronoi(centroids, radius=1.0, center=np.zeros(3))
    return sv.calculate_areas() / (4 * np.pi)


def cap_share(angle: np.ndarray | float, d: int) -> np.ndarray:
    """Fraction of S^(d-1) within geodesic `angle` (radians) of a point.

    d=3: (1 - cos a) / 2; d=2: a / pi; general d via the regularised incomplete beta function.
    """
    angle = np.asarray(angle, dtype=np.float64)
    small = np.minimum(angle, np.pi - angle)
    part = 0.5 * betainc((d - 1) / 2, 0.5, np.sin(small) ** 2)
    return np.where(angle <= np.pi / 2, part, 1.0 - part)


def cap90_angles(codes: np.ndarray, labels: np.ndarray, centroids: np.ndarray, q=0.9):
    """(k,) radians: the cap around each class centroid that holds a fraction q of its codes."""
    labels = np.asarray(labels)
    out = np.full(len(centroids), np.nan)
    for c in range(len(centroids)):
        if np.any(labels == c):
            dist = geodesic_distances(codes[labels == c], centroids[c : c + 1])[:, 0]
            out[c] = np.quantile(dist, q)
    return out


def great_circle(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """(n, d) unit vectors evenly spaced along the shorter great-circle arc from a to b."""
    omega = np.arccos(np.clip(a @ b, -1.0, 1.0))
    t = np.linspace(0.0, 1.0, n)[:, None]
    if omega < 1e-9:
        return np.repeat(a[None], n, axis=0)
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats over the last axis."""
    p = np.clip(probs, 1e-12, 1.0)
    return -np.sum(p * np.log(p), axis=-1)


def gap_profile(path_probs: np.ndarray) -> dict:
    """Classifier entropy along a path between two centroids, (n_steps, k) probabilities.

    Returns peak position in [0, 1] (0 = first centroid), entropy at the ends (mean of the two),
    at the midpoint and at the peak (nats).
    """
    h = entropy(path_probs)
    n = len(h)
    return {
        "peak_position": float(np.argmax(h) / (n - 1)),
        "entropy_ends": float((h[0] + h[-1]) / 2),
        "entropy_middle": float(h[n // 2]),
        "entropy_peak": float(h.max()),
    }


def flatten_metrics(metrics: dict, prefix: str = "") -> dict:
    """Nested metrics -> {"a.b.c": scalar} for one table row or a printout.

    Drops the per-epoch history, the per-pair gap profiles and the per-emotion shares.
    """
    out = {}
    for key, value in metrics.items():
        if key in ("history", "pairs", "voronoi_share", "cap90_share"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_metrics(value, name + "."))
        elif not isinstance(value, list):
            out[name] = value
    return out


# ---------------------------------------------------------------- the model-driven report


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def _images(faceset, indices) -> torch.Tensor:
    return torch.from_numpy(faceset.images[np.asarray(indices)].astype(np.float32) / 255.0)[:, None]


@torch.no_grad()
def _face_likeness(images: torch.Tensor, train_images: torch.Tensor, observer) -> dict:
    """Nearest-training-image RMSE (per pixel, 0..1) and observer confidence for images."""
    flat_train = train_images.flatten(1)
    nearest = torch.cat([
        torch.cdist(images[i : i + 250].flatten(1), flat_train).min(1).values
        for i in range(0, len(images), 250)
    ]) / np.sqrt(flat_train.shape[1])
    out = {
        "n": len(images),
        "nearest_train_rmse_mean": float(nearest.mean()),
        "nearest_train_rmse_p95": float(torch.quantile(nearest, 0.95)),
    }
    if observer is not None:
        probs = observer.predict_proba(images)
        out["observer_confidence_mean"] = float(probs.max(1).mean())
        out["observer_confidence_p05"] = float(np.quantile(probs.max(1), 0.05))
        out["observer_entropy_mean"] = float(entropy(probs).mean())
    return out


@torch.no_grad()
def reconstruct(model, faceset, indices, mu: torch.Tensor | None = None) -> torch.Tensor:
    """Reconstructions (n, 1, H, W) of the faces `indices`: decode(encode(x)), each face drawn
    as its own child (identity from its identity's reference face) for identity models."""
    x = _images(faceset, indices)
    mu = _batched(model.encode, x) if mu is None else mu
    if model.config.kind != "identity":
        return _batched(model.decode, mu)
    from vae.identity import reference_index

    ids = np.asarray(faceset.identities).astype(str)[np.asarray(indices)]
    unique, inverse = np.unique(ids, return_inverse=True)
    refs = _images(faceset, [reference_index(faceset, i) for i in unique])
    codes = model.identity_code(refs)
    return torch.cat([model.decode(mu[i : i + 256], codes[inverse[i : i + 256]])
                      for i in range(0, len(mu), 256)])


@torch.no_grad()
def latent_metrics(
    model,
    faceset,
    indices,
    train_indices=None,
    observer=None,
    n_random: int = 1000,
    n_path: int = 41,
    seed: int = 0,
) -> dict:
    """All latent-space metrics for `model` on the faces `indices` (validation identities).

    train_indices: the training images for the nearest-image distance (default: all others).
    observer: a `vae.observer.ObserverClassifier` or None (observer columns then absent).
    n_random: random codes decoded for face-likeness; n_path: steps along each gap path.
    """
    model.eval()
    cfg = model.config
    indices = np.asarray(indices)
    if train_indices is None:
        train_indices = np.setdiff1d(np.arange(len(faceset)), indices)
    x = _images(faceset, indices)
    labels = np.asarray(faceset.labels)[indices]
    mu = _batched(model.encode, x)
    recon = reconstruct(model, faceset, indices, mu)
    logits = _batched(model.classify, mu)
    is_sphere = cfg.prior == "vmf"
    codes = normalise(mu.numpy())
    k = cfg.n_classes
    centroids = class_centroids(codes, labels, k)
    present = ~np.isnan(centroids[:, 0])

    out: dict = {
        "prior": cfg.prior,
        "latent_dim": cfg.latent_dim,
        "kappa": cfg.kappa if is_sphere else None,
        "n_images": len(indices),
        "sphere_metrics_on": "codes (unit vectors)" if is_sphere else "normalised codes",
        "recon_mse_per_pixel": float(torch.mean((recon - x) ** 2)),
        "recon_bce_per_image": float(
            torch.nn.functional.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x,
                                                     reduction="sum") / len(x)
        ),
        "classifier_accuracy": float(np.mean(logits.argmax(1).numpy() == labels)),
        "knn5_accuracy": knn_accuracy(codes, labels, k=5),
        "silhouette_geodesic": silhouette(codes, labels),
        "centroid_overlap": centroid_overlap(codes, labels, centroids),
        "mean_resultant_length": mean_resultant_length(codes),
        "uniformity_t2": uniformity(codes, t=2.0),
        "mean_code_norm": float(mu.norm(dim=1).mean()),
        "frac_code_norm_below_1": None if is_sphere else float((mu.norm(dim=1) < 1).float().mean()),
    }
    names = list(faceset.label_names)
    if cfg.latent_dim in (2, 3) and present.all():
        shares = voronoi_shares(centroids)
        out["voronoi_share"] = dict(zip(names, map(float, shares), strict=True))
        out["voronoi_share_ratio_max_min"] = float(shares.max() / shares.min())
    caps = cap_share(cap90_angles(codes, labels, centroids), cfg.latent_dim)
    out["cap90_share"] = {n: float(s) for n, s, p in zip(names, caps, present, strict=True) if p}
    out["cap90_share_ratio_max_min"] = float(np.nanmax(caps) / np.nanmin(caps))

    # ambiguous faces in the gaps: classifier entropy along the path between two centroids
    # (great circle on the sphere; the straight line between class mean codes for the Gaussian)
    profiles = {}
    euclid = mu.numpy().astype(np.float64)
    for i in range(k):
        for j in range(i + 1, k):
            if not (present[i] and present[j]):
                continue
            if is_sphere:
                path = great_circle(centroids[i], centroids[j], n_path)
            else:
                a, b = euclid[labels == i].mean(0), euclid[labels == j].mean(0)
                path = a + np.linspace(0, 1, n_path)[:, None] * (b - a)
            probs = torch.softmax(model.classify(torch.as_tensor(path, dtype=torch.float32)), -1)
            profiles[f"{names[i]}-{names[j]}"] = gap_profile(probs.numpy())
    peaks = np.array([p["peak_position"] for p in profiles.values()])
    out["gap"] = {
        "n_pairs": len(profiles),
        "peak_position_median": float(np.median(peaks)),
        "frac_peak_interior": float(np.mean((peaks > 0.1) & (peaks < 0.9))),
        "entropy_ends_mean": float(np.mean([p["entropy_ends"] for p in profiles.values()])),
        "entropy_middle_mean": float(np.mean([p["entropy_middle"] for p in profiles.values()])),
        "entropy_peak_mean": float(np.mean([p["entropy_peak"] for p in profiles.values()])),
        "pairs": profiles,
    }

    # no face that looks crazy: decode random codes, compare with real faces
    rng = np.random.default_rng(seed)
    train_images = _images(faceset, train_indices)
    likeness = {
        "validation_images": _face_likeness(x, train_images, observer),
        "validation_reconstructions": _face_likeness(recon, train_images, observer),
    }
    if is_sphere:
        z = normalise(rng.standard_normal((n_random, cfg.latent_dim)))
        z = torch.as_tensor(z, dtype=torch.float32)
        likeness["uniform_sphere"] = _face_likeness(_batched(model.decode, z), train_images,
                                                    observer)
    else:
        z = torch.as_tensor(rng.standard_normal((n_random, cfg.latent_dim)), dtype=torch.float32)
        decoded = _batched(model.decode, z)
        likeness["prior_draws"] = _face_likeness(decoded, train_images, observer)
        tails = z.norm(dim=1) >= torch.quantile(z.norm(dim=1), 0.9)
        likeness["prior_tails_top10pct_norm"] = _face_likeness(decoded[tails], train_images,
                                                               observer)
    out["face_likeness"] = likeness
    return out


# ---------------------------------------------------------------- readability (observers)

READABLE_P = 0.8
"""Observer p(intended) a decoded class centroid needs to count as readable."""


def expression_retention(probs_originals: np.ndarray, probs_reconstructions: np.ndarray,
                         labels: np.ndarray, names, children: np.ndarray | None = None) -> dict:
    """How much of a reader's accuracy survives reconstruction, overall and per emotion.

    probs_*: (n, k) a reader's probabilities for the originals and their reconstructions;
    labels: (n,) intended emotions. Retention = accuracy on reconstructions / on originals;
    None for an emotion whose originals the reader never reads right (JSON-safe). Retention
    also credits a reconstruction read right whose original was misread, so two stricter
    shares stand beside it: kept = of the originals read right, the share whose
    reconstruction is read right too (None when none is read right), and agreement = the
    share of reconstructions read as their originals are, right or wrong. children: (n,) each
    face's child; given, each emotion's retention gets its standard error over children
    (`retention_se`, "retention_se"; None where retention is None).
    """
    read_orig, read_recon = probs_originals.argmax(1), probs_reconstructions.argmax(1)
    right_orig, right_recon = read_orig == labels, read_recon == labels
    acc_orig, acc_recon = float(np.mean(right_orig)), float(np.mean(right_recon))
    per_emotion = {}
    for c, name in enumerate(names):
        rows = labels == c
        if rows.any():
            orig, rec = float(np.mean(right_orig[rows])), float(np.mean(right_recon[rows]))
            right = rows & right_orig
            per_emotion[name] = {"observer_accuracy_originals": orig,
                                 "observer_accuracy_reconstructions": rec,
                                 "retention": rec / orig if orig > 0 else None,
                                 "kept": float(np.mean(right_recon[right])) if right.any()
                                 else None,
                                 "agreement": float(np.mean(read_recon[rows] == read_orig[rows]))}
            if children is not None:
                per_emotion[name]["retention_se"] = None if orig == 0 else retention_se(
                    right_orig, right_recon, labels, c, np.asarray(children))
    return {
        "observer_accuracy_originals": acc_orig,
        "observer_accuracy_reconstructions": acc_recon,
        "retention": acc_recon / acc_orig if acc_orig > 0 else float("nan"),
        "kept": float(np.mean(right_recon[right_orig])) if right_orig.any() else float("nan"),
        "agreement": float(np.mean(read_recon == read_orig)),
        "n_images": len(labels),
        "per_emotion": per_emotion,
    }


def retention_se(read_orig: np.ndarray, read_recon: np.ndarray, labels: np.ndarray, c: int,
                 children: np.ndarray, draws: int = 2000, seed: int = 0) -> float:
    """Standard error of emotion c's retention (share read on reconstructions / on originals),
    the children resampled with replacement (`draws` times; a child's faces stay together):
    how far another set of held-out children could move the figure. Faces read (n,) bool,
    labels (n,), children (n,) ids. 0 with a single child."""
    ids, child = np.unique(children, return_inverse=True)
    mine = labels == c
    per_child = np.stack([np.bincount(child, read_orig & mine, len(ids)),
                          np.bincount(child, read_recon & mine, len(ids))], axis=1)
    picks = np.random.default_rng(seed).integers(0, len(ids), (draws, len(ids)))
    totals = per_child[picks].sum(axis=1)  # (draws, 2)
    kept = totals[totals[:, 0] > 0]
    return float(np.std(kept[:, 1] / kept[:, 0], ddof=1))


@torch.no_grad()
def readability_metrics(
    model,
    faceset,
    train_indices,
    val_indices,
    observer,
    identity_observer=None,
    n_identities: int = 8,
    n_path_identities: int = 5,
    n_path: int = 11,
    reader=None,
) -> dict:
    """Can a person read the emotions of decoded faces? Judged by observers, never by the VAE.

    centroids: each emotion's centroid (spherical mean of the TRAINING faces' codes, what
        sessions use; the class mean for the Gaussian baseline) decoded for the first
        `n_identities` held-out children (sorted ids; each taken from its reference face) and
        rated by the emotion `observer`: p(intended) per child and emotion, the minimum, and
        how many children have all seven >= READABLE_P. Plain models have one face per
        emotion (child "-").
    retention: observer accuracy on reconstructions of the held-out faces / on the originals,
        overall and per emotion (`expression_retention`).
    reader_retention (with `reader`, e.g. `vae.reader.load_reader()`): the same measured by an
        expression reader independent of the model and of our faces (trained on photographs),
        named in "reader"; this is what the verdict judges each emotion's retention by.
    paths: along the great circle (Gaussian: straight line) between every pair of centroids
        (n_path steps), for the first `n_path_identities` children: share of paths whose
        observer label starts at the first emotion and ends at the second, mean number of
        label changes; with `identity_observer`, the share of path faces it matches (among the
        held-out children's reference faces) to the child they were drawn as (identity
        models) and to the child matched at the path's start, next to its accuracy on the
        held-out originals of every emotion.
    """
    model.eval()
    cfg = model.config
    names = list(faceset.label_names)
    k = len(names)
    train_indices, val_indices = np.asarray(train_indices), np.asarray(val_indices)
    sphere = cfg.prior == "vmf"
    train_codes = _batched(model.encode, _images(faceset, train_indices)).numpy()
    train_labels = np.asarray(faceset.labels)[train_indices]
    if sphere:
        centroids = class_centroids(normalise(train_codes), train_labels, k)
    else:  # the Gaussian baseline's class means, and straight paths between them
        centroids = np.stack([train_codes[train_labels == c].mean(0) for c in range(k)])
    z = torch.as_tensor(centroids, dtype=torch.float32)
    val_ids = np.asarray(faceset.identities).astype(str)[val_indices]
    if cfg.kind == "identity":
        from vae.identity import reference_images

        children = [str(c) for c in sorted(set(val_ids))[:n_identities]]
        codes = model.identity_code(torch.from_numpy(reference_images(faceset, children)))
        decoded = torch.stack([model.decode(z, code) for code in codes])
    else:
        children, codes = ["-"], [None]
        decoded = model.decode(z)[None]
    h, w = decoded.shape[-2:]
    probs = observer.predict_proba(decoded.reshape(-1, 1, h, w)).reshape(len(children), k, k)
    p_intended = probs[:, np.arange(k), np.arange(k)]
    out: dict = {
        "threshold": READABLE_P,
        "centroids": {
            "identities": children,
            "p_intended": {c: dict(zip(names, map(float, row), strict=True))
                           for c, row in zip(children, p_intended, strict=True)},
            "observer_label": {c: [names[j] for j in probs[i].argmax(1)]
                               for i, c in enumerate(children)},
            "p_intended_min": float(p_intended.min()),
            "p_intended_min_per_emotion": dict(zip(names, map(float, p_intended.min(0)),
                                                   strict=True)),
            "n_identities_all_readable": int(np.sum(p_intended.min(1) >= READABLE_P)),
        },
    }

    x = _images(faceset, val_indices)
    labels = np.asarray(faceset.labels)[val_indices]
    recon = reconstruct(model, faceset, val_indices)
    out["retention"] = expression_retention(observer.predict_proba(x),
                                            observer.predict_proba(recon), labels, names)
    if reader is not None:
        from vae.reader import NAME

        out["reader_retention"] = {"reader": NAME, **expression_retention(
            reader.predict_proba(x), reader.predict_proba(recon), labels, names, val_ids)}

    path_children = list(range(min(n_path_identities, len(children))))
    ends_ok, changes, same_child, same_as_start = [], [], [], []
    gallery = None
    if identity_observer is not None:
        from vae.identity import reference_images

        gallery_ids = np.array(sorted(set(val_ids)))
        gallery = torch.from_numpy(reference_images(faceset, gallery_ids))
        match = identity_observer.match_identity(x, gallery)
        id_acc_orig = float(np.mean(gallery_ids[match] == val_ids))
    for c in path_children:
        for i in range(k):
            for j in range(i + 1, k):
                a, b = centroids[i], centroids[j]
                path = (great_circle(a, b, n_path) if sphere
                        else a + np.linspace(0, 1, n_path)[:, None] * (b - a))
                path = torch.as_tensor(path, dtype=torch.float32)
                faces = model.decode(path, codes[c])
                label = observer.predict_proba(faces).argmax(1)
                ends_ok.append(label[0] == i and label[-1] == j)
                changes.append(int(np.sum(label[1:] != label[:-1])))
                if gallery is not None:
                    who = gallery_ids[identity_observer.match_identity(faces, gallery)]
                    same_as_start.append(np.mean(who == who[0]))
                    if cfg.kind == "identity":
                        same_child.append(np.mean(who == children[c]))
    out["paths"] = {
        "n_paths": len(ends_ok),
        "n_steps": n_path,
        "frac_observer_label_goes_from_first_to_second": float(np.mean(ends_ok)),
        "observer_label_changes_mean": float(np.mean(changes)),
    }
    if gallery is not None:
        out["paths"]["identity_observer_accuracy_originals"] = id_acc_orig
        out["paths"]["frac_identity_same_as_start"] = float(np.mean(same_as_start))
        if same_child:
            out["paths"]["frac_identity_is_the_child"] = float(np.mean(same_child))
    return out
