"""The gatekeeper of guided MCMCP: screen each proposal by Barker on g^gamma before anyone sees it.

A proposal x' of a chain at x passes with probability g(x')^γ / (g(x)^γ + g(x')^γ); passed pairs
are shown, screened-out ones are recorded as `gate` rows and the chain stays. The chain then
targets p·g^γ (docs/methods.md, "Guided MCMCP"); analysis removes g with weights g^-γ.
The lab engine and the vectorised simulator both call `Gate.screen`; it never does I/O.

Annealed gate (config `gate.anneal: {until: f}`): γ falls linearly from `gamma` to 0 over the
first fraction f of each chain's shown trials; from then on the gate is off (every proposal is
shown) and the chain samples p itself, so the gate only speeds up burn-in. Every row records
the γ in force (`gate_gamma`), so analysis knows which states sample p.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from mcmcp.sampling.chain import barker_probability
from mcmcp.sampling.densities import ClassifierDensity, VMFMixture

GATE_KINDS = ("none", "vmf", "mixture", "classifier", "manual")


class Density(Protocol):
    """Anything with a log density (up to a constant) on the sphere."""

    def logpdf(self, x: np.ndarray) -> np.ndarray: ...


class GateResult(NamedTuple):
    """One screening of n proposals: each field has shape (n,). gamma: the exponent in force
    (0 where an annealed gate is off: such proposals pass with prob 1)."""

    passed: np.ndarray
    prob: np.ndarray
    log_g_current: np.ndarray
    log_g_proposal: np.ndarray
    gamma: np.ndarray


class Gate:
    """Gatekeeper with density g and exponent gamma > 0.

    anneal_until: None (gamma constant) or a fraction f in (0, 1]: γ falls linearly to 0 over
    the first f of a chain's shown trials (`gamma_at`).
    """

    def __init__(self, density: Density, gamma: float, anneal_until: float | None = None) -> None:
        if not gamma > 0:
            raise ValueError(f"gate gamma must be > 0, got {gamma}")
        if anneal_until is not None and not 0 < anneal_until <= 1:
            raise ValueError(f"gate anneal_until must be in (0, 1], got {anneal_until}")
        self.density = density
        self.gamma = float(gamma)
        self.anneal_until = anneal_until

    def gamma_at(self, progress: np.ndarray | float) -> np.ndarray:
        """γ in force for chains that have had a fraction `progress` (any shape) of their shown
        trials: `gamma` without annealing, else gamma * max(0, 1 - progress / anneal_until)."""
        progress = np.asarray(progress, dtype=float)
        if self.anneal_until is None:
            return np.full(progress.shape, self.gamma)
        return self.gamma * np.clip(1.0 - progress / self.anneal_until, 0.0, 1.0)

    def screen(
        self,
        current: np.ndarray,
        proposal: np.ndarray,
        rng: np.random.Generator,
        log_g_current: np.ndarray | None = None,
        progress: np.ndarray | float = 0.0,
    ) -> GateResult:
        """Screen proposals (n, d) of chains at `current` (n, d).

        log_g_current: log g at `current` if the caller already has it (a chain's current state
        was an earlier proposal, so simulations carry it instead of re-evaluating g).
        progress: each chain's shown trials so far as a fraction of its shown trials (scalar or
        (n,)); only an annealed gate uses it. Where γ is 0 the proposal passes (prob 1): a
        Barker gate on g^0 would pass half of them at random, which only adds idle steps.
        """
        if log_g_current is None:
            log_g_current = self.density.logpdf(current)
        log_g_proposal = self.density.logpdf(proposal)
        gamma = np.broadcast_to(self.gamma_at(progress), np.shape(log_g_proposal))
        off = gamma == 0
        prob = np.where(off, 1.0, barker_probability(gamma * log_g_current,
                                                     gamma * log_g_proposal))
        passed = off | (rng.random(prob.shape) < prob)
        return GateResult(passed, prob, log_g_current, log_g_proposal, gamma)


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
    spec.anneal (None or an object with `until`) sets the annealing schedule.
    """
    if spec.kind == "none":
        return None
    anneal = getattr(spec, "anneal", None)
    until = None if anneal is None else anneal.until
    if spec.kind in ("vmf", "mixture"):
        if densities is None or emotion not in densities:
            raise ValueError(
                f"gate kind {spec.kind!r} needs a density fitted to the {emotion!r} faces; "
                "give a checkpoint and face store (model.checkpoint, model.faces)"
            )
        return Gate(densities[emotion], spec.gamma, until)
    if spec.kind == "classifier":
        if model is None:
            raise ValueError("gate kind 'classifier' needs a VAE checkpoint (model.checkpoint)")
        return Gate(ClassifierDensity(model, emotion), spec.gamma, until)
    if spec.kind == "manual":
        if spec.mean is None or spec.kappa is None:
            raise ValueError("gate kind 'manual' needs gate.mean (a d-vector) and gate.kappa")
        return Gate(VMFMixture.single(np.asarray(spec.mean, dtype=float), spec.kappa),
                    spec.gamma, until)
    raise ValueError(f"gate.kind must be one of {', '.join(GATE_KINDS)}, got {spec.kind!r}")
