"""Codes on the sphere -> face images for the screen: batched decoding with a small cache.

A chain's current state was the previous trial's proposal (or current), so most pairs need only
one new image; the cache (keyed by the child and the code's exact bytes) makes the other free.
With an identity model every face is one child's (`mcmcp.identities`): the same code shown as
two children is two images. Images are float32 (H, W) in [0, 1] (0 black); the screen converts
them to its own range.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch


class Renderer:
    """Decodes codes (n, d) with `model.decode` (a VAE from vae.checkpoint) and caches images.

    identities: the session's children (`mcmcp.identities.Identities`, their identity codes
    computed once); None or a plain model's: every face is the model's default.
    """

    def __init__(self, model: torch.nn.Module, cache_size: int = 256, identities=None):
        self.model = model
        self.cache_size = cache_size
        self.identities = identities
        self._cache: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()
        self.hits = self.misses = 0  # images served from the cache / decoded

    def images(self, codes: np.ndarray, identities=None) -> np.ndarray:
        """(n, d) codes -> (n, H, W) float32 images in [0, 1]; one decoder call for the misses.

        identities: the child of each code (n ids, or None: the default child for all).
        """
        codes = np.asarray(codes, dtype=np.float64)
        children = [""] * len(codes) if identities is None else [str(i or "") for i in identities]
        keys = [(child, c.tobytes()) for child, c in zip(children, codes, strict=True)]
        missing = list({k: i for i, k in reversed(list(enumerate(keys)))
                        if k not in self._cache}.values())
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            identity = None if self.identities is None else self.identities.stack(
                [children[i] for i in missing])
            with torch.inference_mode():
                z = torch.as_tensor(codes[missing], dtype=torch.float32)
                decoded = self.model.decode(z, identity)[:, 0].numpy()
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
        """The (2, H, W) images of a PendingTrial: [left, right], both as the trial's child."""
        return self.images(np.stack([trial.left, trial.right]), [trial.identity] * 2)

    def trial(self, trial) -> np.ndarray:
        """What a PendingTrial shows: its pair (2, H, W), or for a GSP slider trial the faces
        of its K circle points (K, H, W) as the trial's child, decoded in one batch."""
        if not trial.is_slider:
            return self.pair(trial)
        return self.images(trial.circle.points, [trial.identity] * len(trial.circle.points))
