"""Train the face VAE: `python -m vae.train --config experiments/vae_default.yaml --out NEW.pt`.

The YAML has two sections, `model:` (fields of `vae.model.ModelConfig`) and `train:` (fields of
`TrainConfig`); command-line flags override both. `--out` must name a file that does not exist:
training never overwrites a checkpoint (the committed default is reproduced into a new file and
compared). `--resume CKPT` continues an interrupted run in CKPT itself.

Training is deterministic on the CPU: the network is initialised from `seed`, and every epoch
draws its shuffling order and its posterior samples from generators seeded by (seed, epoch), so
a run resumed after epoch k (its per-epoch checkpoint holds the weights and the Adam state) ends
with the same weights as one run straight through. Per-epoch checkpoints are marked unfinished;
at the end the latent-space and readability metrics are computed on the validation identities,
judged against the study thresholds (`vae.verdict`), stored in the checkpoint (finished, with
its verdict) and its JSON, and a one-screen verdict is printed.

Heavy modules (torch) are imported after the arguments are parsed, so `--help` is instant.
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

import yaml

DEFAULT_CONFIG = "experiments/vae_default.yaml"
DEFAULT_DATA = "data/faces.h5"
DEFAULT_OBSERVER = "vae/checkpoints/observer.pt"
DEFAULT_IDENTITY_OBSERVER = "vae/checkpoints/identity_observer.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (saved with the checkpoint).

    data: HDF5 face store; built from the procedural faces (160 identities x 7 emotions x 2
        poses at the model's image size, seed 0) when the file does not exist.
    epochs: total epochs (a resumed run continues up to this number).
    batch_size, lr: Adam minibatch size and learning rate.
    seed: network initialisation, shuffling and posterior sampling.
    val_fraction, split_seed: identity-level validation split (`vae.store.split_by_identity`).
    device: "auto" (CUDA when available), "cpu" or "cuda".
    threads: torch's CPU threads while training. A CPU sum splits across threads, so the
        thread count moves a result's last bits and, over 30 epochs, the model: a seed
        reproduces a model only at the same count (1 trained the committed ones).
    expression_weight: strength of the per-pixel reconstruction weights where expression
        changes a child's face (`vae.identity.expression_pixel_weights`; 0 = plain BCE).
    observer: emotion observer checkpoint for the readability metrics ("" to skip).
    identity_observer: identity observer for the expression-vs-identity metric ("" to skip).
    reader: judge each emotion's retention with the independent expression reader too
        (`vae.reader`, its weights fetched by `make setup`; false to skip).
    """

    data: str = DEFAULT_DATA
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.2
    split_seed: int = 0
    device: str = "auto"
    threads: int = 1
    expression_weight: float = 0.0
    observer: str = DEFAULT_OBSERVER
    identity_observer: str = DEFAULT_IDENTITY_OBSERVER
    reader: bool = True

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
        if self.threads < 1:
            problems.append(f"threads={self.threads} (need >= 1)")
        if not self.expression_weight >= 0:
            problems.append(f"expression_weight={self.expression_weight} (need >= 0)")
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
    if section == "train" and "out" in raw:
        raise ValueError(
            f"{source}: key 'train.out' is no longer read (training never overwrites a "
            "checkpoint); delete it and pass --out NEW_PATH.pt"
        )
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))} in section {section!r}; "
            f"allowed: {', '.join(hints)}"
        )
    return {k: _check_value(source, f"{section}.{k}", v, hints[k]) for k, v in raw.items()}


def load_config(path: str | Path):
    """Read a training YAML (`model:` and `train:` sections) -> (ModelConfig, TrainConfig)."""
    from vae.model import ModelConfig

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


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use --device cpu")
    return torch.device(name)




def _epoch_generators(seed: int, epoch: int, device):
    """(shuffle generator on CPU, sampling generator on `device`) for one epoch."""
    import torch

    base = (seed + 1) * 1_000_003 + epoch
    shuffle = torch.Generator().manual_seed(2 * base)
    sample = torch.Generator(device=device).manual_seed(2 * base + 1)
    return shuffle, sample


class _Batches:
    """Images, labels and reference faces of some rows of a face set, on one device.

    Iterating gives (x (b, 1, H, W), labels (b,), reference (b, 1, H, W) or None) batches in
    the order of `order` (all rows when None); references only for identity models.
    """

    def __init__(self, images, labels, ref_rows, rows, device, with_reference: bool):
        import torch

        rows = torch.as_tensor(rows)
        self.x = images[rows].to(device)
        self.y = labels[rows].to(device)
        self.ref = images[torch.as_tensor(ref_rows)[rows]].to(device) if with_reference else None

    def __len__(self) -> int:
        return len(self.x)

    def iterate(self, batch_size: int, order=None, least: int = 1):
        """Minibatches (x, y, reference) of `batch_size` images in `order`; a last batch of
        fewer than `least` images joins the one before it (training passes 2: batch
        normalisation cannot take a batch of one image, e.g. 513 training images in 64s)."""
        import torch

        order = torch.arange(len(self.x)) if order is None else order
        starts = list(range(0, len(order), batch_size))
        if len(starts) > 1 and len(order) - starts[-1] < least:
            starts.pop()
        for i, j in zip(starts, [*starts[1:], len(order)], strict=True):
            idx = order[i:j]
            yield self.x[idx], self.y[idx], None if self.ref is None else self.ref[idx]


def _evaluate(model, batches: _Batches, seed: int, device, pixel_weight) -> dict:
    """Mean losses over `batches` (posterior samples from a fixed seed)."""
    import torch

    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    sums, n = {"total": 0.0, "recon": 0.0, "kl": 0.0, "ce": 0.0}, 0
    with torch.no_grad():
        for x, y, ref in batches.iterate(256):
            losses, _ = model.loss(x, y, generator, ref, pixel_weight)
            for key in sums:
                sums[key] += getattr(losses, key).item() * len(x)
            n += len(x)
    return {k: v / max(n, 1) for k, v in sums.items()}


def check_out(out: Path, resume: Path | None) -> None:
    """Refuse to write over an existing file (resuming writes into the resumed checkpoint)."""
    if resume is not None and out.resolve() == resume.resolve():
        return
    if out.exists():
        raise FileExistsError(
            f"{out} exists; training never overwrites a checkpoint. Pass --out with a new path "
            f"(e.g. {out.with_name(out.stem + '_new' + out.suffix)}), or --resume {out} to "
            "continue an interrupted run"
        )
    if not out.parent.exists():
        out.parent.mkdir(parents=True)


def train(model_config, train_config: TrainConfig, out: str | Path, **options):
    """Train (or resume) a VAE into the NEW file `out` on `train_config.threads` CPU threads
    (the caller's count is restored after); see `_train` for the options and what it returns."""
    import torch

    from vae.memory import keep_freed_memory

    keep_freed_memory()  # every batch's maps and gradients stay in the heap (vae/memory.py)
    before = torch.get_num_threads()
    torch.set_num_threads(train_config.threads)
    try:
        return _train(model_config, train_config, out, **options)
    finally:
        torch.set_num_threads(before)


def _train(
    model_config,
    train_config: TrainConfig,
    out: str | Path,
    resume: str | Path | None = None,
    progress: bool = True,
    final_metrics: bool = True,
    keep_optimizer: bool = False,
):
    """Train (or resume) a VAE into the NEW file `out` and write its metrics JSON beside it.

    Returns (model in eval mode, metrics dict). `final_metrics=False` skips the latent-space
    and readability metrics (tests); the loss history and timing are always recorded.
    keep_optimizer: keep Adam's state in the finished checkpoint (so `--resume` can extend it
    to more epochs, as `vae.sweep` does); the committed models leave it out (a third the size).
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from vae.checkpoint import load_checkpoint, save_checkpoint
    from vae.model import build_model
    from vae.store import read_store, split_by_identity, store_hash

    out = Path(out)
    resume = Path(resume) if resume is not None else None
    check_out(out, resume)
    device = resolve_device(train_config.device)
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    reader = None
    if final_metrics and train_config.reader:  # missing weights: fail now, not after training
        from vae.reader import load_reader

        reader = load_reader()
    data_path = Path(train_config.data)
    from vae.data import ensure_store

    ensure_store(data_path, model_config.image_size)
    faceset = read_store(data_path)
    if faceset.image_size != model_config.image_size:
        raise ValueError(
            f"face store {data_path} holds {faceset.image_size} (h, w) images but the model "
            f"expects {model_config.image_size}; set model.image_size to "
            f"{list(faceset.image_size)} or rebuild the store at that size"
        )
    train_idx, val_idx = split_by_identity(faceset.identities, train_config.val_fraction,
                                           train_config.split_seed)
    data_hash = store_hash(data_path)
    identity_model = model_config.kind == "identity"
    if identity_model:
        from vae.identity import reference_indices

        ref_rows = reference_indices(faceset)
    else:
        ref_rows = np.arange(len(faceset))
    pixel_weight = None
    if train_config.expression_weight > 0:
        from vae.identity import expression_pixel_weights

        weights = expression_pixel_weights(faceset, train_idx, train_config.expression_weight)
        pixel_weight = torch.from_numpy(weights).to(device)

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
            raise ValueError(f"cannot resume from {resume}: it holds no optimizer state/epoch "
                             "(finished checkpoints keep none; train a new one with --out)")
        model.load_state_dict(loaded.model.state_dict())
        optimizer.load_state_dict(loaded.optimizer_state)
        for group in optimizer.param_groups:  # the config's rate, not the one saved with it
            group["lr"] = train_config.lr
        start_epoch, history = loaded.epoch, list(loaded.metrics.get("history", []))
        if start_epoch >= train_config.epochs:
            raise ValueError(
                f"{resume} already has {start_epoch} epochs; ask for more with --epochs N"
            )

    images = torch.from_numpy(faceset.images).float().div_(255.0)[:, None]
    labels = torch.from_numpy(np.asarray(faceset.labels, dtype=np.int64))
    train_b = _Batches(images, labels, ref_rows, train_idx, device, identity_model)
    val_b = _Batches(images, labels, ref_rows, val_idx, device, identity_model)
    train_seconds = 0.0
    n_images = 0
    saved_config = dataclasses.asdict(train_config)
    bar = tqdm(
        range(start_epoch, train_config.epochs), desc="vae", unit="epoch", disable=not progress,
        initial=start_epoch, total=train_config.epochs,
    )
    for epoch in bar:
        shuffle_gen, sample_gen = _epoch_generators(train_config.seed, epoch, device)
        order = torch.randperm(len(train_b), generator=shuffle_gen)
        model.train()
        sums, n = {"total": 0.0, "recon": 0.0, "kl": 0.0, "ce": 0.0}, 0
        started = time.perf_counter()
        for x, y, ref in train_b.iterate(train_config.batch_size, order, least=2):
            losses, _ = model.loss(x, y, sample_gen, ref, pixel_weight)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            optimizer.step()
            for key in sums:
                sums[key] += getattr(losses, key).item() * len(x)
            n += len(x)
        model.encoder.calibrate(train_b.x)
        train_seconds += time.perf_counter() - started
        n_images += n
        val = _evaluate(model, val_b, train_config.seed, device, pixel_weight)
        row = {"epoch": epoch + 1, **{f"train_{k}": v / n for k, v in sums.items()}}
        row.update({f"val_{k}": v for k, v in val.items()})
        history.append(row)
        bar.set_postfix(loss=f"{sums['total'] / n:.0f}", val_ce=f"{val['ce']:.3f}")
        save_checkpoint(
            out, model, model_config, saved_config, data_hash, {"history": history},
            epoch=epoch + 1, optimizer_state=optimizer.state_dict(),
        )
    bar.close()

    model.eval()
    if identity_model:
        # the default child: the first held-out identity (sorted ids), so the readability
        # metrics below certify the very face a session shows when it names no identity
        from vae.identity import reference_face

        default_id = sorted(set(np.asarray(faceset.identities)[val_idx].astype(str)))[0]
        ref = torch.from_numpy(reference_face(faceset, default_id)).float().div(255.0)
        model.set_default_identity(ref.to(device), default_id)
    metrics = {
        "history": history,
        "epochs": train_config.epochs,
        "train_seconds_this_run": round(train_seconds, 2),
        "images_per_second": round(n_images / train_seconds, 1) if train_seconds else None,
        "seconds_per_epoch": round(train_seconds / max(len(history) - start_epoch, 1), 2),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "n_train_images": len(train_idx),
        "n_val_images": len(val_idx),
        "n_train_children": len(set(np.asarray(faceset.identities)[train_idx].tolist())),
        "n_val_children": len(set(np.asarray(faceset.identities)[val_idx].tolist())),
    }
    verdict = None
    if final_metrics:
        from vae.metrics import latent_metrics, readability_metrics
        from vae.verdict import judge

        model.cpu()
        observer = _load_observer(train_config.observer, data_hash, "observer")
        id_observer = _load_observer(train_config.identity_observer, data_hash,
                                     "identity observer")
        for key, obs in (("observer", observer), ("identity_observer", id_observer)):
            if obs is not None:
                metrics[key] = {"sha256": obs.sha256, "data_hash": obs.data_hash, **obs.metrics}
        metrics["latent"] = latent_metrics(model, faceset, val_idx, train_indices=train_idx,
                                           observer=observer)
        if observer is not None:
            metrics["readability"] = readability_metrics(
                model, faceset, train_idx, val_idx, observer, id_observer, reader=reader
            )
        verdict = judge(metrics, model_config.kind)
        model.to(device)
    save_checkpoint(
        out, model, model_config, saved_config, data_hash, metrics,
        epoch=train_config.epochs,
        optimizer_state=optimizer.state_dict() if keep_optimizer else None,
        verdict=verdict,
    )
    metrics_out = dict(metrics, verdict=verdict) if verdict is not None else metrics
    out.with_suffix(".json").write_text(json.dumps(metrics_out, indent=2) + "\n")
    return model, metrics_out


def _load_observer(path: str, data_hash: str, what: str):
    """An observer for the metrics, or None (with a note) when there is none.

    A different store hash is allowed (the observer may be judging a store it was not trained
    on) but noted on stderr; the metrics record both hashes.
    """
    if not path:
        return None
    from vae.observer import load_observer

    if not Path(path).is_file():
        print(f"{what} {path} not found: metrics that need it are skipped", file=sys.stderr)
        return None
    observer = load_observer(path)
    if observer.data_hash != data_hash:
        print(f"note: {what} {path} was trained on a store with another hash", file=sys.stderr)
    return observer


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m vae.train", description=__doc__.split("\n")[0],
        epilog="Flags without a default shown take the YAML's value.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"YAML with model: and train: sections (default: {DEFAULT_CONFIG})")
    p.add_argument("--out", help="checkpoint to write, a NEW path; metrics go beside it as "
                                 ".json (no default: required unless --resume)")
    p.add_argument("--resume", help="continue the interrupted run in this checkpoint (same "
                                    "model and data); it is also the output (default: none)")
    p.add_argument("--data", help=f"HDF5 face store (YAML default: {d.data}; built from the "
                                  "procedural faces if missing)")
    p.add_argument("--epochs", type=int, help=f"total epochs (YAML default: {d.epochs})")
    p.add_argument("--seed", type=int, help=f"initialisation/shuffling seed (default: {d.seed})")
    p.add_argument("--kind", choices=("identity", "plain"),
                   help="identity: expression on the sphere, child from a reference face; "
                        "plain: the seed study's one-code model (default: identity)")
    p.add_argument("--kappa", type=float, help="fixed vMF posterior concentration (default: 300)")
    p.add_argument("--prior", choices=("vmf", "gaussian"), help="latent prior (default: vmf)")
    p.add_argument("--latent-dim", type=int, help="ambient dimension d of the code (default: 3)")
    p.add_argument("--radius", type=float, help="code scale seen by the decoder (default: 1)")
    p.add_argument("--expression-weight", type=float,
                   help="per-pixel loss weight on expression regions, 0 = plain BCE "
                        f"(default: {d.expression_weight})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help=f"where to train (default: {d.device})")
    p.add_argument("--threads", type=int,
                   help=f"torch CPU threads (YAML default: {d.threads}; the count moves the "
                        "trained model's bits, so a seed reproduces a model only at its count)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _parser()
    args = p.parse_args(argv)
    if args.out is None and args.resume is None:
        p.error("--out NEW_PATH.pt is required (training never overwrites a checkpoint), "
                "or --resume CHECKPOINT to continue an interrupted run")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model_config, train_config = load_config(args.config)
    model_flags = {"kind": args.kind, "kappa": args.kappa, "prior": args.prior,
                   "latent_dim": args.latent_dim, "radius": args.radius}
    train_flags = {"epochs": args.epochs, "data": args.data, "seed": args.seed,
                   "device": args.device, "threads": args.threads,
                   "expression_weight": args.expression_weight}
    model_config = dataclasses.replace(
        model_config, **{k: v for k, v in model_flags.items() if v is not None}
    )
    train_config = dataclasses.replace(
        train_config, **{k: v for k, v in train_flags.items() if v is not None}
    )
    out = Path(args.out or args.resume)
    try:
        check_out(out, Path(args.resume) if args.resume else None)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    _, metrics = train(model_config, train_config, out, resume=args.resume,
                       progress=not args.no_progress)
    from vae.verdict import format_verdict

    print(format_verdict(metrics, model_config, out))
    return metrics


if __name__ == "__main__":
    main()
