"""Faces decoded by the participant's browser (`online.faces: browser`): what its decoder reads.

With `online.faces: server` (the default) each view carries the PNGs of the faces the page has
not got, decoded by the server: about half of a server process's CPU time per answer
(docs/deploy.md). With `browser` a view carries each face's child and code instead, and the
page's decoder (web/decoder.js, in a Web Worker) computes the same network's pixels from the
model's decoder weights (`decoder_bundle`, fetched once per page) and each child's reference
face and its features (`child_bundle`, once per child): the server decodes nothing.

The browser computes in float64 and rounds every stored map to float32, as torch stores them;
its 8-bit pixels equal the server's PNGs but for float rounding (a pixel in a few thousand off
by one grey level; tests/online/test_web_faces.py measures it in Chromium). The decoders it can
run are the resize + conv ones (`upsample: nearest` or `bilinear`: plain, identity `skip` and
`warp`); the seed study's transposed decoder is refused at start (`browser_decodable`).

Tensors travel as {"shape": [...], "data": base64 of little-endian float32}.
"""

from __future__ import annotations

import base64

import numpy as np
import torch

from vae.model import REFERENCE_EPS

FORMAT = 1  # the bundle's layout; web/decoder.js refuses another


def browser_decodable(model) -> str | None:
    """None if the page's decoder can draw this model's faces, else why not (for an error)."""
    if model.config.upsample == "transposed":
        return ("its decoder is the seed study's transposed one (upsample: transposed), which "
                "the browser's decoder does not run")
    return None


def decoder_bundle(model) -> dict:
    """The decoder of `model` (a VAE from vae.checkpoint) as the page's decoder reads it: its
    layout and weights (with `templates`, the pictures (k, H, W), the gain layer and the mix
    layer or, with `templates_mix: vmf`, the bumps' centres (k, d) and log kappas (k,); with
    `templates_fine`, their flow's conv; `still_reference` says the last stage also reads the
    reference unmoved). The dense and FiLM layers keep only the
    code's columns: a skip decoder's pose-change columns multiply zeros when faces are drawn
    (no target pose)."""
    config, decoder = model.config, model.decoder
    d = config.latent_dim
    radius = float(model._net_input(torch.ones(1, d, dtype=torch.float32))[0, 0])
    kind = ("plain" if config.kind != "identity" else
            "warp" if config.decoder == "warp" else "skip")
    layers = {"dense": decoder.dense[0], "stage4": decoder.stage4, "stage2": decoder.stage2,
              "stage1": decoder.stage1, "out": decoder.out}
    if kind != "plain":
        layers["film"] = decoder.film
    if kind == "warp":
        layers["flow"] = decoder.flow
    if decoder.templated:
        layers["gain"] = decoder.gain
        if not decoder.local:
            layers["mix"] = decoder.mix
    if decoder.fine:
        layers["template_flow"] = decoder.template_flow
    tensors = {}
    for name, layer in layers.items():
        weight = layer.weight.detach()
        if name in ("dense", "film"):
            weight = weight[:, :d]
        tensors[f"{name}.weight"] = _tensor(weight)
        tensors[f"{name}.bias"] = _tensor(layer.bias.detach())
    if decoder.templated:
        tensors["templates"] = _tensor(decoder.templates.detach())
        if decoder.local:
            tensors["centres"] = _tensor(decoder.centres.detach())
            tensors["log_kappa"] = _tensor(decoder.log_kappa.detach())
    return {"format": FORMAT, "kind": kind, "latent_dim": d, "radius": radius,
            "image_size": list(config.image_size), "shape": list(decoder.shape),
            "upsample": config.upsample, "widths": list(getattr(decoder, "widths", [])),
            "max_shift": float(getattr(decoder, "max_shift", 0.0)),
            "templates": config.templates, "templates_fine": config.templates_fine,
            "templates_mix": config.templates_mix, "still_reference": config.still_reference,
            "eps": REFERENCE_EPS,
            "tensors": tensors}


def child_bundle(model, identity: torch.Tensor | None) -> dict:
    """One child's inputs to the decoder: the reference face (1, H, W) in [0, 1] and its
    features at 1/2 and 1/4 resolution (a, H/2, W/2), (b, H/4, W/4) (`reference_maps`, what
    `decode(z, identity)` reads of the child); identity: the child's (k,) or (1, k) code, None: the
    model's default child. Plain models have no child: empty tensors."""
    if model.config.kind != "identity":
        return {"format": FORMAT, "tensors": {}}
    with torch.no_grad():
        reference, half, quarter = model.reference_maps(identity)
    return {"format": FORMAT, "tensors": {"reference": _tensor(reference[0]),
                                          "half": _tensor(half[0]),
                                          "quarter": _tensor(quarter[0])}}


def _tensor(t: torch.Tensor) -> dict:
    """A float32 tensor as {"shape", "data": base64 of its little-endian bytes}, C order."""
    array = np.ascontiguousarray(t.detach().cpu().numpy(), dtype="<f4")
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}
