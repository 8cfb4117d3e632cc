"""The study's figures for one checkpoint: `python -m vae.figures CHECKPOINT [--out DIR]`.

Writes titled PNGs (matplotlib, Agg) named after the checkpoint:
  <stem>_latent_axes.png   codes of every face seen along the x, y and z axes, coloured by emotion
  <stem>_manifold.png      decoded faces on an equal-area latitude/longitude grid over the sphere
  <stem>_kappa.png         decoded vMF samples around one code at kappa 1, 100, 300, 3000
  <stem>_ring.png          (d=2 models) codes on the ring and faces decoded around it
  <stem>_gap_path.png      faces along the great circle between two emotion centroids, with the
                           classifier's probabilities under each
  <stem>_centroids.png     each emotion's centroid decoded, one row per held-out child (identity
                           models; plain models: one row), with the observer's p(intended)
Sphere figures need d=3; the Gaussian baseline gets its raw 3-d codes and a straight gap path.
Identity models draw the manifold, kappa and gap figures as one child: `--identity ID` (default:
the checkpoint's default child).

Arguments are parsed before matplotlib and torch are imported, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vae.figures", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="the VAE checkpoint (.pt) to draw")
    p.add_argument("--out", default="reports/figures",
                   help="folder for the PNGs (default: reports/figures)")
    p.add_argument("--data", help="face store (default: the one the checkpoint was trained on)")
    p.add_argument("--pair", nargs=2, default=("happy", "sad"), metavar=("FROM", "TO"),
                   help="emotions for the gap path, FROM also for the kappa figure "
                        "(default: happy sad)")
    p.add_argument("--identity", help="child drawn by identity models (default: the "
                                      "checkpoint's default child)")
    p.add_argument("--observer", default="vae/checkpoints/observer.pt",
                   help="observer rating the decoded centroids, '' for none "
                        "(default: vae/checkpoints/observer.pt)")
    p.add_argument("--children", type=int, default=8,
                   help="held-out children in the centroid figure (default: 8)")
    return p


if __name__ == "__main__":
    _ARGS = _parser().parse_args()  # before the heavy imports: --help and bad flags are instant

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,I001
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vae.checkpoint import load_checkpoint  # noqa: E402
from vae.distributions import VonMisesFisher  # noqa: E402
from vae.metrics import class_centroids, great_circle  # noqa: E402

COLOURS = plt.get_cmap("tab10").colors


@torch.no_grad()
def _decode(model, z: np.ndarray, identity: torch.Tensor | None = None) -> np.ndarray:
    """(n, d) codes [+ one identity code (k,)] -> (n, H, W) float images."""
    return model.decode(torch.as_tensor(z, dtype=torch.float32), identity)[:, 0].numpy()


def _montage(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """(rows*cols, H, W) -> one (rows*(H+pad), cols*(W+pad)) image, white gaps."""
    h, w = images.shape[1:]
    out = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad))
    for k, im in enumerate(images[: rows * cols]):
        r, c = divmod(k, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = im
    return out


def latent_axes(codes: np.ndarray, labels: np.ndarray, names, title: str, path: Path) -> None:
    """Three views of 3-d codes: looking down the x, y and z axes (front half solid)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    sphere = np.allclose(np.linalg.norm(codes, axis=1), 1.0, atol=1e-4)
    for ax, (look, (a, b)) in zip(axes, [(0, (1, 2)), (1, (0, 2)), (2, (0, 1))], strict=True):
        front = codes[:, look] >= 0
        for c, name in enumerate(names):
            sel = labels == c
            ax.scatter(codes[sel & ~front, a], codes[sel & ~front, b], s=6, color=COLOURS[c],
                       alpha=0.12)
            ax.scatter(codes[sel & front, a], codes[sel & front, b], s=8, color=COLOURS[c],
                       alpha=0.8, label=name if look == 0 else None)
        if sphere:
            ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.6", lw=0.8))
        ax.set_aspect("equal")
        xyz = "xyz"
        ax.set_xlabel(f"code {xyz[a]}")
        ax.set_ylabel(f"code {xyz[b]}")
        ax.set_title(f"seen from +{xyz[look]} (faint: far side)")
    fig.legend(loc="center right", markerscale=2.5, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def manifold(model, title: str, path: Path, rows: int = 9, cols: int = 16,
             identity: torch.Tensor | None = None) -> None:
    """Decoded faces on an equal-area grid: rows evenly spaced in z = sin(latitude)."""
    z_levels = np.linspace(1, -1, 2 * rows + 1)[1::2]
    lons = np.linspace(-np.pi, np.pi, cols, endpoint=False) + np.pi / cols
    zz, ll = np.meshgrid(z_levels, lons, indexing="ij")
    r = np.sqrt(1 - zz**2)
    codes = np.stack([r * np.cos(ll), r * np.sin(ll), zz], axis=-1).reshape(-1, 3)
    images = _decode(model, codes, identity)
    h, w = images.shape[1:]
    fig, ax = plt.subplots(figsize=(cols * 0.85, rows * 0.85 * h / w + 0.8))
    ax.imshow(_montage(images, rows, cols), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([(h + 2) * i + h / 2 for i in range(rows)])
    ax.set_yticklabels([f"{np.degrees(np.arcsin(v)):.0f}" for v in z_levels])
    ax.set_xticks([(w + 2) * j + w / 2 for j in range(cols)])
    ax.set_xticklabels([f"{np.degrees(v):.0f}" for v in lons], fontsize=7)
    ax.set_ylabel("latitude (deg)")
    ax.set_xlabel("longitude (deg)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kappa_samples(model, centre: np.ndarray, label: str, title: str, path: Path,
                  kappas=(1.0, 100.0, 300.0, 3000.0), n: int = 10, seed: int = 0,
                  identity: torch.Tensor | None = None) -> None:
    """Rows: decoded draws from vMF(centre, kappa) for each kappa; first column the centre."""
    generator = torch.Generator().manual_seed(seed)
    loc = torch.as_tensor(centre, dtype=torch.float32)
    rows = []
    for kappa in kappas:
        q = VonMisesFisher(loc.expand(n, -1), torch.full((n,), float(kappa)))
        z = q.sample(generator=generator).numpy()
        rows.append(_decode(model, np.vstack([centre[None], z]), identity))
    images = np.concatenate(rows)
    h, w = images.shape[1:]
    fig, ax = plt.subplots(figsize=((n + 1) * 0.95, len(kappas) * 0.95 * h / w + 0.8))
    ax.imshow(_montage(images, len(kappas), n + 1), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([(h + 2) * i + h / 2 for i in range(len(kappas))])
    ax.set_yticklabels([f"kappa {k:g}" for k in kappas])
    ax.set_xticks([w / 2])
    ax.set_xticklabels([f"centre ({label})"])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ring(model, codes: np.ndarray, labels: np.ndarray, names, title: str, path: Path,
         n_faces: int = 16) -> None:
    """d=2: codes by angle around the ring (jittered outwards by emotion) and decoded faces."""
    angles = np.arctan2(codes[:, 1], codes[:, 0])
    fig = plt.figure(figsize=(12, 6))
    ax = fig.add_subplot(1, 2, 1, projection="polar")
    for c, name in enumerate(names):
        sel = labels == c
        ax.scatter(angles[sel], 1 + 0.06 * c + np.zeros(sel.sum()), s=8, color=COLOURS[c],
                   label=name)
    ax.set_rticks([])
    ax.set_title("codes on the ring (radial offset = emotion)")
    ax.legend(loc="lower left", bbox_to_anchor=(-0.25, -0.12), fontsize=8, markerscale=2)
    theta = np.linspace(-np.pi, np.pi, n_faces, endpoint=False)
    images = _decode(model, np.c_[np.cos(theta), np.sin(theta)])
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.imshow(_montage(images, 2, n_faces // 2), cmap="gray", vmin=0, vmax=1)
    h, w = images.shape[1:]
    ax2.set_xticks([(w + 2) * j + w / 2 for j in range(n_faces // 2)])
    ax2.set_xticklabels([f"{np.degrees(t):.0f}" for t in theta[: n_faces // 2]], fontsize=7)
    ax2.set_yticks([h / 2, h + 2 + h / 2])
    ax2.set_yticklabels(["row 1", f"row 2: +{np.degrees(theta[n_faces // 2] - theta[0]):.0f}"])
    ax2.set_xlabel("angle on the ring (deg)")
    ax2.set_title("faces decoded around the ring")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def gap_path(model, a: np.ndarray, b: np.ndarray, names, pair: tuple[int, int], title: str,
             path: Path, n: int = 11, sphere: bool = True,
             identity: torch.Tensor | None = None) -> None:
    """Faces along the path a -> b and the classifier's emotion probabilities under each."""
    t = np.linspace(0, 1, n)
    z = great_circle(a, b, n) if sphere else a + t[:, None] * (b - a)
    images = _decode(model, z, identity)
    probs = torch.softmax(model.classify(torch.as_tensor(z, dtype=torch.float32)), -1).numpy()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(n * 1.0, 5.6),
                                      gridspec_kw={"height_ratios": [1, 1.4]})
    top.imshow(_montage(images, 1, n), cmap="gray", vmin=0, vmax=1)
    top.axis("off")
    for c, name in enumerate(names):
        bottom.plot(t, probs[:, c], "-o", ms=3, color=COLOURS[c], label=name,
                    lw=2.2 if c in pair else 1.0)
    bottom.set_xlim(-0.05, 1.05)
    bottom.set_ylim(0, 1.02)
    bottom.set_xlabel(f"position along the path ({names[pair[0]]} centroid = 0, "
                      f"{names[pair[1]]} centroid = 1)")
    bottom.set_ylabel("classifier probability")
    bottom.legend(ncol=7, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def centroid_grid(images: np.ndarray, p_intended: np.ndarray | None, children, names,
                  title: str, path: Path) -> None:
    """images (children, emotions, H, W): one row per child; p(intended) under each face."""
    n_rows, n_cols, h, w = images.shape
    fig, ax = plt.subplots(figsize=(n_cols * 1.25, n_rows * 1.25 * h / w + 1.0))
    ax.imshow(_montage(images.reshape(-1, h, w), n_rows, n_cols, pad=4), cmap="gray", vmin=0,
              vmax=1)
    ax.set_xticks([(w + 4) * j + w / 2 for j in range(n_cols)])
    ax.set_xticklabels(names)
    ax.xaxis.tick_top()
    ax.set_yticks([(h + 4) * i + h / 2 for i in range(n_rows)])
    ax.set_yticklabels(children)
    if p_intended is not None:
        for i in range(n_rows):
            for j in range(n_cols):
                p = p_intended[i, j]
                ax.text((w + 4) * j + w / 2, (h + 4) * i + h - 2, f"{p:.2f}", ha="center",
                        va="bottom", fontsize=7, color="white",
                        bbox={"facecolor": "green" if p >= 0.8 else "red", "alpha": 0.7,
                              "pad": 1, "lw": 0})
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def make_figures(checkpoint: str | Path, out: str | Path = "reports/figures",
                 data: str | Path | None = None, pair: tuple[str, str] = ("happy", "sad"),
                 identity: str | None = None, observer: str | Path | None = None,
                 n_children: int = 8):
    """Write every figure that applies to the checkpoint's model; returns the paths.

    identity: the child identity models draw (default: the checkpoint's default child);
    observer: observer checkpoint rating the decoded centroids (None: no ratings).
    """
    from vae.store import read_store, split_by_identity, store_hash

    loaded = load_checkpoint(checkpoint)
    model, cfg = loaded.model, loaded.config
    data = data or loaded.train_config["data"]
    faces = read_store(data)
    if store_hash(data) != loaded.data_hash:
        # centroids, reference faces and the latent plot would all come from other faces
        print(f"WARNING: face store {data} is not the store {checkpoint} was trained on (its "
              f"content hash differs from the checkpoint's {str(loaded.data_hash)[:12]}...): the "
              "figures show the model on faces it never saw; pass --data with its own store",
              file=sys.stderr, flush=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(checkpoint).stem
    names = list(faces.label_names)
    x = torch.from_numpy(faces.images.astype(np.float32) / 255.0)[:, None]
    codes = torch.cat([model.encode(x[i : i + 256]) for i in range(0, len(x), 256)]).numpy()
    labels = np.asarray(faces.labels)
    sphere = cfg.prior == "vmf"
    what = (f"vMF VAE d={cfg.latent_dim}, kappa={cfg.kappa:g}, radius={cfg.radius:g}" if sphere
            else f"Gaussian VAE d={cfg.latent_dim}")
    epochs = loaded.epoch
    what += f", {epochs} epochs" if epochs else ""
    code = None
    if cfg.kind == "identity":
        from vae.identity import reference_images

        child = identity or loaded.default_identity
        code = model.identity_code(torch.from_numpy(reference_images(faces, [child])))[0]
        what += f", child {child}"
    written = []
    if cfg.latent_dim == 3:
        p = out / f"{stem}_latent_axes.png"
        latent_axes(codes, labels, names, f"Latent codes of all {len(codes)} faces ({what})", p)
        written.append(p)
    if sphere and cfg.latent_dim == 3:
        p = out / f"{stem}_manifold.png"
        manifold(model, f"Decoded sphere, equal-area latitude/longitude grid ({what})", p,
                 identity=code)
        written.append(p)
        centre = class_centroids(codes, labels, len(names))[names.index(pair[0])]
        p = out / f"{stem}_kappa.png"
        kappa_samples(model, centre, pair[0],
                      f"Decoded vMF samples around the {pair[0]} centroid ({what})", p,
                      identity=code)
        written.append(p)
    if sphere and cfg.latent_dim == 2:
        p = out / f"{stem}_ring.png"
        ring(model, codes, labels, names, f"The ring ({what})", p)
        written.append(p)
    i, j = names.index(pair[0]), names.index(pair[1])
    if sphere:
        centroids = class_centroids(codes, labels, len(names))
        a, b = centroids[i], centroids[j]
    else:
        centroids = np.stack([codes[labels == c].mean(0) for c in range(len(names))])
        a, b = centroids[i], centroids[j]
    p = out / f"{stem}_gap_path.png"
    route = "great circle" if sphere else "straight line"
    gap_path(model, a, b, names, (i, j),
             f"From {pair[0]} to {pair[1]} along the {route} between centroids ({what})", p,
             sphere=sphere, identity=code)
    written.append(p)

    z = torch.as_tensor(centroids, dtype=torch.float32)
    if cfg.kind == "identity":
        from vae.identity import reference_images

        tc = loaded.train_config
        _, val_idx = split_by_identity(faces.identities, tc.get("val_fraction", 0.2),
                                       tc.get("split_seed", 0))
        children = sorted(set(np.asarray(faces.identities)[val_idx].astype(str)))[:n_children]
        id_codes = model.identity_code(torch.from_numpy(reference_images(faces, children)))
        grid = torch.stack([model.decode(z, c) for c in id_codes])[:, :, 0].numpy()
        rows = [f"{c} (held out)" for c in children]
    else:
        grid, rows = model.decode(z)[None, :, 0].numpy(), ["-"]
    p_intended = None
    if observer:
        from vae.observer import load_observer

        judge = load_observer(observer)
        h, w = grid.shape[-2:]
        probs = judge.predict_proba(grid.reshape(-1, 1, h, w)).reshape(*grid.shape[:2], -1)
        p_intended = probs[:, np.arange(len(names)), np.arange(len(names))]
    p = out / f"{stem}_centroids.png"
    centroid_grid(grid, p_intended, rows, names,
                  f"Decoded emotion centroids ({what.split(', child')[0]});\nnumber = observer "
                  "p(intended), green >= 0.8", p)
    written.append(p)
    return written


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> list[Path]:
    args = args or _parser().parse_args(argv)
    written = make_figures(args.checkpoint, args.out, args.data, tuple(args.pair),
                           args.identity, args.observer or None, args.children)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main(args=_ARGS)
