"""CLI: one readable HTML report (plus PNG figures and CSV tables) for a folder of MCMCP data.

    python -m analysis.report participants_data/ --out reports/NAME \
        [--checkpoint vae/checkpoints/default.pt --faces data/faces.h5] [--burn-in 0.5]

Writes OUT/index.html (self-contained: figures embedded), OUT/figures/*.png, OUT/tables/*.csv.
Without --checkpoint no faces are decoded (the page says so). The participants' files are only
read. Group-level results leave out participants flagged by the attention checks. A study of
more than 12 participants gets summaries instead of one trajectory map per participant; the
report of one participant's folder (participants_data/sub-ID) is that participant's own page.
"""

from __future__ import annotations

import argparse
import sys

MIN_CATCH_ACCURACY = 0.8  # analysis.diagnostics.MIN_CATCH_ACCURACY, kept here so --help is fast


def _burn_in(text: str) -> float | int:
    """--burn-in: '0.5' = that fraction of each chain, '100' = that many steps."""
    try:
        value = int(text) if text.isdigit() else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--burn-in {text!r}: give a fraction in [0, 1) "
                                         "or a whole number of steps") from None
    if isinstance(value, float) and not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"--burn-in {text}: a fraction must be in [0, 1)")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="participants_data/ tree, a sub-<id> folder or a ses-<NN> folder")
    p.add_argument("--out", required=True, help="report folder (created; files replaced)")
    p.add_argument("--checkpoint", help="VAE checkpoint the sessions ran with (default: none, "
                                        "no faces are drawn)")
    p.add_argument("--faces", help="face store (HDF5) for the class centroids (default: none; "
                                   "needs --checkpoint)")
    p.add_argument("--burn-in", type=_burn_in, default=0.5,
                   help="fraction of each chain (0.5) or number of steps (100) to discard "
                        "(default: 0.5)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples of whole chains for the confidence cones "
                        "(default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument("--min-catch-accuracy", type=float, default=MIN_CATCH_ACCURACY,
                   help="flag participants with a smaller share of catch trials correct "
                        f"(default: {MIN_CATCH_ACCURACY})")
    p.add_argument("--precision", type=float,
                   help="target precision of a prototype, degrees: the half-angle its 95%% cone "
                        "must be within for the verdict 'precise enough' (default: the study's "
                        "analysis.precision, else 5)")
    p.add_argument("--cache", help="folder where each session's trials are kept as Parquet, so "
                                   "the next report reads only changed files (default: none)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.faces and not args.checkpoint:
        parser.error("--faces needs --checkpoint (the faces are encoded with that model)")
    if not 0 <= args.min_catch_accuracy <= 1:
        parser.error(f"--min-catch-accuracy {args.min_catch_accuracy}: must be in [0, 1]")
    if args.bootstrap < 1:
        parser.error(f"--bootstrap {args.bootstrap}: must be >= 1")
    if args.precision is not None and not 0 < args.precision < 180:
        parser.error(f"--precision {args.precision}: give degrees in (0, 180)")
    from analysis.study_report import build_report  # pandas, matplotlib, torch: after parsing

    try:
        path = build_report(args.data, args.out, args.checkpoint, args.faces, args.burn_in,
                            args.bootstrap, args.seed, args.min_catch_accuracy, args.cache,
                            args.precision)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
