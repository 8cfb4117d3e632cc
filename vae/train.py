"""Train the face VAE: `python -m vae.train --config experiments/vae_default.yaml`.

The YAML has two sections, `model:` (fields of `vae.model.ModelConfig`) and `train:` (fields of
`TrainConfig`); command-line flags override both. Training is deterministic on the CPU: the
network is initialised from `seed`, and every epoch draws its shuffling order and its posterior
samples from generators seeded by (seed, epoch), so a run resumed after epoch k (its checkpoint
holds the weights and the Adam state) ends with the same weights as one run straight through.
A checkpoint is written after every epoch; at the end the latent-space metrics are computed on
the validation identities, printed, stored in the checkpoint and written as JSON beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from vae.checkpoint import load_checkpoint, save_checkpoint
from vae.model import ModelConfig, build_model

DEFAULT_CONFIG = "experiments/vae_default.yaml"


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (saved with the checkpoint).

    data: HDF5 face store; built from the procedural faces (160 identities x 7 emotions x 2
        poses at the model's image size, seed 0) when the file does not exist.
    out: checkpoint path; metrics go to the same path with suffix .json.
    epochs: total epochs (a resumed run continues up to this number).
    batch_size, lr: Adam minibatch size and learning rate.
    seed: network initialisation, shuffling and posterior sampling.
    val_fraction, split_seed: identity-level validation split (`vae.datasets.split_by_identity`).
    device: "auto" (CUDA when available), "cpu" or "cuda".
    observer: observer checkpoint used by the face-likeness metric ("" to skip).
    """

    data: str = "data/faces.h5"
    out: str = "vae/checkpoints/default.pt"
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.2
    split_seed: int = 0
    device: str = "auto"
    observer: str = "vae/checkpoints/observer.pt"

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs={self.epochs} (need >= 1)")
        if self.batch_size < 1:
            problems.append(f"batch_size={self.batch_size} (need >= 1)")
        if not self.lr > 0:
            problems.append(f"lr={self.lr} (need > 0)")
        if not 0 < self.val_fraction < 1:
            problems.append(f"val_fraction={self.val_fraction} (need 0 < v < 1)")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device={self.device!r} (allowed: auto, cpu, cuda)")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))


def _check_value(source: str, key: str, value, hint) -> object:
    """Return `value` converted to the field type `hint`, or raise naming source/key/value."""
    origin = typing.get_origin(hint)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        args = typing.get_args(hint)
        ok = isinstance(value, (list, tuple)) and len(value) == len(args)
        ok = ok and all(
            isinstance(v, a) and not isinstance(v, bool) for v, a in zip(value, args, strict=True)
        )
        value = tuple(value) if ok else value
    else:
        raise TypeError(f"no YAML check for type {hint}")
    if not ok:
        name = getattr(hint, "__name__", str(hint))
        raise ValueError(f"{source}: key {key!r} has value {value!r}; expected {name}")
    return value


def _section(source: str, section: str, raw: dict, cls) -> dict:
    """Validate one YAML section against dataclass `cls`; returns checked keyword arguments."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: section {section!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))} in section {section!r}; "
            f"allowed: {', '.join(hints)}"
        )
    return {k: _check_value(source, f"{section}.{k}", v, hints[k]) for k, v in raw.items()}


def load_config(path: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """Read a training YAML (`model:` and `train:` sections) into validated configs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (default: {DEFAULT_CONFIG})")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or set(raw) - {"model", "train"}:
        extra = sorted(set(raw) - {"model", "train"}) if isinstance(raw, dict) else raw
        raise ValueError(f"{path}: unknown top-level key(s) {extra}; allowed: model, train")
    try:
        model = ModelConfig(**_section(str(path), "model", raw.get("model") or {}, ModelConfig))
        train = TrainConfig(**_section(str(path), "train", raw.get("train") or {}, TrainConfig))
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: {err}") from err
    return model, train


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def ensure_store(path: Path, image_size: tuple[int, int]) -> None:
    """Build the default procedural face store at `path` when it does not exist."""
    if path.exists():
        return
    from vae.datasets import write_store
    from vae.faces import generate_faces

    print(f"{path} not found: building the default synthetic face store ({image_size[0]}x"
          f"{image_size[1]})", file=sys.stderr)
    write_store(generate_faces(n_identities=160, poses_per_emotion=2, size=image_size, seed=0), path)


def _epoch_generators(seed: int, epoch: int, device: torch.device):
    """(shuffle generator on CPU, sampling generator on `device`) for one epoch."""
    base = (seed + 1) * 1_000_003 + epoch
    shuffle = torch.Generator().manual_seed(2 * base)
    sample = torch.Generator(device=device).manual_seed(2 * base + 1)
    return shuffle, sample


@torch.no_grad()
def _evaluate(model, loader, device, seed: int) -> dict:
    """Mean losses over `loader` (posterior samples from a fixed seed)."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    sums, n = {"total": 0.0, "recon": 0.0, "kl": 0.0, "ce": 0.0}, 0
    for x, y in loader:
        losses, _ = model.loss(x.to(device), y.to(device), generator)
        for key in sums:
            sums[key] += getattr(losses, key).item() * len(x)
        n += len(x)
    return {k: v / max(n, 1) for k, v in sums.items()}


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    resume: str | Path | None = None,
    progress: bool = True,
    final_metrics: bool = True,
) -> tuple[torch.nn.Module, dict]:
    """Train (or resume) a VAE and write its checkpoint and metrics JSON.

    Returns (model in eval mode, metrics dict). `final_metrics=False` skips the latent-space
    metrics (tests); the loss history and timing are always recorded.
    """
    from vae.datasets import load_splits, store_hash

    device = resolve_device(train_config.device)
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    data_path, out = Path(train_config.data), Path(train_config.out)
    ensure_store(data_path, model_config.image_size)
    train_set, val_set, faceset = load_splits(
        data_path, val_fraction=train_config.val_fraction, seed=train_config.split_seed
    )
    if faceset.image_size != model_config.image_size:
        raise ValueError(
            f"face store {data_path} holds {faceset.image_size} (h, w) images but the model "
            f"expects {model_config.image_size}; set model.image_size to "
            f"{list(faceset.image_size)} or rebuild the store at that size"
        )
    data_hash = store_hash(data_path)

    model = build_model(model_config, seed=train_config.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr)
    start_epoch, history = 0, []
    if resume is not None:
        loaded = load_checkpoint(resume)
        if loaded.config != model_config:
            diff = {
                k: (v, getattr(model_config, k))
                for k, v in dataclasses.asdict(loaded.config).items()
                if getattr(model_config, k) != v
            }
            raise ValueError(
                f"cannot resume from {resume}: its model config differs in {diff} "
                "(checkpoint value, requested value); drop the conflicting flags"
            )
        if loaded.data_hash != data_hash:
            raise ValueError(
                f"cannot resume from {resume}: it was trained on data {loaded.data_hash[:12]}..., "
                f"but {data_path} hashes to {data_hash[:12]}...; use the same face store"
            )
        if loaded.optimizer_state is None or loaded.epoch is None:
            raise ValueError(f"cannot resume from {resume}: it holds no optimizer state/epoch")
        model.load_state_dict(loaded.model.state_dict())
        optimizer.load_state_dict(loaded.optimizer_state)
        start_epoch, history = loaded.epoch, list(loaded.metrics.get("history", []))
        if start_epoch >= train_config.epochs:
            raise ValueError(
                f"{resume} already has {start_epoch} epochs; ask for more with --epochs N"
            )

    val_loader = DataLoader(val_set, batch_size=256, shuffle=False, num_workers=0)
    train_x = train_set.tensors()[0].to(device)
    train_seconds = 0.0
    n_images = 0
    bar = tqdm(
        range(start_epoch, train_config.epochs), desc="vae", unit="epoch", disable=not progress,
        initial=start_epoch, total=train_config.epochs,
    )
    for epoch in bar:
        shuffle_gen, sample_gen = _epoch_generators(train_config.seed, epoch, device)
        loader = DataLoader(
            train_set, batch_size=train_config.batch_size, shuffle=True,
            generator=shuffle_gen, num_workers=0,
        )
        model.train()
        sums, n = {"total": 0.0, "recon": 0.0, "kl": 0.0, "ce": 0.0}, 0
        started = time.perf_counter()
        for x, y in loader:
            losses, _ = model.loss(x.to(device), y.to(device), sample_gen)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            optimizer.step()
            for key in sums:
                sums[key] += getattr(losses, key).item() * len(x)
            n += len(x)
            bar.set_postfix(
                loss=f"{losses.total.item():.1f}", recon=f"{losses.recon.item():.1f}",
                ce=f"{losses.ce.item():.3f}",
            )
        model.encoder.calibrate(train_x)
        train_seconds += time.perf_counter() - started
        n_images += n
        val = _evaluate(model, val_loader, device, seed=train_config.seed)
        row = {"epoch": epoch + 1, **{f"train_{k}": v / n for k, v in sums.items()}}
        row.update({f"val_{k}": v for k, v in val.items()})
        history.append(row)
        bar.set_postfix(val_loss=f"{val['total']:.1f}", val_ce=f"{val['ce']:.3f}")
        metrics = {"history": history}
        save_checkpoint(
            out, model, model_config, dataclasses.asdict(train_config), data_hash, metrics,
            epoch=epoch + 1, optimizer_state=optimizer.state_dict(),
        )
    bar.close()

    model.eval()
    metrics = {
        "history": history,
        "epochs": train_config.epochs,
        "train_seconds_this_run": round(train_seconds, 2),
        "images_per_second": round(n_images / train_seconds, 1) if train_seconds else None,
        "seconds_per_epoch": round(train_seconds / max(len(history) - start_epoch, 1), 2),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "n_train_images": len(train_set),
        "n_val_images": len(val_set),
    }
    if final_metrics:
        from vae.metrics import latent_metrics

        observer = _load_observer(train_config.observer, data_hash)
        if observer is not None:
            metrics["observer"] = {"path": train_config.observer, "sha256": observer.sha256,
                                   "data_hash": observer.data_hash, **observer.metrics}
        metrics["latent"] = latent_metrics(
            model.cpu(), faceset, val_set.indices, train_indices=train_set.indices,
            observer=observer,
        )
        model.to(device)
    save_checkpoint(
        out, model, model_config, dataclasses.asdict(train_config), data_hash, metrics,
        epoch=train_config.epochs, optimizer_state=optimizer.state_dict(),
    )
    out.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    return model, metrics


def _load_observer(path: str, data_hash: str):
    """The observer for the face-likeness metric, or None (with a note) when there is none.

    A different store hash is allowed (a rebuilt synthetic store differs only in its creation
    time) but noted on stderr; the metrics record both hashes.
    """
    if not path:
        return None
    from vae.observer import load_observer

    if not Path(path).is_file():
        print(f"observer {path} not found: face-likeness reported without it", file=sys.stderr)
        return None
    observer = load_observer(path)
    if observer.data_hash != data_hash:
        print(f"note: observer {path} was trained on a store with another hash", file=sys.stderr)
    return observer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vae.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML with model: and train:")
    p.add_argument("--epochs", type=int)
    p.add_argument("--kappa", type=float)
    p.add_argument("--prior", choices=("vmf", "gaussian"))
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--radius", type=float)
    p.add_argument("--data")
    p.add_argument("--out")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--resume", help="checkpoint to continue from (same model and data)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model_config, train_config = load_config(args.config)
    model_flags = {"kappa": args.kappa, "prior": args.prior, "latent_dim": args.latent_dim,
                   "radius": args.radius}
    train_flags = {"epochs": args.epochs, "data": args.data, "out": args.out,
                   "seed": args.seed, "device": args.device}
    model_config = dataclasses.replace(
        model_config, **{k: v for k, v in model_flags.items() if v is not None}
    )
    train_config = dataclasses.replace(
        train_config, **{k: v for k, v in train_flags.items() if v is not None}
    )
    _, metrics = train(model_config, train_config, resume=args.resume,
                       progress=not args.no_progress)
    from vae.metrics import flatten_metrics

    summary = {"final_epoch": metrics["history"][-1], **flatten_metrics(metrics)}
    print(json.dumps(summary, indent=2))
    print(f"checkpoint: {train_config.out}  metrics: {Path(train_config.out).with_suffix('.json')}")
    return metrics


if __name__ == "__main__":
    main()
