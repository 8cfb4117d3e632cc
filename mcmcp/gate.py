"""The gatekeeper of guided MCMCP: screen each proposal by Barker on g^gamma before anyone sees it.

A proposal x' of a chain at x passes with probability g(x')^γ / (g(x)^γ + g(x')^γ); passed pairs
are shown, screened-out ones are recorded as `gate` rows and the chain stays. The chain then
targets p·g^γ (docs/ARCHITECTURE.md, "Guided MCMCP"); analysis removes g with weights g^-γ.
The lab engine and the vectorised simulator both call `Gate.screen`; it never does I/O.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from mcmcp.chain import barker_probability
from mcmcp.densities import ClassifierDensity, VMFMixture

GATE_KINDS = ("none", "vmf", "mixture", "classifier", "manual")


class Density(Protocol):
    """Anything with a log density (up to a constant) on the sphere."""

    def logpdf(self, x: np.ndarray) -> np.ndarray: ...


class GateResult(NamedTuple):
    """One screening of n proposals: each field has shape (n,)."""

    passed: np.ndarray
    prob: np.ndarray
    log_g_current: np.ndarray
    log_g_proposal: np.ndarray


class Gate:
    """Gatekeeper with density g and exponent gamma > 0."""

    def __init__(self, density: Density, gamma: float) -> None:
        if not gamma > 0:
            raise ValueError(f"gate gamma must be > 0, got {gamma}")
        self.density = density
        self.gamma = float(gamma)

    def screen(
        self,
        current: np.ndarray,
        proposal: np.ndarray,
        rng: np.random.Generator,
        log_g_current: np.ndarray | None = None,
    ) -> GateResult:
        """Screen proposals (n, d) of chains at `current` (n, d).

        log_g_current: log g at `current` if the caller already has it (a chain's current state
        was an earlier proposal, so simulations carry it instead of re-evaluating g).
        """
        if log_g_current is None:
            log_g_current = self.density.logpdf(current)
        log_g_proposal = self.density.logpdf(proposal)
        prob = barker_probability(self.gamma * log_g_current, self.gamma * log_g_proposal)
        return GateResult(rng.random(prob.shape) < prob, prob, log_g_current, log_g_proposal)


def make_gate(
    spec,
    emotion: str,
    densities: dict[str, VMFMixture] | None = None,
    model=None,
) -> Gate | None:
    """The gate of one emotion's chains from a config `GateSpec` (kind, gamma, mean, kappa).

    kind none -> None (unguided); vmf / mixture -> `densities[emotion]`, fitted by the caller with
    `densities.emotion_densities(kind=spec.kind, n_components=spec.components)`; classifier ->
    the VAE's classifier head (`model`, a torch VAE); manual -> vMF(spec.mean, spec.kappa).
    """
    if spec.kind == "none":
        return None
    if spec.kind in ("vmf", "mixture"):
        if densities is None or emotion not in densities:
            raise ValueError(
                f"gate kind {spec.kind!r} needs a density fitted to the {emotion!r} faces; "
                "give a checkpoint and face store (model.checkpoint, model.faces)"
            )
        return Gate(densities[emotion], spec.gamma)
    if spec.kind == "classifier":
        if model is None:
            raise ValueError("gate kind 'classifier' needs a VAE checkpoint (model.checkpoint)")
        return Gate(ClassifierDensity(model, emotion), spec.gamma)
    if spec.kind == "manual":
        if spec.mean is None or spec.kappa is None:
            raise ValueError("gate kind 'manual' needs gate.mean (a d-vector) and gate.kappa")
        return Gate(VMFMixture.single(np.asarray(spec.mean, dtype=float), spec.kappa), spec.gamma)
    raise ValueError(f"gate.kind must be one of {', '.join(GATE_KINDS)}, got {spec.kind!r}")
