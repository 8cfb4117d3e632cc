"""The face VAE, top to bottom: config, encoder, decoder, classifier head, loss.

`SphereVAE` puts every face on the unit sphere S^(d-1) (d = `latent_dim`, the ambient
dimension): the encoder gives a unit direction mu, the posterior is vMF(mu, kappa) with kappa
FIXED (the study used 300), and the prior is uniform on the sphere, so no region of the sphere is
favoured and every direction decodes to a face. `GaussianVAE` is the usual baseline with the same
encoder and decoder, a Euclidean latent and an N(0, I) prior that pulls codes towards the origin.

Loss (per image, averaged over the batch):
    reconstruction  binary cross-entropy summed over pixels. Pixels live in [0, 1] and the
                    face images are mostly near-black background and near-white skin, where
                    BCE keeps a useful gradient (MSE's vanishes through the sigmoid); summing over
                    pixels keeps its scale right relative to the KL term (one image, one
                    likelihood), as in the study and the s-vae reference.
  + KL(q(z|x) || prior)  for fixed kappa a constant (it does not depend on mu); reported anyway.
  + class_weight * cross-entropy of the classifier head's LOGITS on z (the label pulls faces of
                    one emotion together on the sphere).

This module never reads files; checkpoints live in `vae.checkpoint`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vae.distributions import HypersphericalUniform, VonMisesFisher

PRIORS = ("vmf", "gaussian")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (saved with every checkpoint).

    image_size: (height, width) in pixels, both divisible by 4 (two 2x2 poolings).
    latent_dim: d, the ambient dimension of the code (3: sphere, 2: ring).
    prior: "vmf" (uniform prior on S^(d-1), vMF posterior) or "gaussian" (N(0, I) baseline).
    kappa: the fixed vMF posterior concentration (vmf only); larger = codes sampled closer to mu.
    radius: the unit code is multiplied by this before the decoder and classifier see it (the
        study's ring used radius 2); it changes the network's input scale, never the sphere.
    n_classes: classifier outputs (the seven emotions).
    hidden: width of the encoder's dense layer and the classifier's hidden layer.
    channels: (first, second) conv widths of the encoder; the decoder mirrors them.
    class_weight: weight of the classifier's cross-entropy in the loss.
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

    def __post_init__(self) -> None:
        # tuples may arrive as lists from YAML or a checkpoint
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        h, w = self.image_size
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
        if self.class_weight < 0:
            problems.append(f"class_weight={self.class_weight} (need >= 0)")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """Plain dict (lists for tuples): YAML-, JSON- and torch.load(weights_only)-safe."""
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        out["channels"] = list(self.channels)
        return out


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


class Decoder(nn.Module):
    """(n, d) -> (n, 1, H, W) in [0, 1]: a dense layer and three transposed convs."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c1, c2 = config.channels
        h, w = config.image_size
        self.shape = (c2, h // 4, w // 4)
        self.dense = nn.Sequential(nn.Linear(config.latent_dim, c2 * (h // 4) * (w // 4)), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, c1, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 3, padding=1),
        )

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid pixel values (n, 1, H, W); the loss uses these for a stable BCE."""
        return self.deconv(self.dense(z).view(-1, *self.shape))


class _FaceVAE(nn.Module):
    """What both VAEs share: encoder trunk, decoder, classifier head and the loss."""

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

    def _net_input(self, z: torch.Tensor) -> torch.Tensor:
        """The code as the decoder and classifier see it."""
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (n, d) -> images (n, 1, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder.logits(self._net_input(z)))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (n, d) -> emotion logits (n, n_classes) (softmax them for probabilities)."""
        return self.classifier(self._net_input(z))

    def loss(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[Losses, VAEOutput]:
        """x (n, 1, H, W) in [0, 1], labels (n,) int64 -> (Losses, VAEOutput)."""
        out, recon_logits = self._forward(x, generator)
        recon = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none")
        recon = recon.flatten(1).sum(1).mean()
        kl = out.kl.mean()
        ce = F.cross_entropy(out.logits, labels)
        total = recon + kl + self.config.class_weight * ce
        return Losses(total, recon, kl, ce), out

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """x (n, 1, H, W) in [0, 1] -> VAEOutput (z sampled from the posterior)."""
        return self._forward(x, generator)[0]

    def _forward(self, x, generator):
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

    def _forward(self, x, generator):
        mu = self.encode(x)
        q = self.posterior(mu)
        z = q.rsample(generator=generator)
        prior = HypersphericalUniform(self.config.latent_dim, dtype=mu.dtype, device=mu.device)
        kl = torch.distributions.kl_divergence(q, prior)
        recon_logits = self.decoder.logits(self._net_input(z))
        recon = torch.sigmoid(recon_logits)
        return VAEOutput(recon, mu, z, self.classify(z), kl), recon_logits


class GaussianVAE(_FaceVAE):
    """Baseline: Euclidean latent R^d, q = N(mean, diag(exp(logvar))), prior N(0, I)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.to_mean = nn.Linear(config.hidden, config.latent_dim)
        self.to_logvar = nn.Linear(config.hidden, config.latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (n, 1, H, W) -> posterior means (n, d) (not normalised)."""
        return self.to_mean(self.encoder(x))

    def _forward(self, x, generator):
        h = self.encoder(x)
        mean, logvar = self.to_mean(h), self.to_logvar(h)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        z = mean + torch.exp(0.5 * logvar) * eps
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        recon_logits = self.decoder.logits(z)
        recon = torch.sigmoid(recon_logits)
        return VAEOutput(recon, mean, z, self.classify(z), kl), recon_logits


def build_model(config: ModelConfig, seed: int = 0) -> SphereVAE | GaussianVAE:
    """The network named by `config.prior`, initialised from `seed` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SphereVAE(config) if config.prior == "vmf" else GaussianVAE(config)
