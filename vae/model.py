"""The face VAE, top to bottom: config, encoders, decoder, classifier head, loss.

`SphereVAE` puts every face on the unit sphere S^(d-1) (d = `latent_dim`, the ambient
dimension): the encoder gives a unit direction mu, the posterior is vMF(mu, kappa) with kappa
FIXED (the study used 300), and the prior is uniform on the sphere, so no region of the sphere is
favoured and every direction decodes to a face. `GaussianVAE` is the usual baseline with the same
encoder and decoder, a Euclidean latent and an N(0, I) prior that pulls codes towards the origin.

Two kinds of network (`ModelConfig.kind`):
  identity (default)  the sphere carries the EXPRESSION only. An identity encoder turns a
                      reference face of the child (its closed-mouth neutral face, see
                      `vae.identity`) into an identity code c; the decoder D(z, c) draws that
                      child with the expression z. c holds the reference image and a pose code
                      (8x8 thumbnail); the decoder sees the reference and its conv features at
                      1/2 and 1/4 resolution (a U-Net-like skip path), so it copies what does not
                      change with expression (hair, head, skin) and z only has to say what
                      changes (brows, eyes, mouth); held-out children work because nothing about
                      an identity is memorised. In training the reference is warped (affine, from
                      the pose change) to each target's pose, so the expression change is learned
                      without a misalignment blur; after training faces keep the reference pose.
                      z also modulates every decoder stage (FiLM), and the decoder's output is a
                      change to the reference's pixel logits, so an untrained decoder already
                      draws the reference face sharply.
                      Without an identity, `decode` draws the checkpoint's default child
                      (`default_reference`, a buffer).
                      `decoder: warp` instead MOVES the reference: z (with the reference's
                      features) gives a coarse flow field that carries the reference face and
                      its features, plus a small priced correction (`Decoder`). Its layers
                      never see the target's pose code: training moves the drawn face as a
                      whole (the same affine pose warp) to the target's pose, so the decoder
                      runs in training exactly as it does when decoding.
  plain               the seed study's network: one code for everything (identity and expression
                      share the sphere), kept to reproduce and compare it. Checkpoints without a
                      `kind` load as plain with `upsample: transposed`.

Decoders upsample with nearest-neighbour (or `upsample: bilinear`) resize + 3x3 conv (no
transposed-conv checkerboard);
`upsample: transposed` rebuilds the seed study's transposed convs (plain only).

Loss (per image, averaged over the batch):
    reconstruction  binary cross-entropy summed over pixels, optionally weighted per pixel
                    (`pixel_weight`, mean 1, see `vae.identity.expression_pixel_weights`: more
                    weight where expression changes the pixels within a child). Pixels live in
                    [0, 1], mostly near-black background and near-white skin, where BCE keeps a
                    useful gradient; summing over pixels keeps its scale right relative to the KL
                    term (one image, one likelihood), as in the study and the s-vae reference.
  + KL(q(z|x) || prior)  for fixed kappa a constant (it does not depend on mu); reported anyway.
  + class_weight * cross-entropy of the classifier head's LOGITS on z (the label pulls faces of
                    one emotion together on the sphere).
  + correction_weight * sum over pixels of |correction| (warp decoders: logits painted over the
                    moved reference).
  + coarse_weight * sum over pixels of (blurred moved reference - blurred target)^2 (warp
                    decoders; grey levels in [0, 1], Gaussian blur of `COARSE_SIGMA` px): the flow
                    alone judged on coarse images, so a feature several pixels from where the
                    target has it still pulls the flow towards it (see `blur`).

This module never reads files; checkpoints live in `vae.checkpoint`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vae.distributions import HypersphericalUniform, VonMisesFisher

PRIORS = ("vmf", "gaussian")
KINDS = ("identity", "plain")
UPSAMPLES = ("nearest", "bilinear", "transposed")
DECODERS = ("skip", "warp")
LEGACY = {"kind": "plain", "upsample": "transposed"}
"""Values of the fields a checkpoint written before they existed was trained with."""
REFERENCE_EPS = 1e-3
"""Reference pixels are clipped to [eps, 1 - eps] before their logit (at most +-6.9)."""
COARSE_SIGMA = 2.0
"""Standard deviation (pixels) of the Gaussian blur under the coarse flow term (`blur`)."""
TEMPLATE_MIXES = ("linear", "vmf")
TEMPLATE_KAPPA = 8.0
"""Starting concentration of `templates_mix: vmf` bumps: a weight of exp(-2.9) = 0.06 at 50
degrees, about the spacing of 16 points on S^2."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (saved with every checkpoint).

    image_size: (height, width) in pixels, both divisible by 4 (two 2x upsamplings).
    latent_dim: d, the ambient dimension of the code (3: sphere, 2: ring).
    prior: "vmf" (uniform prior on S^(d-1), vMF posterior) or "gaussian" (N(0, I) baseline).
    kappa: the fixed vMF posterior concentration (vmf only); larger = codes sampled closer to mu.
    radius: the unit code is multiplied by this before the decoder and classifier see it (the
        study's ring used radius 2); it changes the network's input scale, never the sphere.
    n_classes: classifier outputs (the seven emotions).
    hidden: width of the encoder's dense layer and the classifier's hidden layer.
    channels: (first, second) conv widths of the encoder; the decoder mirrors them.
    class_weight: weight of the classifier's cross-entropy in the loss.
    kind: "identity" (expression on the sphere, identity from a reference face) or "plain".
    upsample: "nearest" or "bilinear" (resize + conv) or "transposed" (the seed study's
        decoder, plain only).
    decoder: how an identity model draws a face from its reference: "skip" (paints a change
        over the reference, in logits) or "warp" (moves the reference's features along a
        coarse flow field, then adds a small penalised correction); see `Decoder`.
    max_shift: warp only, the largest displacement of the flow field, pixels.
    correction_weight: warp only, loss weight per pixel of |correction| (logits): the price
        of painting over the moved reference instead of moving it.
    identity_channels: conv widths of the reference face's features at 1/2 and 1/4 resolution.
    pose_dim: size of the pose code read from an 8x8 thumbnail of a face (identity models):
        it lets training align the reference face to each target's head pose and light.
    coarse_weight: warp only, weight of the coarse flow term: the sum over pixels of the squared
        difference (grey levels in [0, 1]) between the moved reference WITHOUT its correction
        and the target, both blurred (`COARSE_SIGMA`). Bilinear sampling gives the flow a
        gradient only from features within about a pixel of where it reads, so a brow whose
        target lies 3-5 px higher is painted by the correction instead of moved; blurred, the
        difference reaches that far (0: no such term).
    templates: warp only, the number of full-resolution pictures (logits, learnt) the code
        mixes and the flow moves onto each child, scaled per pixel by the decoder's features:
        what no move of the reference can make (an open smile's lip ring and teeth) is then
        drawn sharp, not upsampled from a 1/4-resolution map (0: none).
    templates_fine: the templates are placed by the flow plus a change of at most max_shift / 2
        pixels made at 1/2 resolution from the second stage's features, not by the 1/4-resolution
        flow alone (the reference is still moved by that flow).
    templates_mix: how the code weighs the templates: "linear" (a linear layer of the code, so
        a picture drawn on one side of the sphere is drawn negated on the other) or "vmf" (each
        template has its own point mu_k on the sphere and concentration kappa_k, both learnt,
        and weight exp(kappa_k (u . mu_k - 1)) for the code's direction u: a smile drawn near
        happy's codes only).
    still_reference: warp only, the last stage also sees the reference where it was, not moved:
        where the flow moves a feature by a fraction of a pixel (a catchlight, an iris), the
        correction can then copy it back sharp instead of painting it.
    """

    image_size: tuple[int, int] = (64, 64)
    latent_dim: int = 3
    prior: str = "vmf"
    kappa: float = 300.0
    radius: float = 1.0
    n_classes: int = 7
    hidden: int = 64
    channels: tuple[int, int] = (16, 32)
    class_weight: float = 100.0
    kind: str = "identity"
    upsample: str = "nearest"
    identity_channels: tuple[int, int] = (8, 16)
    pose_dim: int = 6
    decoder: str = "skip"
    max_shift: float = 4.0
    correction_weight: float = 0.002
    coarse_weight: float = 0.0
    templates: int = 0
    templates_fine: bool = False
    templates_mix: str = "linear"
    still_reference: bool = False

    def __post_init__(self) -> None:
        # tuples may arrive as lists from YAML or a checkpoint
        for name in ("image_size", "channels", "identity_channels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        h, w = self.image_size if len(self.image_size) == 2 else (0, 0)
        problems = []
        if len(self.image_size) != 2 or h % 4 or w % 4 or h < 8 or w < 8:
            problems.append(f"image_size={self.image_size} (need (h, w), both >= 8, divisible by 4)")
        if self.latent_dim < 2:
            problems.append(f"latent_dim={self.latent_dim} (need >= 2)")
        if self.prior not in PRIORS:
            problems.append(f"prior={self.prior!r} (allowed: {', '.join(PRIORS)})")
        if not self.kappa > 0:
            problems.append(f"kappa={self.kappa} (need > 0)")
        if not self.radius > 0:
            problems.append(f"radius={self.radius} (need > 0)")
        if self.n_classes < 2 or self.hidden < 1 or len(self.channels) != 2:
            problems.append(
                f"n_classes={self.n_classes}, hidden={self.hidden}, channels={self.channels} "
                "(need n_classes >= 2, hidden >= 1, two channel widths)"
            )
        if len(self.identity_channels) != 2 or min(self.identity_channels) < 1:
            problems.append(f"identity_channels={self.identity_channels} (need two widths >= 1)")
        if self.pose_dim < 1:
            problems.append(f"pose_dim={self.pose_dim} (need >= 1)")
        if self.class_weight < 0:
            problems.append(f"class_weight={self.class_weight} (need >= 0)")
        if self.kind not in KINDS:
            problems.append(f"kind={self.kind!r} (allowed: {', '.join(KINDS)})")
        if self.upsample not in UPSAMPLES:
            problems.append(f"upsample={self.upsample!r} (allowed: {', '.join(UPSAMPLES)})")
        elif self.kind == "identity" and self.upsample == "transposed":
            problems.append("upsample='transposed' needs kind='plain' (the identity decoder "
                            "upsamples with nearest or bilinear + conv)")
        if self.decoder not in DECODERS:
            problems.append(f"decoder={self.decoder!r} (allowed: {', '.join(DECODERS)})")
        elif self.decoder == "warp" and self.kind != "identity":
            problems.append("decoder='warp' needs kind='identity' (it moves a reference face)")
        if not self.max_shift > 0 or self.correction_weight < 0:
            problems.append(f"max_shift={self.max_shift}, correction_weight="
                            f"{self.correction_weight} (need max_shift > 0, weight >= 0)")
        if self.still_reference and self.decoder != "warp":
            problems.append("still_reference needs decoder='warp' (only warp decoders move it)")
        if self.coarse_weight < 0:
            problems.append(f"coarse_weight={self.coarse_weight} (need >= 0; 0 turns it off)")
        elif self.coarse_weight and self.decoder != "warp":
            problems.append("coarse_weight needs decoder='warp' (it judges the moved reference)")
        if self.templates < 0:
            problems.append(f"templates={self.templates} (need >= 0; 0 turns them off)")
        elif self.templates and self.decoder != "warp":
            problems.append("templates needs decoder='warp' (the flow moves them onto the child)")
        if self.templates_fine and not self.templates:
            problems.append("templates_fine needs templates > 0 (it places them)")
        if self.templates_mix not in TEMPLATE_MIXES:
            problems.append(f"templates_mix={self.templates_mix!r} (allowed: "
                            f"{', '.join(TEMPLATE_MIXES)})")
        elif self.templates_mix != "linear" and not self.templates:
            problems.append("templates_mix needs templates > 0 (it weighs them)")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """Plain dict (lists for tuples): YAML-, JSON- and torch.load(weights_only)-safe."""
        out = asdict(self)
        for name in ("image_size", "channels", "identity_channels"):
            out[name] = list(getattr(self, name))
        return out

    @property
    def identity_code_size(self) -> int:
        """k, the length of an identity code (0 for plain models)."""
        if self.kind != "identity":
            return 0
        h, w = self.image_size
        return h * w + self.pose_dim


class VAEOutput(NamedTuple):
    """One forward pass over a batch of n images.

    recon: (n, 1, H, W) decoded images in [0, 1] (from the sampled z).
    mu: (n, d) unit directions (vmf) or posterior means (gaussian).
    z: (n, d) the sampled codes (on the sphere for vmf).
    logits: (n, n_classes) classifier logits on z.
    kl: (n,) KL(q(z|x) || prior) per image, nats.
    """

    recon: torch.Tensor
    mu: torch.Tensor
    z: torch.Tensor
    logits: torch.Tensor
    kl: torch.Tensor


class Losses(NamedTuple):
    """Batch means, nats per image; `total` is what is minimised."""

    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    ce: torch.Tensor


class Encoder(nn.Module):
    """(n, 1, H, W) -> (n, hidden): two conv + 2x2 max-pool stages and one dense layer.

    A third 2x2 max-pool before the dense layer cuts its weights fourfold (the dense layer
    would otherwise hold ~90% of the model and triple the checkpoint with Adam's state).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        c1, c2 = config.channels
        h, w = config.image_size
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
            nn.Linear(c2 * -(-h // 8) * -(-w // 8), config.hidden),
        )
        # faces share most pixels, so raw features (hence codes) start almost identical (all
        # codes within a few degrees); centring them across the batch spreads the initial
        # codes over the sphere and lets the classifier separate emotions early
        self.norm = nn.BatchNorm1d(config.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.features(x)))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, batch: int = 256) -> None:
        """Set the batch-norm statistics to their exact values over images x (n, 1, H, W).

        The features have a tiny spread (variance ~1e-3), so the running averages kept during
        training lag the moving weights by a large fraction of a standard deviation and codes
        in eval mode drift away from those seen in training; exact statistics remove that.
        """
        h = torch.cat([self.features(x[i : i + batch]) for i in range(0, len(x), batch)])
        self.norm.running_mean.copy_(h.mean(0))
        self.norm.running_var.copy_(h.var(0))


class IdentityEncoder(nn.Module):
    """Reference faces (n, 1, H, W) -> conv features [(n, a, H/2, W/2), (n, b, H/4, W/4)]: the
    decoder's skip inputs besides the reference itself. No batch norm, so features do not
    depend on the batch or the mode."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        a, b = config.identity_channels
        self.down2 = nn.Sequential(nn.Conv2d(1, a, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.down4 = nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

    def forward(self, reference: torch.Tensor) -> list[torch.Tensor]:
        half = self.down2(reference)
        return [half, self.down4(half)]


class PoseEncoder(nn.Module):
    """Faces (n, 1, H, W) -> pose codes (n, pose_dim) from an 8x8 thumbnail.

    An 8x8 thumbnail shows where the head is, its tilt and size and where the light comes
    from, but hardly the brows or the mouth, so the pose code has little room for expression
    (which must go through the sphere).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(),
                                 nn.Linear(32, config.pose_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(F.adaptive_avg_pool2d(x, (8, 8)))


class Decoder(nn.Module):
    """(n, d) codes [+ the reference's skips] -> (n, 1, H, W) pixel logits [, correction].

    A dense layer makes a (c2, H/4, W/4) map from the code; two 2x upsamplings (nearest or
    bilinear resize) with 3x3 convs follow. For identity models each stage also sees the
    identity's skip map and is FiLM-modulated by the code, and (`decoder`):
      skip  the output is added to the reference face's logits: a change painted over it.
      warp  a flow field (2, H/4, W/4) from the first stage, max_shift * tanh pixels, resized
            bilinearly, moves the reference face and its 1/2-resolution features
            (`grid_sample`); the later stages see the moved ones, and the output is a
            correction added to the moved reference's logits. A feature that moves is then
            carried, not erased and redrawn (no ghost where it was); the loss prices the
            correction (`correction_weight`), so painting is left to what no move can make
            (an open mouth's dark). Flow and correction start at zero: a new network draws
            the reference. The moved reference is also returned: coarse_weight judges it,
            blurred, against the target. With `templates` k > 0 the correction also holds
            k learnt full-size pictures mixed by the code (a linear layer), moved by the same
            flow and scaled per pixel by 1 + a 3x3 conv of the last features: a sharp lip ring
            is then a picture placed on the child, not a map upsampled twice. With
            `templates_fine` the pictures are placed by that flow plus max_shift / 2 * tanh of
            a 3x3 conv of the second stage's features (a change at 1/2 resolution). With
            `still_reference` the last stage sees the reference where it was beside the moved
            one, so the correction can copy back what the flow moved by a fraction of a pixel.
    `upsample: transposed` is the seed study's decoder.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        c1, c2 = config.channels
        h, w = config.image_size
        self.conditioned = config.kind == "identity"
        self.warps = config.decoder == "warp"
        self.templated = config.templates > 0
        self.fine = config.templates_fine
        self.local = config.templates_mix == "vmf"
        # skip decoders of identity models also see the pose change from reference to target
        d = config.latent_dim + (config.pose_dim if self.conditioned and not self.warps else 0)
        self.shape = (c2, h // 4, w // 4)
        self.dense = nn.Sequential(nn.Linear(d, c2 * (h // 4) * (w // 4)), nn.ReLU())
        self.transposed = config.upsample == "transposed"
        if self.transposed:
            self.deconv = nn.Sequential(
                nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(c1, c1, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(c1, 1, 3, padding=1),
            )
            return
        self.mode = config.upsample
        a, b = config.identity_channels if self.conditioned else (0, 0)
        ref = (2 if config.still_reference else 1) if self.conditioned else 0
        self.still = config.still_reference
        self.stage4 = nn.Conv2d(c2 + b, c2, 3, padding=1)  # at 1/4 resolution
        self.stage2 = nn.Conv2d(c2 + a, c1, 3, padding=1)
        self.stage1 = nn.Conv2d(c1 + ref, c1, 3, padding=1)
        self.out = nn.Conv2d(c1, 1, 3, padding=1)
        self.widths = (c2, c1, c1)
        if self.conditioned:
            # per-stage scale and shift of every channel from the code (FiLM)
            self.film = nn.Linear(d, 2 * sum(self.widths))
            # the output is a change to the (moved) reference face, in logits: a new network
            # draws the neutral reference itself, sharp, and learns only what expression changes
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        if self.warps:
            self.max_shift = config.max_shift
            self.flow = nn.Conv2d(c2, 2, 3, padding=1)
            nn.init.zeros_(self.flow.weight)
            nn.init.zeros_(self.flow.bias)
        if self.templated:
            # (k, H, W) pictures in logits, mixed by the code, moved by the flow, scaled per
            # pixel by 1 + gain(features); pictures and gain start at zero
            self.templates = nn.Parameter(torch.zeros(config.templates, h, w))
            if self.local:  # bumps on the sphere: seeded centres, kappa TEMPLATE_KAPPA
                self.centres = nn.Parameter(F.normalize(torch.randn(config.templates, d), dim=1))
                self.log_kappa = nn.Parameter(torch.full((config.templates,),
                                                         math.log(TEMPLATE_KAPPA)))
            else:
                self.mix = nn.Linear(d, config.templates)
            self.gain = nn.Conv2d(c1, 1, 3, padding=1)
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.gain.bias)
            if self.fine:  # the pictures' own finer flow: a change at 1/2 resolution
                self.template_flow = nn.Conv2d(c1, 2, 3, padding=1)
                nn.init.zeros_(self.template_flow.weight)
                nn.init.zeros_(self.template_flow.bias)

    def template_weights(self, z: torch.Tensor) -> torch.Tensor:
        """The code z (n, d) -> each template's weight (n, k) (`templates_mix`)."""
        if not self.local:
            return self.mix(z)
        cosine = F.normalize(z, dim=1) @ F.normalize(self.centres, dim=1).T
        return torch.exp(self.log_kappa.exp() * (cosine - 1.0))

    def flow_field(self, h4: torch.Tensor) -> torch.Tensor:
        """First-stage features (n, c2, H/4, W/4) -> displacements (n, 2, H/4, W/4), pixels of
        the full image, (x, y) = (right, down), each within +-max_shift."""
        return self.max_shift * torch.tanh(self.flow(h4))

    def parts(self, z: torch.Tensor, skips: list[torch.Tensor] | None = None):
        """(logits (n, 1, H, W), charge (n, 1, H, W) or None, moved (n, 1, H, W) or None): the
        pre-sigmoid pixel values (the loss uses these for a stable BCE) and, for warp decoders,
        |correction| per pixel (logits painted over the moved reference; the loss prices its
        sum) and the moved reference itself, in [0, 1] (the coarse flow term).

        z: (n, d) the code as the network sees it (radius applied; skip decoders of identity
        models: with the pose change appended); skips: [reference (n, 1, H, W), its 1/2 and
        1/4 resolution features] (identity models only).
        """
        h = self.dense(z).view(-1, *self.shape)
        if self.transposed:
            return self.deconv(h), None, None
        if self.conditioned:
            ref, half, quarter = skips
            still = ref
            films = torch.split(self.film(z), [2 * c for c in self.widths], dim=1)
        else:
            ref = half = quarter = None
            films = (None, None, None)
        for conv, film, stage in ((self.stage4, films[0], 4), (self.stage2, films[1], 2),
                                  (self.stage1, films[2], 1)):
            if stage < 4:
                h = F.interpolate(h, scale_factor=2.0, mode=self.mode)
            skip = {4: quarter, 2: half, 1: ref}[stage]
            if stage == 1 and self.still:  # the reference where it was, beside the moved one
                skip = torch.cat([ref, still], dim=1)
            h = F.relu(_film(conv(h if skip is None else torch.cat([h, skip], dim=1)), film))
            if stage == 4 and self.warps:  # the later stages see the moved reference
                flow = self.flow_field(h)
                half, ref = warp(half, flow), warp(ref, flow)
            if stage == 2 and self.fine:  # templates_fine needs templates, templates warp
                placed = (F.interpolate(flow, scale_factor=2.0, mode="bilinear")
                          + self.max_shift / 2 * torch.tanh(self.template_flow(h)))
        if not self.conditioned:
            return self.out(h), None, None
        if not self.warps:
            return self.out(h) + torch.logit(ref, eps=REFERENCE_EPS), None, None
        correction = self.out(h)
        if self.templated:
            picture = torch.einsum("nk,khw->nhw", self.template_weights(z),
                                   self.templates)[:, None]
            moved = warp(picture, placed, cell=2) if self.fine else warp(picture, flow)
            correction = correction + (1.0 + self.gain(h)) * moved
        return correction + torch.logit(ref, eps=REFERENCE_EPS), correction.abs(), ref


def _film(h: torch.Tensor, film: torch.Tensor | None) -> torch.Tensor:
    """Feature maps (n, c, h, w) scaled and shifted per channel by film (n, 2c) (None: as is)."""
    if film is None:
        return h
    scale, shift = film[:, :, None, None].chunk(2, dim=1)
    return h * (1.0 + scale) + shift


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Images (n, c, H, W) convolved with a Gaussian of standard deviation sigma pixels (taps
    to 3 sigma, edges repeated), each channel on its own."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).repeat(images.shape[1], 1, 1)  # (c, 1, taps)
    c = images.shape[1]
    rows = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"),
                    kernel[:, :, None, :], groups=c)
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode="replicate"),
                    kernel[:, :, :, None], groups=c)


def warp(maps: torch.Tensor, flow: torch.Tensor, cell: int = 4) -> torch.Tensor:
    """Maps (n, c, h, w) moved by the flow (n, 2, fh, fw), pixels of a (cell fh, cell fw) image.

    The flow is resized bilinearly to (h, w) and rescaled to those maps' pixels; each output
    pixel is read (bilinearly, edges repeated) from where the flow says it came from: output
    at p = input at p - flow(p), so a positive x moves content right. Zero flow returns the
    maps unchanged.
    """
    n, _, h, w = maps.shape
    full = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    # pixels of the full image -> normalised [-1, 1] coordinates (2 / full-image size)
    scale = torch.tensor([2.0 / (cell * flow.shape[3]), 2.0 / (cell * flow.shape[2])],
                         dtype=flow.dtype, device=flow.device)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, dtype=maps.dtype, device=maps.device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, dtype=maps.dtype, device=maps.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2): x, y
    grid = base - full.permute(0, 2, 3, 1) * scale
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


class _FaceVAE(nn.Module):
    """What both VAEs share: encoders, decoder, classifier head and the loss."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.classifier = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.n_classes),
        )
        self.default_identity = ""
        if config.kind == "identity":
            self.identity_encoder = IdentityEncoder(config)
            self.pose_encoder = PoseEncoder(config)
            # affine warp of the reference towards a target's pose: identity at zero pose change
            self.warp = nn.Linear(config.pose_dim, 6, bias=False)
            nn.init.zeros_(self.warp.weight)
            # the child drawn when decode() gets no identity; set by training
            # (`set_default_identity`), saved in the state dict
            self.register_buffer("default_reference", torch.zeros(1, 1, *config.image_size))

    def _net_input(self, z: torch.Tensor) -> torch.Tensor:
        """The code as the decoder and classifier see it."""
        return z

    def identity_code(self, reference: torch.Tensor) -> torch.Tensor:
        """Reference faces (n, 1, H, W) in [0, 1] -> identity codes (n, k) (identity models).

        A code is the reference face's pixels followed by its pose code (k = H*W + pose_dim).
        """
        if self.config.kind != "identity":
            raise ValueError("identity_code needs a model of kind 'identity'; this one is plain")
        return torch.cat([reference.flatten(1), self.pose_encoder(reference)], dim=1)

    def set_default_identity(self, reference: torch.Tensor, identity_id: str) -> None:
        """Make `reference` (H, W) or (1, 1, H, W) in [0, 1] the face decode() draws by default."""
        self.default_reference.copy_(reference.reshape(self.default_reference.shape))
        self.default_identity = str(identity_id)

    def _identity(self, identity: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """Identity codes (n, k) for n codes: checked, broadcast, or the default child's."""
        if self.config.kind != "identity":
            if identity is not None:
                raise ValueError("this model is plain: it takes no identity (got one)")
            return None
        if identity is None:
            identity = self.identity_code(self.default_reference)
        if identity.ndim == 1:
            identity = identity[None]
        k = self.config.identity_code_size
        if identity.shape[-1] != k or identity.shape[0] not in (1, n):
            raise ValueError(f"identity codes must be (k,), (1, k) or (n, k) with k={k}, n={n}; "
                             f"got {tuple(identity.shape)} (make them with identity_code)")
        return identity.expand(n, -1)

    def decode_logits(self, z: torch.Tensor, identity: torch.Tensor | None = None,
                      pose: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (n, d) [+ identity codes, + target pose codes (n, pose_dim)] -> pixel logits.

        pose: training only, the pose of the face being reconstructed; the reference (skip
        decoders) or the drawn face (warp decoders) is then warped from the reference's pose to
        it. Without it the face keeps the reference's pose.
        """
        return self._decode(z, identity, pose)[0]

    def _decode(self, z, identity, pose):
        """(logits, charge or None, moved or None) as `Decoder.parts`, for `decode_logits`'
        arguments (with a target pose and a coarse term, the moved reference is moved to it
        too)."""
        identity = self._identity(identity, len(z))
        if identity is None:
            return self.decoder.parts(self._net_input(z))
        reference, own_pose = self._reference(identity)
        if self.config.decoder == "warp":
            # the decoder's layers see what they see when decoding (the reference and the code);
            # in training the drawn face is then moved, as a whole, to the target's pose
            logits, charge, moved = self.decoder.parts(self._net_input(z), self._skips(reference))
            if pose is not None:
                logits = self._pose_warp(logits, pose - own_pose)
                if self.config.coarse_weight:
                    moved = self._pose_warp(moved, pose - own_pose)
            return logits, charge, moved
        change = torch.zeros_like(own_pose) if pose is None else pose - own_pose
        if pose is not None:
            reference = self._pose_warp(reference, change)
        return self.decoder.parts(torch.cat([self._net_input(z), change], dim=1),
                                  self._skips(reference))

    def reference_maps(self, identity: torch.Tensor | None = None) -> list[torch.Tensor]:
        """One child's maps as the decoder reads them when it draws its faces (no target pose):
        [the reference face (1, 1, H, W) in [0, 1], its features at 1/2 and 1/4 resolution
        (1, a, H/2, W/2) and (1, b, H/4, W/4)]. identity: the child's (k,) or (1, k) code, None:
        the default child. Identity models only."""
        if self.config.kind != "identity":
            raise ValueError("reference_maps needs a model of kind 'identity'; this one is plain")
        reference, _ = self._reference(self._identity(identity, 1))
        return self._skips(reference)

    def _reference(self, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity codes (n, k) -> (reference faces (n, 1, H, W), their pose codes
        (n, pose_dim))."""
        h, w = self.config.image_size
        return identity[:, : h * w].reshape(-1, 1, h, w), identity[:, h * w :]

    def _skips(self, reference: torch.Tensor) -> list[torch.Tensor]:
        """The decoder's skip inputs for reference faces (n, 1, H, W): [the references, their
        1/2 and 1/4 resolution features]."""
        return [reference, *self.identity_encoder(reference)]

    def _pose_warp(self, images: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        """Images or logits (n, 1, H, W) moved by the affine map of a pose change (n, pose_dim)
        (the identity map at zero change; edges repeated)."""
        eye = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=images.dtype,
                           device=images.device)
        theta = (eye + self.warp(change)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, padding_mode="border", align_corners=False)

    def decode(self, z: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (n, d) -> images (n, 1, H, W) in [0, 1].

        identity: identity codes (n, k) or one (k,) for all (from `identity_code`); None = the
        default child (`default_identity`). Plain models take none.
        """
        return torch.sigmoid(self.decode_logits(z, identity))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (n, d) -> emotion logits (n, n_classes) (softmax them for probabilities)."""
        return self.classifier(self._net_input(z))

    def loss(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        reference: torch.Tensor | None = None,
        pixel_weight: torch.Tensor | None = None,
    ) -> tuple[Losses, VAEOutput]:
        """x (n, 1, H, W) in [0, 1], labels (n,) int64 -> (Losses, VAEOutput).

        reference: (n, 1, H, W) each image's reference face (identity models; None = the
        default child); pixel_weight: (H, W) reconstruction weights with mean 1 (None = 1).
        Warp decoders add correction_weight * the summed |correction| to the total, and
        coarse_weight * the summed squared difference of the blurred moved reference and the
        blurred target.
        """
        out, recon_logits, charge, moved = self._forward(x, generator, reference)
        recon = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none")
        if pixel_weight is not None:
            recon = recon * pixel_weight
        recon = recon.flatten(1).sum(1).mean()
        kl = out.kl.mean()
        ce = F.cross_entropy(out.logits, labels)
        total = recon + kl + self.config.class_weight * ce
        if charge is not None:
            total = total + self.config.correction_weight * charge.flatten(1).sum(1).mean()
        if self.config.coarse_weight:
            coarse = (blur(moved, COARSE_SIGMA) - blur(x, COARSE_SIGMA)).square()
            total = total + self.config.coarse_weight * coarse.flatten(1).sum(1).mean()
        return Losses(total, recon, kl, ce), out

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        reference: torch.Tensor | None = None,
    ) -> VAEOutput:
        """x (n, 1, H, W) in [0, 1] -> VAEOutput (z sampled from the posterior)."""
        return self._forward(x, generator, reference)[0]

    def _output(self, x, mu, z, kl, reference):
        """(VAEOutput, reconstruction logits, the correction's charge or None, the moved
        reference or None) for `loss`."""
        if self.config.kind == "identity":
            identity = None if reference is None else self.identity_code(reference)
            recon_logits, charge, moved = self._decode(z, identity, self.pose_encoder(x))
        else:
            recon_logits, charge, moved = self._decode(z, None, None)
        out = VAEOutput(torch.sigmoid(recon_logits), mu, z, self.classify(z), kl)
        return out, recon_logits, charge, moved

    def _forward(self, x, generator, reference):
        raise NotImplementedError


class SphereVAE(_FaceVAE):
    """Hyperspherical VAE: mu on S^(d-1), z ~ vMF(mu, kappa) with fixed kappa, uniform prior."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.to_mu = nn.Linear(config.hidden, config.latent_dim)

    def _net_input(self, z: torch.Tensor) -> torch.Tensor:
        return self.config.radius * z

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (n, 1, H, W) -> unit directions mu (n, d)."""
        return F.normalize(self.to_mu(self.encoder(x)), dim=-1)

    def posterior(self, mu: torch.Tensor) -> VonMisesFisher:
        """vMF(mu, kappa) with the config's fixed kappa, batch shape (n,)."""
        kappa = torch.full(mu.shape[:-1], self.config.kappa, dtype=mu.dtype, device=mu.device)
        return VonMisesFisher(mu, kappa)

    def _forward(self, x, generator, reference):
        mu = self.encode(x)
        q = self.posterior(mu)
        z = q.rsample(generator=generator)
        prior = HypersphericalUniform(self.config.latent_dim, dtype=mu.dtype, device=mu.device)
        kl = torch.distributions.kl_divergence(q, prior)
        return self._output(x, mu, z, kl, reference)


class GaussianVAE(_FaceVAE):
    """Baseline: Euclidean latent R^d, q = N(mean, diag(exp(logvar))), prior N(0, I)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.to_mean = nn.Linear(config.hidden, config.latent_dim)
        self.to_logvar = nn.Linear(config.hidden, config.latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (n, 1, H, W) -> posterior means (n, d) (not normalised)."""
        return self.to_mean(self.encoder(x))

    def _forward(self, x, generator, reference):
        h = self.encoder(x)
        mean, logvar = self.to_mean(h), self.to_logvar(h)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        z = mean + torch.exp(0.5 * logvar) * eps
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        return self._output(x, mean, z, kl, reference)


def build_model(config: ModelConfig, seed: int = 0) -> SphereVAE | GaussianVAE:
    """The network named by `config.prior`, initialised from `seed` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SphereVAE(config) if config.prior == "vmf" else GaussianVAE(config)
