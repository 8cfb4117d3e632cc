"""Codes on the sphere -> face images for the screen: batched decoding with a small cache.

A chain's current state was the previous trial's proposal (or current), so most pairs need only
one new image; the cache (keyed by the child and the code's exact bytes) makes the other free.
With an identity model every face is one child's (`mcmcp.identities`): the same code shown as
two children is two images. Images are float32 (H, W) in [0, 1] (0 black); the screen converts
them to its own range.

`FrozenDecoder` is `model.decode` made cheaper on the CPU for a server that decodes one new face
per answer: whatever the model's decode is, traced and frozen (TorchScript) once per child, with
the weights in channels-last order; the same network, its pixels equal to the full decoder's to
float rounding (tests/online/test_serve_speed.py).
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict

import numpy as np
import torch

CHECK_CODES = 8  # random codes a frozen decoder is checked on against model.decode
CHECK_ATOL = 1e-4  # pixels in [0, 1]; float rounding alone gives ~1e-6


class FrozenDecoder:
    """`model.decode(z, identity)` for serving: each face decoded alone by a TorchScript trace of
    the model's own decode for its child, frozen (weights, the child's reference face and
    everything computed from them alone become constants and are folded), in channels-last
    order. A 64 x 64 face costs two thirds to four fifths of the eager decoder's CPU time; a
    batch of faces costs as much per face as one face, so faces go one at a time.

    model: a trained VAE from vae.checkpoint (copied: the caller's is not changed; its weights
    must not change afterwards). Each child's decoder is traced at its first face (or by
    `prepare`) and checked on CHECK_CODES random codes against the model's own decode; a trace
    that disagrees (a decode whose steps depend on the code's values, which a trace cannot
    follow) is not used: that child's faces come from the model's decode.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        self._children: dict[bytes | None, torch.nn.Module] = {}

    def __call__(self, z: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (n, d) [+ identity codes (n, k)] -> images (n, 1, H, W) in [0, 1], as
        `model.decode`."""
        out = []
        for i in range(len(z)):
            child = None if identity is None else identity[i:i + 1]
            out.append(self._decoder(child)(z[i:i + 1]))
        return torch.cat(out)

    def prepare(self, identity: torch.Tensor | None = None) -> None:
        """Trace the decoders of these children now, not at their first faces: identity codes
        (n, k) (None: the default child)."""
        for i in range(1 if identity is None else len(identity)):
            self._decoder(None if identity is None else identity[i:i + 1])

    def _decoder(self, child: torch.Tensor | None) -> torch.nn.Module:
        """The frozen decoder of one child ((1, k) identity code, None: the default)."""
        key = None if child is None else child.detach().numpy().tobytes()
        if key not in self._children:
            self._children[key] = self._freeze(child)
        return self._children[key]

    def _freeze(self, child: torch.Tensor | None) -> torch.nn.Module:
        one = _OneChild(self.model, None if child is None else child.detach().clone())
        d = self.model.config.latent_dim
        codes = torch.nn.functional.normalize(
            torch.randn(CHECK_CODES, d, generator=torch.Generator().manual_seed(0)), dim=1)
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the check below judges
            # torch.compile, TorchScript's successor, was slower here (3.1 ms a face against 2.1)
            # and compiles for minutes: TorchScript's notice that it is deprecated is not news
            warnings.simplefilter("ignore", DeprecationWarning)
            frozen = torch.jit.freeze(torch.jit.trace(one, codes[:1], check_trace=False).eval())
            for _ in range(2):  # TorchScript's executor optimises at the second run: judge that
                got = torch.cat([frozen(c[None]) for c in codes])
            want = one(codes)
        return frozen if torch.allclose(got, want, atol=CHECK_ATOL, rtol=0) else one


class _OneChild(torch.nn.Module):
    """`model.decode` of one child's faces (identity: its (1, k) code; None: the default)."""

    def __init__(self, model: torch.nn.Module, identity: torch.Tensor | None):
        super().__init__()
        self.model, self.identity = model, identity

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        identity = None if self.identity is None else self.identity.expand(len(z), -1)
        return self.model.decode(z, identity)


class Renderer:
    """Decodes codes (n, d) with `model.decode` (a VAE from vae.checkpoint) and caches images.

    identities: the session's children (`mcmcp.identities.Identities`, their identity codes
    computed once); None or a plain model's: every face is the model's default. frozen: decode
    with a `FrozenDecoder` of the model (a server's faces; the lab's screen decodes with the
    model itself).
    """

    def __init__(self, model: torch.nn.Module, cache_size: int = 256, identities=None,
                 frozen: bool = False):
        self.model = model
        self._decode = FrozenDecoder(model) if frozen else model.decode
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
                decoded = self._decode(z, identity)[:, 0].numpy()
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
