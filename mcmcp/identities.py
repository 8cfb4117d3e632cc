"""Which child a trial shows: the YAML's `stimuli.identity`, resolved once per session.

An identity model (`vae.model`, `kind: identity`) draws every face as one child's face with the
expression that the code on the sphere gives. A participant-session shows one child at a time:
- no `stimuli.identity`: the checkpoint's default child (`loaded.default_identity`);
- `assign: fixed`: the one child listed, for everyone;
- `assign: participant`: one child per participant, drawn from the list with the participant's
  own IDENTITY stream (the same child in every session of that participant);
- `assign: rotated`: one child per participant by the number the id ends in (P001 the first,
  P002 the second, ...), like `block_order: rotated`;
- `assign: chain`: the children take turns across the chains: chain c shows child c mod k.
  Catch and practice trials take turns in their block in the same way (the j-th catch trial of
  a block shows child j mod k), so the rule needs no random draw; a repeat trial shows its
  chain's child. A pair always shows one child.
Plain models take no identity: their rows carry an empty `identity`.

`Assignment` is the pure rule (engine and simulator call the same one); `open_identities`
checks the ids against the face store and computes each child's identity code once from its
reference face (`vae.identity`), with the sha256 of that face for session.json.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from mcmcp.config import ConfigError
from mcmcp.sampling.seeds import participant_number, stream_rng
from mcmcp.specs import ExperimentConfig

IDENTITY_STREAM = 5  # stream tag (mcmcp.engine's tags are 0..4): a participant's child


@dataclass(frozen=True)
class Assignment:
    """The children of one participant-session, in turn: one, unless `assign: chain`."""

    ids: tuple[str, ...] = ("",)

    def chain(self, chain_id: int | np.ndarray):
        """The child of chain `chain_id` (the engine's chain ids, b * per_emotion + i); an
        int array gives an object array."""
        if isinstance(chain_id, np.ndarray):
            return np.array(self.ids, dtype=object)[chain_id % len(self.ids)]
        return self.ids[int(chain_id) % len(self.ids)]

    def extra(self, j: int | np.ndarray):
        """The child of the j-th (0-based) catch or practice trial of a block."""
        return self.chain(j)

    def record(self) -> dict:
        """What session.json keeps of it (`identity.children`)."""
        return {"children": list(self.ids)}


def assignment(cfg: ExperimentConfig, participant: str, default: str) -> Assignment:
    """The children `participant` sees under `cfg.stimuli` (see the module doc).

    default: the checkpoint's default child ("" for a plain model). ValueError for `rotated`
    with an id that does not end in a number.
    """
    spec = cfg.stimuli
    ids = spec.identity
    if not ids:
        return Assignment((default,))
    if spec.assign == "chain":
        return Assignment(ids)
    if spec.assign == "participant":
        rng = stream_rng(cfg.seed, participant, 0, IDENTITY_STREAM, 0)
        return Assignment((ids[int(rng.integers(len(ids)))],))
    if spec.assign == "rotated":
        n = participant_number(participant)
        if n is None:
            raise ValueError(
                f"stimuli.assign rotated counterbalances children by the number a participant "
                f"id ends in; {participant!r} has none (use ids such as P001, P002, ...)")
        return Assignment((ids[(n - 1) % len(ids)],))
    return Assignment(ids[:1])


def face_sha256(face: np.ndarray) -> str:
    """sha256 of a reference face as (H, W) uint8 pixels (a [0, 1] float face is rounded)."""
    face = np.asarray(face)
    if face.dtype != np.uint8:
        face = np.rint(np.clip(face, 0.0, 1.0) * 255.0).astype(np.uint8)
    return hashlib.sha256(np.ascontiguousarray(face).tobytes()).hexdigest()


@dataclass(frozen=True)
class Identities:
    """The children a session (or simulation, or report) may show, resolved.

    default: the checkpoint's default child ("" for plain models); codes: child id ->
    identity code (k,) float32 tensor (empty for plain models); references: child id -> sha256
    of its reference face (`face_sha256`).
    """

    default: str = ""
    codes: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)

    def stack(self, ids) -> torch.Tensor | None:
        """(n, k) identity codes of n child ids ("" = the default), None for a plain model."""
        if not self.codes:
            return None
        return torch.stack([self.codes[i or self.default] for i in ids])

    def record(self) -> dict:
        """What session.json keeps (`identity.default`, `identity.reference_sha256`)."""
        return {"default": self.default, "reference_sha256": dict(self.references)}


def reference_codes(loaded, faceset, ids) -> Identities:
    """Identity codes of the children `ids` from their reference faces in `faceset`, plus the
    checkpoint's default child (from the face stored in the checkpoint). Plain models: empty.

    ValueError (from `vae.identity.reference_index`) for an id that is not in the face set or
    has no neutral face.
    """
    model = loaded.model
    if loaded.config.kind != "identity":
        return Identities()
    from vae.identity import reference_face, reference_images

    ids = list(dict.fromkeys(i for i in ids if i))
    with torch.no_grad():
        default_ref = model.default_reference
        codes = {loaded.default_identity: model.identity_code(default_ref)[0]}
        references = {loaded.default_identity: face_sha256(default_ref[0, 0].numpy())}
        if ids:
            made = model.identity_code(torch.from_numpy(reference_images(faceset, ids)))
            for i, code in zip(ids, made, strict=True):
                codes[i] = code
                references[i] = face_sha256(reference_face(faceset, i))
    return Identities(loaded.default_identity, codes, references)


def open_identities(cfg: ExperimentConfig, loaded, faceset, file="<config>") -> Identities:
    """The session's children, checked at the edge: every `stimuli.identity` id must be in the
    face store (`faceset`, None when the config lists none) with a neutral reference face, and
    the store's faces must have the model's size. ConfigError naming the key otherwise.
    (A plain checkpoint with `stimuli.identity` is refused by `config.open_model`.)"""
    ids = cfg.stimuli.identity
    if not ids or loaded.config.kind != "identity":
        return reference_codes(loaded, None, ())
    size = tuple(faceset.images.shape[1:])
    if size != tuple(loaded.config.image_size):
        raise ConfigError(file, "model.faces", str(cfg.model.faces),
                          f"a face store of {loaded.config.image_size[0]}x"
                          f"{loaded.config.image_size[1]} faces (the checkpoint's size) to draw "
                          f"stimuli.identity children from; this one has {size[0]}x{size[1]}")
    known = set(np.asarray(faceset.identities).astype(str))
    for k, child in enumerate(ids):
        key = "stimuli.identity" if len(ids) == 1 else f"stimuli.identity[{k}]"
        if child not in known:
            some = ", ".join(sorted(known)[:4])
            raise ConfigError(file, key, child, f"an identity of the face store "
                              f"{cfg.model.faces} ({len(known)} children, e.g. {some})")
        try:
            from vae.identity import reference_index

            reference_index(faceset, child)
        except ValueError as err:
            raise ConfigError(file, key, child, f"a child with a neutral reference face ({err})"
                              ) from None
    return reference_codes(loaded, faceset, ids)
