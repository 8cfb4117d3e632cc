"""The MCMCP chain step as pure functions: `init`, `propose`, `step`, `adapt_kappa`.

A person at the screen, a synthetic agent, a test and a benchmark all move chains through these
same functions (blackjax-style: state in, new state out; no I/O, no global RNG). What the chain
*is* lives in `ChainState`; what *happened* in a step (sides, response, RT) is the caller's row.

Shapes: every function works on one chain (position (d,)) and on many at once (position (n, d)).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit

from mcmcp.sampling.sphere import sample_vmf


class ChainState(NamedTuple):
    """State of one or many chains on S^(d-1).

    position: (..., d) unit vectors, the current states.
    iteration: (...) int, steps taken so far (every proposal is a step, shown or screened out).
    n_accepted: (...) int, steps that moved the chain.
    kappa: (...) float, the concentration of the vMF random-walk proposal in use.
    """

    position: np.ndarray
    iteration: np.ndarray
    n_accepted: np.ndarray
    kappa: np.ndarray


def init(position: np.ndarray, kappa_proposal: float | np.ndarray) -> ChainState:
    """Chains at the given start points (..., d), with no steps taken."""
    position = np.asarray(position, dtype=float)
    batch = position.shape[:-1]
    return ChainState(
        position=position,
        iteration=np.zeros(batch, dtype=np.int64),
        n_accepted=np.zeros(batch, dtype=np.int64),
        kappa=np.broadcast_to(np.asarray(kappa_proposal, dtype=float), batch).copy(),
    )


def propose(state: ChainState, rng: np.random.Generator) -> np.ndarray:
    """Proposals x' ~ vMF(x, kappa) for every chain, shape of `state.position`.

    The vMF random walk is symmetric (q(x'|x) = q(x|x')), so Barker acceptance on the target
    alone is a valid MCMC step.
    """
    pos = state.position
    flat = sample_vmf(pos.reshape(-1, pos.shape[-1]), state.kappa.reshape(-1), rng)
    return flat.reshape(pos.shape)


def step(state: ChainState, proposal: np.ndarray, chose_proposal: np.ndarray | bool) -> ChainState:
    """The chain after one step: it moves to `proposal` where `chose_proposal` is True."""
    accepted = np.asarray(chose_proposal, dtype=bool)
    return ChainState(
        position=np.where(accepted[..., None], proposal, state.position),
        iteration=state.iteration + 1,
        n_accepted=state.n_accepted + accepted,
        kappa=state.kappa,
    )


def barker_probability(log_current: np.ndarray, log_proposal: np.ndarray) -> np.ndarray:
    """Barker / Luce choice probability of the proposal: p' / (p + p'), from log densities."""
    return expit(np.asarray(log_proposal) - np.asarray(log_current))


def adapt_kappa(
    state: ChainState,
    accepted: np.ndarray | bool,
    target: float,
    burn_in: int,
    rate: float = 1.0,
) -> ChainState:
    """Robbins-Monro update of log kappa toward a target acceptance rate, during burn-in only.

    Call after `step` with that step's acceptance. Accepting more often than `target` means the
    steps are too small, so kappa (the proposal's concentration) goes down, and vice versa.
    Chains whose iteration is past `burn_in` keep their kappa: adapting forever would break
    detailed balance, so adaptation is frozen at iteration `burn_in` (recorded in every row's
    `kappa_proposal`, constant from then on).
    """
    live = state.iteration <= burn_in
    gain = rate / np.sqrt(np.maximum(state.iteration, 1))
    log_k = np.log(state.kappa) - gain * (np.asarray(accepted, dtype=float) - target)
    kappa = np.where(live, np.clip(np.exp(log_k), 1e-2, 1e5), state.kappa)
    return state._replace(kappa=kappa)
