"""Codes on the sphere -> face images for the screen: batched decoding with a small cache.

A chain's current state was the previous trial's proposal (or current), so most pairs need only
one new image; the cache (keyed by the code's exact bytes) makes the other free. Images are
float32 (H, W) in [0, 1] (0 black); the screen converts them to its own range.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch


class Renderer:
    """Decodes codes (n, d) with `model.decode` (a VAE from vae.checkpoint) and caches images."""

    def __init__(self, model: torch.nn.Module, cache_size: int = 256):
        self.model = model
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def images(self, codes: np.ndarray) -> np.ndarray:
        """(n, d) codes -> (n, H, W) float32 images in [0, 1]; one decoder call for the misses."""
        codes = np.asarray(codes, dtype=np.float64)
        keys = [c.tobytes() for c in codes]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            with torch.no_grad():
                z = torch.as_tensor(codes[missing], dtype=torch.float32)
                decoded = self.model.decode(z)[:, 0].numpy()
            for i, image in zip(missing, decoded, strict=True):
                self._cache[keys[i]] = image
        out = []
        for k in keys:
            self._cache.move_to_end(k)
            out.append(self._cache[k])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return np.stack(out)

    def pair(self, trial) -> np.ndarray:
        """The (2, H, W) images of a PendingTrial: [left, right]."""
        return self.images(np.stack([trial.left, trial.right]))

    def trial(self, trial) -> np.ndarray:
        """What a PendingTrial shows: its pair (2, H, W), or for a GSP slider trial the faces
        of its K circle points (K, H, W), decoded in one batch."""
        return self.images(trial.circle.points) if trial.is_slider else self.pair(trial)
