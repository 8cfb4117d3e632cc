"""Saving and loading trained VAEs: weights plus everything needed to trust them.

A checkpoint is one `torch.save`d plain dict (tensors, dicts, lists, strings, numbers), so it
loads with `torch.load(weights_only=True)`: no pickled code runs when a lab opens a file.
Keys: format, version, model_config, train_config, data_hash, metrics, state_dict, verdict
(`vae.verdict`: is the model good enough for a study), default_identity (the id of the child an
identity model draws when given none), and for resuming training optionally epoch and optimizer.

Format 1 (before identity models) still loads: its model_config lacks `kind` and `upsample`,
which are then the seed study's values (`vae.model.LEGACY`). A checkpoint that recorded one of
the model options since taken out (`RETIRED`) at the value that turned it off loads as before;
at any other value it is refused, naming the commit whose code reads it. A checkpoint is
finished when its `epoch` reached train_config["epochs"] (per-epoch checkpoints of a running
training are not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vae import __version__
from vae.files import atomic_write, file_sha256
from vae.model import LEGACY, GaussianVAE, ModelConfig, SphereVAE, build_model

FORMAT = 2
READABLE_FORMATS = (1, 2)
RETIRED = {"fine_shift": (0.0, "e6bf494"), "edge_price": (0.0, "e6bf494"),
           "pose_rows": (1.0, "e6bf494"), "pose_warp": (True, "e6bf494"),
           "mouth_price": (1.0, "e6bf494"), "correction_cell": (1, "e6bf494"),
           "reconstruction": ("bce", "0fb9789"), "templates_by_child": (False, "be9d1b3"),
           "flow_weight": (0.0, "4622a7c"), "shading": (False, "e62e5b2")}
"""Model options that lost their trials (docs/faces.md) and were taken out: (the value that
turned each off, a commit whose code still has it)."""


@dataclass
class LoadedModel:
    """A checkpoint opened for use: `model` is in eval mode on the CPU.

    finished (property): False for a checkpoint written mid-training (sessions must refuse it).
    verdict: `vae.verdict.verdict(...)` dict ({"passed": bool, "checks": [...]}) or None when
    training did not compute one; sessions warn loudly when `passed` is False.
    default_identity: id of the child `model.decode(z)` draws without an identity ("" for plain).
    """

    model: SphereVAE | GaussianVAE
    config: ModelConfig
    train_config: dict
    data_hash: str
    metrics: dict
    sha256: str
    path: Path
    epoch: int | None = None
    optimizer_state: dict | None = None
    verdict: dict | None = None
    default_identity: str = ""

    @property
    def finished(self) -> bool:
        """Training reached its last epoch (train_config["epochs"]; unknown counts as done)."""
        epochs = (self.train_config or {}).get("epochs")
        return self.epoch is None or epochs is None or self.epoch >= epochs

    @property
    def passed(self) -> bool:
        """True when training finished and its verdict passed every check."""
        return self.finished and bool(self.verdict and self.verdict.get("passed"))


def save_checkpoint(
    path: str | os.PathLike,
    model: SphereVAE | GaussianVAE,
    model_config: ModelConfig,
    train_config: dict,
    data_hash: str,
    metrics: dict,
    epoch: int | None = None,
    optimizer_state: dict | None = None,
    verdict: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then os.replace).

    train_config: plain dict of the training settings; metrics: JSON-serialisable dict.
    epoch / optimizer_state: epochs completed and `optimizer.state_dict()`, needed by --resume.
    verdict: `vae.verdict.verdict(...)` of a finished run.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": __version__,
        "model_config": model_config.to_dict(),
        "train_config": dict(train_config),
        "data_hash": str(data_hash),
        "metrics": metrics,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "default_identity": model.default_identity,
    }
    if verdict is not None:
        payload["verdict"] = verdict
    if epoch is not None:
        payload["epoch"] = int(epoch)
    if optimizer_state is not None:
        payload["optimizer"] = optimizer_state
    atomic_write(path, lambda f: torch.save(payload, f))
    return path


def load_checkpoint(
    path: str | os.PathLike,
    expect_latent_dim: int | None = None,
    expect_image_size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Open a checkpoint; raise ValueError/FileNotFoundError with a fix if it cannot be used.

    expect_latent_dim / expect_image_size: what the caller's experiment needs (d; (h, w)).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train one with "
            f"`python -m vae.train --config experiments/vae_default.yaml --out {path}`"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"checkpoint {path} could not be read ({type(err).__name__}: {err}); the file is "
            "corrupt or not a vae checkpoint; retrain it with `python -m vae.train`"
        ) from err
    missing = [
        k for k in ("format", "model_config", "state_dict", "data_hash", "metrics")
        if not isinstance(payload, dict) or k not in payload
    ]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)}; it is not a vae checkpoint")
    if payload["format"] not in READABLE_FORMATS:
        raise ValueError(
            f"checkpoint {path} has format {payload['format']}, this code reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}"
        )
    try:
        legacy = LEGACY if payload["format"] == 1 else {}
        fields = dict(payload["model_config"])
        used = {k: fields.pop(k) for k in list(fields) if k in RETIRED}
        kept = [(k, v) for k, v in used.items() if v != RETIRED[k][0]]
        if kept:
            raise ValueError(
                f"it was trained with {', '.join(f'{k}={v!r}' for k, v in kept)}, an option "
                "since taken out of vae.model (docs/faces.md); use the code of commit "
                f"{', '.join(sorted({RETIRED[k][1] for k, _ in kept}))}")
        config = ModelConfig(**{**legacy, **fields})
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path} has an unusable model_config: {err}") from err
    if expect_latent_dim is not None and config.latent_dim != expect_latent_dim:
        raise ValueError(
            f"checkpoint {path} has latent_dim {config.latent_dim} but {expect_latent_dim} is "
            f"expected; use a checkpoint trained with --latent-dim {expect_latent_dim} or set the "
            f"experiment's latent dimension to {config.latent_dim}"
        )
    if expect_image_size is not None and tuple(expect_image_size) != config.image_size:
        raise ValueError(
            f"checkpoint {path} was trained on images of size {config.image_size} (h, w) but "
            f"{tuple(expect_image_size)} is expected; rebuild the face store at "
            f"{config.image_size} or retrain the VAE on {tuple(expect_image_size)} images"
        )
    model = build_model(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path}: weights do not fit its model_config: {err}") from err
    model.default_identity = str(payload.get("default_identity", ""))
    model.eval()
    return LoadedModel(
        model=model,
        config=config,
        train_config=payload.get("train_config", {}),
        data_hash=payload["data_hash"],
        metrics=payload["metrics"],
        sha256=file_sha256(path),
        path=path,
        epoch=payload.get("epoch"),
        optimizer_state=payload.get("optimizer"),
        verdict=payload.get("verdict"),
        default_identity=model.default_identity,
    )
