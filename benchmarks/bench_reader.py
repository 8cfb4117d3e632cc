"""How a reader trained on photographs (vae.reader) reads our faces and a model's reconstructions.

Store: the reader's agreement with the intended emotion on every face of the store, per emotion
(how photo-like the procedural expressions are; chance is 1/7). Model: on the held-out
children's originals and their reconstructions (the checkpoint's own split), per emotion, and
the retention (reconstructions / originals) the verdict judges, with its standard error over
held-out children (resampled: about 0.06 for happy, so two models' figures 0.1 apart are not
told apart by one run), and beside it what retention leaves out: kept, the share of the
originals read right whose reconstruction is read right too (retention also credits a misread
original the reconstruction turns right; `vae.metrics.expression_retention`); and the stipple
ratio: fine texture (mean |second difference| down and across) of the reconstructions over
that of the originals inside the reader's face box, 1 when a decoder adds no stripes or
speckles (the committed default, with the still reference: 0.99 to 1.08 for neutral; the
templated warp decoder before it: 0.97 for disgusted to 1.01; the warp decoder before the
templates: 0.88 to 1.05; the skip decoder before it: 1.04 to 1.14); and the pale patches: how
much brighter (grey levels, 0-255) the reconstructions are than the originals on the forehead
between fringe and brows and on the cheeks beside the nose (`PALE`; 0 when a decoder paints
no pale band or blush); and, for warp decoders, the brow lift: how far up (pixels) the flow
moves the reference's brows at most (`BROW_BAND`; raised brows in the procedural faces sit 3-5
px above the reference's).
A brow the flow does not carry is painted by the correction: a pale band where the old one is
erased, two arcs where move and paint disagree. Last, the same by skin tone: the held-out
children in thirds by their reference face's grey on the cheeks, each third's agreement on
originals and reconstructions over the emotions the reader judges, and happy's (features drawn
dark on dark skin have the least contrast to keep). And how sharp a face must be for the
reader: its agreement on the held-out originals blurred by a Gaussian of 0.5 to 1.5 px
(`BLURS`), per emotion and for the darkest third's happy; a decoder whose reconstructions read
like originals blurred by sigma has lost what that blur loses.
With `--fresh N`, the retention again on N new procedural children (`FRESH_SEED`; every face
of each): the checkpoint's own figure comes from its 32 held-out children, on whom the emotions
the reader reads on under half of the originals (fearful, neutral, sad) have a standard error
of 0.1-0.2; on 320 new children it is 0.04-0.07, so a decoder's per-emotion figure is measured,
not drawn; kept and agreement (the share of reconstructions read as their originals are) stand
beside it, and each emotion's retention within each third of the children by skin tone follows
(angry's, 0.94-1.07 on the lightest third, is 0.30-0.43 on the darkest). For models trained on
the procedural faces (a lab's own children are not these).

    python benchmarks/bench_reader.py [--data data/faces.h5] [--checkpoint vae/checkpoints/default.pt]
    python benchmarks/bench_reader.py --fresh 320      # also on 320 children no model saw
    python benchmarks/bench_reader.py --checkpoint ""     # the store only
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def per_emotion(probs: np.ndarray, labels: np.ndarray, names) -> dict[str, float]:
    right = probs.argmax(1) == labels
    return {n: float(np.mean(right[labels == c])) for c, n in enumerate(names)}


def stipple_ratio(recon: np.ndarray, originals: np.ndarray, box) -> float:
    """Fine texture of images (n, 1, H, W) in [0, 1] over that of the originals, in the box
    (top, bottom, left, right): mean |second difference| down plus across."""
    top, bottom, left, right = box

    def texture(x):
        x = x[:, 0, top:bottom, left:right].astype(np.float64)
        return np.abs(np.diff(x, 2, axis=1)).mean() + np.abs(np.diff(x, 2, axis=2)).mean()

    return float(texture(recon) / texture(originals))


PALE = {"forehead": ((0.22, 0.34), ((0.25, 0.75),)),
        "cheeks": ((0.53, 0.66), ((0.19, 0.34), (0.66, 0.81)))}
"""Regions of the frame (rows, column ranges), fractions of its height and width."""


def _pixels(region: str, h: int, w: int) -> tuple[slice, np.ndarray]:
    """The rows (a slice) and columns (indices) of a `PALE` region of an (h, w) frame."""
    (top, bottom), spans = PALE[region]
    cols = np.concatenate([np.arange(round(a * w), round(b * w)) for a, b in spans])
    return slice(round(top * h), round(bottom * h)), cols


def pale(recon: np.ndarray, originals: np.ndarray, region: str) -> float:
    """Mean of reconstruction minus original, images (n, 1, H, W) in [0, 1], over a `PALE`
    region, in grey levels (0-255): positive when the reconstructions are paler there."""
    rows, cols = _pixels(region, *recon.shape[2:])
    return float(255.0 * (recon - originals)[:, 0, rows][..., cols].mean())


BROW_BAND = ((0.3, 0.46), (0.2, 0.8))
"""Rows and columns of the frame holding both brows (neutral and raised), fractions."""


def _band(h: int, w: int) -> tuple[slice, slice]:
    (top, bottom), (left, right) = BROW_BAND
    return slice(round(top * h), round(bottom * h)), slice(round(left * w), round(right * w))


def reconstruct_with_flows(model, faces, rows) -> tuple[np.ndarray, torch.Tensor | None]:
    """`vae.metrics.reconstruct` of the faces `rows`, (n, 1, H, W), and for warp decoders the
    pre-tanh output of their flow head for each face in the same order (n, 2, H/4, W/4), read
    from that one reconstruction (None for other decoders)."""
    from vae.metrics import reconstruct

    if getattr(model.config, "decoder", "") != "warp":
        return reconstruct(model, faces, rows).numpy(), None
    flows = []
    hook = model.decoder.flow.register_forward_hook(lambda _m, _i, out: flows.append(out))
    try:
        recon = reconstruct(model, faces, rows).numpy()
    finally:
        hook.remove()
    return recon, torch.cat(flows)


@torch.no_grad()
def brow_lift(model, flows: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """Per face, the largest upward displacement (pixels) of the warp decoder's flow field in
    `BROW_BAND`, resized to the frame as `vae.model.warp` resizes it; flows: the flow head's
    pre-tanh output (n, 2, H/4, W/4) (`reconstruct_with_flows`)."""
    h, w = image_size
    up = -model.decoder.max_shift * torch.tanh(flows)[:, 1:2]  # y is down
    up = torch.nn.functional.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)
    band_rows, band_cols = _band(h, w)
    return up[:, 0, band_rows, band_cols].amax(dim=(1, 2)).numpy()


def cheek_grey(faces, rows: np.ndarray) -> np.ndarray:
    """(len(rows),) mean grey (0-255) of each row's reference face (its child's neutral,
    `vae.identity.reference_indices`) over the `PALE` cheeks: the child's skin tone."""
    from vae.identity import reference_indices

    cheek_rows, cheek_cols = _pixels("cheeks", *faces.image_size)
    refs = faces.images[reference_indices(faces)[rows]].astype(np.float64)
    return refs[:, cheek_rows][..., cheek_cols].mean(axis=(1, 2))


def thirds(children: np.ndarray, grey: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The children (ids of the faces' `children` (n,)) in thirds by their faces' mean `grey`
    (n,), darkest first: [(ids, their greys)] * 3."""
    ids = np.unique(children)
    tone = np.array([grey[children == c].mean() for c in ids])
    order = np.argsort(tone)
    return list(zip(np.array_split(ids[order], 3), np.array_split(tone[order], 3), strict=True))


def by_tone(right_orig: np.ndarray, right_recon: np.ndarray, labels: np.ndarray,
            judged: list[int], happy: int, grey: np.ndarray, children: np.ndarray) -> list[str]:
    """One line per third of the children (darkest first) by `grey`: the share of the judged
    emotions' faces the reader reads as intended, originals -> reconstructions, and happy's."""
    lines = []
    for name, (third, shades) in zip(("darkest", "middle", "lightest"), thirds(children, grey),
                                     strict=True):
        mine = np.isin(children, third)
        seen = mine & np.isin(labels, judged)
        glad = mine & (labels == happy)
        lo, hi = shades.min(), shades.max()
        lines.append(f"  {name:8s} {len(third):2d} children (grey {lo:3.0f}-{hi:3.0f}): judged "
                     f"emotions {right_orig[seen].mean():4.0%} -> {right_recon[seen].mean():4.0%}"
                     f", happy {right_orig[glad].mean():4.0%} -> {right_recon[glad].mean():4.0%}")
    return lines


def retention_by_tone(right_orig: np.ndarray, right_recon: np.ndarray, labels: np.ndarray,
                      names: list[str], judged: list[int], grey: np.ndarray,
                      children: np.ndarray) -> list[str]:
    """One line per third of the children (darkest first) by `grey`: each judged emotion's
    retention (read as intended on reconstructions / on originals) within that third, "-"
    where the third has no original of it read right. Faces (n,): right_* bool, labels,
    grey, children; names: the emotions by label."""
    lines = []
    for name, (third, shades) in zip(("darkest", "middle", "lightest"), thirds(children, grey),
                                     strict=True):
        mine = np.isin(children, third)
        figures = []
        for c in judged:
            orig = right_orig[mine & (labels == c)].mean()
            figures.append(f"{names[c]} " + ("-" if orig == 0 else
                                             f"{right_recon[mine & (labels == c)].mean() / orig:.2f}"))
        lines.append(f"  {name:8s} {len(third):3d} children (grey {shades.min():3.0f}-"
                     f"{shades.max():3.0f}): " + "  ".join(figures))
    return lines


BLURS = (0.5, 0.75, 1.0, 1.5)
"""Standard deviations (pixels of the frame) of the Gaussian blurs `blurred_agreement` tries."""


def blurred_agreement(reader, originals: np.ndarray, labels: np.ndarray, sigma: float) -> np.ndarray:
    """(n,) bool: the reader reads each original (n, 1, H, W) in [0, 1], blurred by a Gaussian
    of sigma pixels (`vae.model.blur`), as its label (n,)."""
    from vae.model import blur

    soft = blur(torch.from_numpy(originals), sigma).numpy()
    return reader.predict_proba(soft).argmax(1) == labels


FRESH_SEED = 1
"""The procedural generator's seed for `--fresh` children: the default store is seed 0's, so
these are people no model was trained or validated on."""


def fresh_retention(model, reader, n_children: int, size: tuple[int, int]) -> list[str]:
    """Lines: each emotion's reader retention on every face of n_children new procedural
    children (`generate_faces`, FRESH_SEED, (height, width) size), with its standard error
    over children (`vae.metrics.retention_se`, recorded by `expression_retention`), and the
    least retention over the emotions judged;
    then the same within each third of the children by skin tone (`retention_by_tone`)."""
    from vae.metrics import expression_retention, reconstruct
    from vae.procedural.faces import generate_faces

    fresh = generate_faces(n_children, size=size, seed=FRESH_SEED)
    rows = np.arange(len(fresh))
    names, labels = list(fresh.label_names), np.asarray(fresh.labels)
    probs = reader.predict_proba(fresh.images[:, None].astype(np.float32) / 255.0)
    recon_probs = reader.predict_proba(reconstruct(model, fresh, rows).numpy())
    children = np.asarray(fresh.identities).astype(str)
    r = expression_retention(probs, recon_probs, labels, names, children)
    lines, judged = [], []
    for c, (n, e) in enumerate(r["per_emotion"].items()):
        if e["retention"] is None:
            lines.append(f"  {n:10s} originals {e['observer_accuracy_originals']:4.0%}  not judged")
            continue
        judged.append(c)
        lines.append(f"  {n:10s} originals {e['observer_accuracy_originals']:4.0%}  "
                     f"reconstructions {e['observer_accuracy_reconstructions']:4.0%}  retention "
                     f"{e['retention']:.2f} (se {e['retention_se']:.2f})  kept "
                     f"{e['kept']:.2f}  agreement {e['agreement']:.2f}")
    read_orig, read_recon = probs.argmax(1) == labels, recon_probs.argmax(1) == labels
    tone = retention_by_tone(read_orig, read_recon, labels, names, judged,
                             cheek_grey(fresh, rows), children)
    least = min(r["per_emotion"][names[c]]["retention"] for c in judged)
    return ([f"{n_children} new children ({len(fresh)} faces, generator seed {FRESH_SEED}), least "
             f"retention {least:.2f}:"] + lines
            + ["retention by skin tone (the reference's grey on the cheeks):"] + tone)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/faces.h5", help="face store (default data/faces.h5)")
    p.add_argument("--checkpoint", default="vae/checkpoints/default.pt",
                   help="model whose reconstructions to read ('' for none)")
    p.add_argument("--fresh", type=int, default=0, metavar="N",
                   help="also read the model's reconstructions of N new procedural children "
                        "(default 0: none; 320 gives standard errors of 0.07 or less)")
    args = p.parse_args(argv)
    if args.fresh < 0:
        p.error(f"--fresh {args.fresh}: give a number of children, 0 or more")
    torch.set_num_threads(1)
    from vae.checkpoint import load_checkpoint
    from vae.metrics import expression_retention
    from vae.reader import NAME, face_box, load_reader
    from vae.store import read_store, split_by_identity

    reader = load_reader()
    faces = read_store(args.data)
    names, labels = list(faces.label_names), np.asarray(faces.labels)
    start = time.process_time()
    probs = reader.predict_proba(faces.images[:, None].astype(np.float32) / 255.0)
    seconds = time.process_time() - start
    print(f"reader: {NAME}; {len(faces)} faces read in {seconds:.1f} CPU s")
    store = per_emotion(probs, labels, names)
    print(f"store, all faces: {np.mean(probs.argmax(1) == labels):.0%} agree  "
          + "  ".join(f"{n} {v:.0%}" for n, v in store.items()))
    if not args.checkpoint:
        return
    loaded = load_checkpoint(args.checkpoint)
    tc = loaded.train_config
    _, val = split_by_identity(faces.identities, tc["val_fraction"], tc["split_seed"])
    recon, flows = reconstruct_with_flows(loaded.model, faces, val)
    lift = None if flows is None else brow_lift(loaded.model, flows, faces.image_size)
    recon_probs = reader.predict_proba(recon)
    children = np.asarray(faces.identities)[val].astype(str)
    r = expression_retention(probs[val], recon_probs, labels[val], names, children)
    print(f"{args.checkpoint}, {len(val)} held-out faces: originals "
          f"{r['observer_accuracy_originals']:.0%}, reconstructions "
          f"{r['observer_accuracy_reconstructions']:.0%}, retention {r['retention']:.2f}")
    box = face_box(faces.image_size)
    originals = faces.images[val][:, None].astype(np.float32) / 255.0
    read_orig = probs[val].argmax(1) == labels[val]
    read_recon = recon_probs.argmax(1) == labels[val]
    for c, (n, e) in enumerate(r["per_emotion"].items()):
        figure = "-" if e["retention"] is None else (
            f"{e['retention']:.2f} (se {e['retention_se']:.2f})  kept {e['kept']:.2f}")
        mine = labels[val] == c
        print(f"  {n:10s} originals {e['observer_accuracy_originals']:4.0%}  reconstructions "
              f"{e['observer_accuracy_reconstructions']:4.0%}  retention {figure}  stipple "
              f"{stipple_ratio(recon[mine], originals[mine], box):.2f}  paler: forehead "
              f"{pale(recon[mine], originals[mine], 'forehead'):+.1f} cheeks "
              f"{pale(recon[mine], originals[mine], 'cheeks'):+.1f}"
              + ("" if lift is None else f"  brow lift {lift[mine].mean():.1f} px"))
    judged = [c for c, e in enumerate(r["per_emotion"].values()) if e["retention"] is not None]
    print("by skin tone (the reference's grey on the cheeks), share read as intended:")
    grey = cheek_grey(faces, val)
    for line in by_tone(read_orig, read_recon, labels[val], judged, names.index("happy"),
                        grey, children):
        print(line)
    print("the held-out originals blurred (Gaussian, sigma px), share read as intended:")
    darkest = np.isin(children, thirds(children, grey)[0][0])
    happy = labels[val] == names.index("happy")
    for sigma in BLURS:
        right = blurred_agreement(reader, originals, labels[val], sigma)
        print(f"  sigma {sigma:4.2f}: " + "  ".join(
            f"{n} {right[labels[val] == c].mean():4.0%}" for c, n in enumerate(names))
            + f"  darkest third's happy {right[happy & darkest].mean():4.0%}")
    if args.fresh:
        for line in fresh_retention(loaded.model, reader, args.fresh, faces.image_size):
            print(line)


if __name__ == "__main__":
    main()
