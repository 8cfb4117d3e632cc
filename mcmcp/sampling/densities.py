"""Densities on the sphere S^(d-1): category densities of synthetic agents and gatekeepers.

Every density here has `logpdf(x (n, d)) -> (n,)`; only ratios matter to the Barker/Luce step,
so a log density known up to a constant (the classifier's log p(c|z)) is as good as a
normalised one. Fitting to faces lives here too (encode -> per-emotion fit), so agents and
gates built from one checkpoint and face store agree. Nothing here draws without a Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import vonmises_fisher

from mcmcp.sampling.sphere import log_vmf_normaliser, normalize, sample_vmf, spherical_mean
from vae.labels import EMOTIONS, canonical_emotion, emotion_index

ENCODE_BATCH = 512


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """log sum exp over the last axis of (n, K); numpy (scipy's is slower on small K)."""
    top = np.max(a, axis=-1)
    return top + np.log(np.sum(np.exp(a - top[..., None]), axis=-1))


@dataclass(frozen=True, eq=False)
class VMFMixture:
    """A mixture of K von Mises-Fisher components on S^(d-1).

    means: (K, d) unit vectors; kappas: (K,) concentrations >= 0; weights: (K,) summing to 1.
    """

    means: np.ndarray
    kappas: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        means = normalize(np.atleast_2d(np.asarray(self.means, dtype=float)))
        kappas = np.atleast_1d(np.asarray(self.kappas, dtype=float))
        weights = np.atleast_1d(np.asarray(self.weights, dtype=float))
        if not (len(means) == len(kappas) == len(weights)):
            raise ValueError(
                f"VMFMixture needs as many kappas ({len(kappas)}) and weights ({len(weights)}) "
                f"as means ({len(means)})"
            )
        if np.any(kappas < 0) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(f"VMFMixture: kappas {kappas} and weights {weights} must be >= 0")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "kappas", kappas)
        object.__setattr__(self, "weights", weights / weights.sum())
        # Per-component log(weight * normaliser), reused by every logpdf call.
        object.__setattr__(
            self, "_log_coef", np.log(self.weights) + log_vmf_normaliser(kappas, means.shape[1])
        )

    @classmethod
    def single(cls, mean: np.ndarray, kappa: float) -> VMFMixture:
        """One vMF(mean, kappa) component."""
        return cls(np.asarray(mean, dtype=float)[None, :], np.array([kappa]), np.array([1.0]))

    @property
    def d(self) -> int:
        """Ambient dimension."""
        return int(self.means.shape[1])

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """log density at x (n, d) -> (n,) (w.r.t. surface area)."""
        if len(self.kappas) == 1:
            return self._log_coef[0] + self.kappas[0] * (x @ self.means[0])
        return _logsumexp_rows(self._log_coef + (x @ self.means.T) * self.kappas)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws, shape (n, d)."""
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        return sample_vmf(self.means[comp], self.kappas[comp], rng)

    def mode(self) -> np.ndarray:
        """The mean of the heaviest component (the mode for one component), shape (d,)."""
        return self.means[int(np.argmax(self.weights))]

    @classmethod
    def fit(cls, x: np.ndarray, n_components: int = 1, seed: int = 0) -> VMFMixture:
        """Fit to unit vectors x (n, d): spherical k-means, then scipy's vMF MLE per cluster.

        Clusters with fewer than d + 1 points are dropped (their MLE is degenerate).
        """
        x = normalize(np.asarray(x, dtype=float))
        labels = _spherical_kmeans(x, n_components, np.random.default_rng(seed))
        means, kappas, weights = [], [], []
        for k in np.unique(labels):
            members = x[labels == k]
            if len(members) <= x.shape[1]:
                continue
            mu, kappa = vonmises_fisher.fit(members)
            means.append(mu)
            kappas.append(kappa)
            weights.append(len(members))
        if not means:
            raise ValueError(f"cannot fit a vMF to {len(x)} points in d = {x.shape[1]}")
        return cls(np.array(means), np.array(kappas), np.array(weights, dtype=float))

    def to_dict(self) -> dict:
        """JSON-able form (lists of floats)."""
        return {
            "means": self.means.tolist(),
            "kappas": self.kappas.tolist(),
            "weights": self.weights.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> VMFMixture:
        """Inverse of `to_dict`."""
        return cls(np.array(data["means"]), np.array(data["kappas"]), np.array(data["weights"]))


def _spherical_kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 50
) -> np.ndarray:
    """Cluster labels (n,) by cosine k-means with k-means++ seeding."""
    if k == 1:
        return np.zeros(len(x), dtype=np.int64)
    centres = [x[rng.integers(len(x))]]
    for _ in range(k - 1):
        dist = 1.0 - np.max(x @ np.array(centres).T, axis=1)
        p = np.maximum(dist, 0.0)
        centres.append(x[rng.choice(len(x), p=p / p.sum())] if p.sum() > 0 else centres[0])
    centres = np.array(centres)
    labels = np.argmax(x @ centres.T, axis=1)
    for _ in range(n_iter):
        for j in range(k):
            if np.any(labels == j):
                centres[j] = normalize(x[labels == j].sum(axis=0))
        new = np.argmax(x @ centres.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


class ClassifierDensity:
    """log p(emotion | z) from the VAE's classifier head: a density on the sphere up to a constant.

    model: a VAE with `classify(z (n, d)) -> logits (n, 7)` (classes in `EMOTIONS` order).
    """

    def __init__(self, model: torch.nn.Module, emotion: str) -> None:
        self.model = model
        self.emotion = canonical_emotion(emotion)
        self.index = emotion_index(emotion)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """log p(emotion | x) for codes x (n, d) -> (n,)."""
        with torch.no_grad():
            logits = self.model.classify(torch.as_tensor(x, dtype=torch.float32))
            return torch.log_softmax(logits, dim=-1)[:, self.index].double().numpy()


def encode_faces(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """Codes (n, d) of uint8 images (n, H, W), encoded in batches without gradients.

    Encoded on one torch thread: on more threads the convolutions sum in another order, and
    those last bits of the codes would make a seeded simulation depend on the machine's cores.
    """
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for start in range(0, len(images), ENCODE_BATCH):
                batch = torch.from_numpy(np.ascontiguousarray(images[start : start + ENCODE_BATCH]))
                out.append(model.encode(batch.unsqueeze(1).float() / 255.0).double().numpy())
    finally:
        torch.set_num_threads(threads)
    return normalize(np.concatenate(out)) if out else np.zeros((0, model.config.latent_dim))


def emotion_codes(loaded_model, faceset, indices=None) -> dict[str, np.ndarray]:
    """Encoded faces `indices` (None = all) of `faceset`, by canonical emotion name: emotion ->
    (n_e, d) unit codes (emotions with faces only). Encode once, fit many (`fit_densities`)."""
    indices = np.arange(len(faceset)) if indices is None else np.asarray(indices, dtype=np.int64)
    codes = encode_faces(loaded_model.model, faceset.images[indices])
    names = np.array([canonical_emotion(faceset.label_names[i]) for i in faceset.labels[indices]])
    return {e: codes[names == e] for e in EMOTIONS if np.any(names == e)}


def fit_densities(codes: dict[str, np.ndarray], kind: str = "vmf", n_components: int = 3,
                  seed: int = 0) -> dict[str, VMFMixture]:
    """Per-emotion densities fitted to encoded faces (`emotion_codes`).

    kind "vmf": one component; "mixture": `n_components` (spherical k-means + vMF MLE).
    """
    if kind not in ("vmf", "mixture"):
        raise ValueError(f"density kind must be 'vmf' or 'mixture', got {kind!r}")
    k = 1 if kind == "vmf" else n_components
    return {e: VMFMixture.fit(c, k, seed) for e, c in codes.items()}


def emotion_densities(
    loaded_model, faceset, indices=None, kind: str = "vmf", n_components: int = 3, seed: int = 0
) -> dict[str, VMFMixture]:
    """Per-emotion densities fitted to the encoded faces `indices` of `faceset` (see
    `fit_densities`). loaded_model: a `vae.checkpoint.LoadedModel`; indices: the training faces
    (None = all)."""
    return fit_densities(emotion_codes(loaded_model, faceset, indices), kind, n_components, seed)


def class_centroids(loaded_model, faceset, indices=None) -> dict[str, np.ndarray]:
    """Spherical mean (d,) of each emotion's encoded faces `indices` (None = all)."""
    return {
        e: spherical_mean(codes)
        for e, codes in emotion_codes(loaded_model, faceset, indices).items()
    }
