"""CLI: build the one HDF5 face store from any source, or describe one.

    python -m vae.data build --source synthetic --out data/faces.h5 [--n-identities 160]
    python -m vae.data build --source cafe --images DIR --spreadsheet FILE --out data/cafe.h5
    python -m vae.data build --source fer2013 --csv fer2013.csv --out data/fer.h5
    python -m vae.data build --source folder --root DIR --out data/mine.h5
    python -m vae.data build --source folder --root PHOTOS --align --out data/mine.h5
    python -m vae.data build --source manifest --csv manifest.csv --out data/mine.h5
    python -m vae.data info data/faces.h5

--align (cafe, folder, manifest) finds and frames the face in each photograph (`vae.align`),
leaves out photos without one, and writes two contact sheets beside the store:
<out>-kept.png (every face kept) and <out>-rejected.png (every photo left out, and why).
A store is never overwritten: an existing --out is an error unless --reuse is given, which
checks the existing store (readable, same source, same size) and uses it as it is.
The readers (h5py, torch, PIL) are imported after the command line is parsed: --help is instant.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vae.faceset import FaceSet

# Flags each source needs, and flags it can use; anything else given is an error.
_NEEDS = {
    "synthetic": (),
    "cafe": ("images", "spreadsheet"),
    "fer2013": ("csv",),
    "folder": ("root",),
    "manifest": ("csv",),
}
_OPTIONAL = {"synthetic": ("seed", "n_identities"), "cafe": ("align",), "folder": ("align",),
             "manifest": ("align",)}
_SPECIFIC = ("images", "spreadsheet", "csv", "root", "seed", "n_identities", "align")


def _size(text: str) -> tuple[int, int]:
    """'64x40' -> (64, 40): height x width in pixels."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must be HEIGHTxWIDTH in pixels, e.g. 64x64, got {text!r}"
        ) from None
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8 pixels, got {text!r}")
    return height, width


def ensure_store(path: Path, image_size: tuple[int, int]) -> None:
    """Build the default procedural face store at `path` when it does not exist."""
    if path.exists():
        return
    from vae.procedural.faces import generate_faces
    from vae.store import write_store

    print(f"{path} not found: building the default synthetic face store ({image_size[0]}x"
          f"{image_size[1]})", file=sys.stderr)
    write_store(generate_faces(n_identities=160, poses_per_emotion=2, size=image_size, seed=0), path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vae.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build a face store from one source")
    build.add_argument("--source", required=True, choices=sorted(_NEEDS),
                       help="where the faces come from (required; no default)")
    build.add_argument("--out", required=True, type=Path,
                       help="the new .h5 store (required; never overwritten)")
    build.add_argument("--images", type=Path,
                       help="cafe: folder of numbered images (default: none)")
    build.add_argument("--spreadsheet", type=Path,
                       help="cafe: stimulus spreadsheet, CSV or XLSX (default: none)")
    build.add_argument("--csv", type=Path,
                       help="fer2013: fer2013.csv; manifest: manifest CSV (default: none)")
    build.add_argument("--root", type=Path,
                       help="folder: root with one sub-folder per emotion (default: none)")
    build.add_argument(
        "--size", type=_size, help="HEIGHTxWIDTH (default: 64x40 for cafe, 64x64 otherwise)"
    )
    build.add_argument("--seed", type=int, help="synthetic: generator seed (default 0)")
    build.add_argument(
        "--n-identities", type=int, help="synthetic: number of generated people (default 160)"
    )
    build.add_argument(
        "--align", action="store_true", default=None,
        help="cafe, folder, manifest: detect, align and crop the face in each photo, leave out "
             "photos without one, write <out>-kept.png and <out>-rejected.png (default: the "
             "images are already cropped faces)"
    )
    build.add_argument("--contact-sheet", type=Path,
                       help="also save a contact sheet PNG here (default: none)")
    build.add_argument(
        "--reuse", action="store_true",
        help="if --out exists, check it and use it as it is (default: refuse an existing --out)"
    )

    info = commands.add_parser("info", help="describe a face store")
    info.add_argument("store", type=Path, help="the .h5 store to describe (required)")
    return parser


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    missing = [name for name in _NEEDS[args.source] if getattr(args, name) is None]
    if missing:
        parser.error(f"--source {args.source} needs {_flags(missing)}")
    allowed = _NEEDS[args.source] + _OPTIONAL.get(args.source, ())
    extra = [n for n in _SPECIFIC if getattr(args, n) is not None and n not in allowed]
    if extra:
        parser.error(f"{_flags(extra)} not used by --source {args.source}")
    if args.n_identities is not None and args.n_identities < 1:
        parser.error(f"--n-identities must be at least 1, got {args.n_identities}")


def _flags(names: list[str]) -> str:
    return " and ".join("--" + n.replace("_", "-") for n in names)


def _load(args: argparse.Namespace) -> FaceSet:
    from vae.sources import read_cafe, read_fer2013, read_folder, read_manifest

    size = {} if args.size is None else {"size": args.size}
    align = {"align": True} if args.align else {}
    if args.source == "synthetic":
        from vae.procedural.faces import generate_faces  # only this source needs the generator

        return generate_faces(
            n_identities=160 if args.n_identities is None else args.n_identities,
            seed=0 if args.seed is None else args.seed,
            **size,
        )
    if args.source == "cafe":
        return read_cafe(args.images, args.spreadsheet, **size, **align)
    if args.source == "fer2013":
        return read_fer2013(args.csv, **size)
    if args.source == "folder":
        return read_folder(args.root, **size, **align)
    return read_manifest(args.csv, **size, **align)


def _reuse(args: argparse.Namespace) -> FaceSet:
    from vae.store import read_store

    faceset = read_store(args.out)
    if faceset.source != args.source:
        raise ValueError(
            f"--reuse: {args.out} holds source {faceset.source!r}, not {args.source!r}; "
            f"delete it or choose another --out"
        )
    if args.size is not None and faceset.image_size != args.size:
        raise ValueError(
            f"--reuse: {args.out} holds {faceset.image_size[0]}x{faceset.image_size[1]} "
            f"images, not {args.size[0]}x{args.size[1]}; delete it or choose another --out"
        )
    if bool(args.align) != ("rejected" in faceset.attrs):
        raise ValueError(
            f"--reuse: {args.out} was built {'with' if 'rejected' in faceset.attrs else 'without'}"
            f" --align; delete it or choose another --out"
        )
    if args.seed is not None and faceset.attrs.get("seed") != args.seed:
        raise ValueError(
            f"--reuse: {args.out} was made with seed {faceset.attrs.get('seed')}, not {args.seed}; "
            f"delete it or choose another --out"
        )
    if faceset.source == "synthetic":
        from vae.procedural.faces import GENERATOR_VERSION

        made_by = faceset.attrs.get("generator_version")
        if made_by != GENERATOR_VERSION:
            raise ValueError(
                f"--reuse: {args.out} was drawn by generator {made_by!r}, but this code draws "
                f"{GENERATOR_VERSION!r} (the faces the committed model was trained on); move it "
                f"aside (e.g. mv {args.out} {args.out.with_name(args.out.stem + '-' + str(made_by))}"
                f"{args.out.suffix}) and build again"
            )
    n_ids = len(set(faceset.identities.tolist()))
    if args.n_identities is not None and n_ids != args.n_identities:
        raise ValueError(
            f"--reuse: {args.out} holds {n_ids} identities, not {args.n_identities}; "
            f"delete it or choose another --out"
        )
    return faceset


def build(args: argparse.Namespace) -> None:
    from vae.store import store_hash, write_store

    if args.out.exists() and args.reuse:
        faceset = _reuse(args)
        print(f"reusing {args.out}: {_summary(faceset)}")
    else:
        if args.out.exists():
            raise FileExistsError(
                f"{args.out} already exists and is never overwritten; delete it, choose "
                f"another --out, or pass --reuse to use it as it is"
            )
        start = time.perf_counter()
        faceset = _load(args)
        seconds = time.perf_counter() - start
        write_store(faceset, args.out)
        print(f"built {args.out} from {args.source} in {seconds:.1f} s: {_summary(faceset)}")
    print(f"sha256 {store_hash(args.out)}")
    if args.align:
        from vae.align_sheets import rejected, save_align_sheets

        kept, rejects = save_align_sheets(faceset, args.out)
        by_box = int((faceset.ground_truth["align_method"] == "box").sum())
        print(f"aligned {len(faceset)} faces ({len(faceset) - by_box} by the eyes, {by_box} by "
              f"the box rule), rejected {len(rejected(faceset))} photos: see {kept} and {rejects}")
        if by_box:
            print(f"check the {by_box} faces framed by the box rule (black frames in {kept}): "
                  f"their eyes were not found; delete any that is not a frontal face and build "
                  f"again")
        from vae.identity import children_without_neutral

        lost = children_without_neutral(faceset)
        if lost:
            print(f"{len(lost)} children have no neutral face left ({', '.join(lost[:10])}"
                  f"{', ...' if len(lost) > 10 else ''}): the identity model draws each child "
                  f"from its neutral face, so training would refuse them; replace their "
                  f"neutral photo (see {rejects}) or remove the child")
    if args.contact_sheet is not None:
        from vae.contact_sheet import save_contact_sheet  # only imported when asked for

        save_contact_sheet(faceset, args.contact_sheet)
        print(f"contact sheet {args.contact_sheet}")


def _summary(faceset: FaceSet) -> str:
    height, width = faceset.image_size
    n_ids = len(set(faceset.identities.tolist()))
    return f"{len(faceset)} images {height}x{width}, {n_ids} identities"


def info(path: Path) -> None:
    from vae.store import read_store, store_hash

    faceset = read_store(path)
    counts = Counter(faceset.labels.tolist())
    rows = [
        ("store", path),
        ("source", faceset.source),
        ("images", _summary(faceset)),
        ("sha256", store_hash(path)),
        *sorted(faceset.attrs.items()),
        *((f"truth:{k}", f"{v.dtype} {v.shape}") for k, v in sorted(faceset.ground_truth.items())),
        ("emotion", "images"),
        *((name, counts.get(i, 0)) for i, name in enumerate(faceset.label_names)),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "build":
        _check_flags(parser, args)
    try:
        if args.command == "build":
            build(args)
        else:
            info(args.store)
    except (OSError, ValueError) as err:  # data errors already name the file
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
