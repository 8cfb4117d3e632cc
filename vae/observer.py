"""The observer: an emotion classifier on IMAGES, trained apart from the VAE.

It judges decoded faces the way a person would, from pixels only, so it must not share the
VAE's encoder or classifier head: different architecture (three conv layers with 5x5/3x3
kernels, batch norm, dropout, global average pooling), different seed, same training identities.
Training adds light blur and noise so decoded (slightly smooth) faces are not out of domain.
It is the "observer agent"'s eyes in `mcmcp.agents` and the readability judge in
`vae.metrics` (it rates decoded faces, never trained on one).

The same network trained to tell the TRAINING children apart (`target="identity"`) is the
identity observer: its penultimate features (`embed`) identify held-out children by the nearest
reference face (`match_identity`), which is how `vae.metrics` checks that walking between
emotions on the sphere keeps the child the same.

CLI: `python -m vae.observer --data data/faces.h5 --out vae/checkpoints/observer.pt`
     `python -m vae.observer --target identity --out vae/checkpoints/identity_observer.pt`.
Heavy modules are imported after the arguments are parsed, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    """The CLI; defined before torch is imported so that --help is instant."""
    p = argparse.ArgumentParser(prog="python -m vae.observer", description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/faces.h5",
                   help="HDF5 face store (default: data/faces.h5, built if missing)")
    p.add_argument("--out", required=True,
                   help="observer checkpoint to write, a NEW path (no default: required)")
    p.add_argument("--target", choices=("emotion", "identity"), default="emotion",
                   help="what it learns to tell apart (default: emotion)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")
    p.add_argument("--seed", type=int, default=1,
                   help="initialisation, shuffling and augmentation seed (default: 1)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of identities held out (default: 0.2, as vae.train)")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the identity split (default: 0, as vae.train)")
    p.add_argument("--size", default="64x64",
                   help="HEIGHTxWIDTH of a store built when --data is missing (default: 64x64)")
    return p


if __name__ == "__main__":
    _ARGS = _parser().parse_args()  # before the heavy imports: --help and bad flags are instant

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from vae import __version__  # noqa: E402
from vae.files import atomic_write, file_sha256  # noqa: E402

FORMAT = 1


class ObserverClassifier(nn.Module):
    """(n, 1, H, W) float32 images in [0, 1] -> (n, n_classes) logits; any H, W >= 16."""

    def __init__(self, n_classes: int = 7, widths: tuple[int, int, int] = (12, 24, 48),
                 dropout: float = 0.3):
        super().__init__()
        a, b, c = widths
        self.widths, self.n_classes, self.dropout = tuple(widths), n_classes, dropout
        self.features = nn.Sequential(
            nn.Conv2d(1, a, 5, padding=2), nn.BatchNorm2d(a), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(a, b, 5, padding=2), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(b, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(c * 16, 64), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(64, n_classes),
        )
        self.data_hash = ""
        self.metrics: dict = {}
        self.sha256 = ""
        self.target = "emotion"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def embed(self, images) -> np.ndarray:
        """images float32 (n, 1, H, W) in [0, 1] -> (n, 64) unit feature vectors (penultimate)."""
        self.eval()
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        h = torch.cat([self.head[:3](self.features(x[i : i + 512]))
                       for i in range(0, len(x), 512)])
        return F.normalize(h, dim=1).double().numpy()

    def match_identity(self, images, gallery) -> np.ndarray:
        """(n,) index of the gallery face (m, 1, H, W) most similar to each image (n, 1, H, W)."""
        return np.argmax(self.embed(images) @ self.embed(gallery).T, axis=1)

    @torch.no_grad()
    def predict_proba(self, images) -> np.ndarray:
        """images float32 (n, 1, H, W) in [0, 1] (numpy or torch) -> (n, n_classes) float64."""
        self.eval()
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"observer expects images (n, 1, H, W), got {tuple(x.shape)}")
        probs = [torch.softmax(self(x[i : i + 512]), -1) for i in range(0, len(x), 512)]
        return torch.cat(probs).double().numpy()


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 3x3 box blur on a quarter of the batch plus small pixel noise, clipped to [0, 1]."""
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    pick = torch.rand(len(x), 1, 1, 1, generator=generator) < 0.25
    x = torch.where(pick, blurred, x)
    return (x + 0.02 * torch.randn(x.shape, generator=generator)).clamp(0.0, 1.0)


def train_observer(faceset, train_idx, seed: int = 1, epochs: int = 20, batch_size: int = 64,
                   lr: float = 1e-3, val_idx=None, target: str = "emotion") -> ObserverClassifier:
    """Train an observer on `faceset` images `train_idx`; held-out accuracy on `val_idx`.

    target "emotion": classify the emotions; `metrics["val_accuracy"]` on val_idx.
    target "identity": classify the training identities; `metrics["val_accuracy"]` is the
    accuracy of `match_identity` on val_idx (held-out children, every expression) against
    their reference faces (`vae.identity.reference_face`).
    """
    if target not in ("emotion", "identity"):
        raise ValueError(f"observer target must be 'emotion' or 'identity', got {target!r}")
    images = torch.from_numpy(faceset.images.astype(np.float32) / 255.0)[:, None]
    if target == "emotion":
        labels = torch.from_numpy(np.asarray(faceset.labels, dtype=np.int64))
        n_classes = len(faceset.label_names)
    else:
        ids = np.asarray(faceset.identities).astype(str)
        known = np.unique(ids[np.asarray(train_idx)])
        labels = torch.from_numpy(np.searchsorted(known, ids).clip(0, len(known) - 1))
        n_classes = len(known)
    train_idx = torch.as_tensor(np.asarray(train_idx))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ObserverClassifier(n_classes=n_classes)
    model.target = target
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            # dropout draws from the global RNG: fork it so training never disturbs callers
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                logits = model(_augment(images[batch], generator))
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    model.metrics = {"target": target, "seed": seed, "epochs": epochs, "n_train": len(train_idx)}
    if val_idx is not None:
        val_idx = np.asarray(val_idx)
        if target == "emotion":
            probs = model.predict_proba(images[val_idx].numpy())
            correct = probs.argmax(1) == labels[val_idx].numpy()
        else:
            from vae.identity import reference_images

            val_ids = np.asarray(faceset.identities).astype(str)[val_idx]
            gallery_ids = np.unique(val_ids)
            match = model.match_identity(images[val_idx].numpy(),
                                         reference_images(faceset, gallery_ids))
            correct = gallery_ids[match] == val_ids
        model.metrics["val_accuracy"] = float(np.mean(correct))
        model.metrics["n_val"] = len(val_idx)
    return model


def save_observer(path: str | os.PathLike, model: ObserverClassifier, data_hash: str) -> Path:
    """torch.save a plain dict (weights_only-safe) atomically."""
    payload = {
        "format": FORMAT, "version": __version__, "kind": "observer", "target": model.target,
        "n_classes": model.n_classes, "widths": list(model.widths), "dropout": model.dropout,
        "data_hash": data_hash, "metrics": model.metrics,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_observer(path: str | os.PathLike) -> ObserverClassifier:
    """Load an observer (eval mode); `.data_hash`, `.metrics`, `.sha256` describe it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"observer checkpoint {path} does not exist; train it with "
            f"`python -m vae.observer --out {path}`"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("kind") != "observer":
            raise ValueError("not an observer checkpoint")
        model = ObserverClassifier(payload["n_classes"], tuple(payload["widths"]),
                                   payload["dropout"])
        model.load_state_dict(payload["state_dict"])
    except Exception as err:
        raise ValueError(f"observer checkpoint {path} is unusable ({err}); retrain it") from err
    model.data_hash, model.metrics = payload["data_hash"], payload["metrics"]
    model.target = payload.get("target", "emotion")
    model.sha256 = file_sha256(path)
    return model.eval()


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> dict:
    p = _parser()
    args = args or p.parse_args(argv)
    if Path(args.out).exists():
        p.error(f"{args.out} exists; an observer is never overwritten: pass a new --out")
    size = tuple(int(v) for v in args.size.lower().split("x"))

    from vae.data import ensure_store
    from vae.store import read_store, split_by_identity, store_hash

    ensure_store(Path(args.data), size)
    faceset = read_store(args.data)
    train_idx, val_idx = split_by_identity(faceset.identities, args.val_fraction, args.split_seed)
    model = train_observer(faceset, train_idx, seed=args.seed, epochs=args.epochs,
                           val_idx=val_idx, target=args.target)
    save_observer(args.out, model, store_hash(args.data))
    print(json.dumps(model.metrics, indent=2))
    return model.metrics


if __name__ == "__main__":
    main(args=_ARGS)
