"""The vectorised simulator: n chains of one emotion answered by a synthetic agent, in lockstep.

`simulate_chains` moves the chains through the same pure functions a lab session uses
(`chain.propose`, `gate.Gate.screen`, `chain.step`, `chain.adapt_kappa`) and returns every step
as arrays (`Trace`); `simulate_gsp_chains` does the same for GSP sliders (`gsp.step`). Nothing
here writes files or touches global random state: every draw comes from the Generator passed in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mcmcp.sampling import chain

if TYPE_CHECKING:
    from mcmcp.agents import Agent
    from mcmcp.sampling.gate import Gate


# A gate that lets almost nothing through would loop for ever; past this many steps per shown
# trial the simulation stops with an error instead.
MAX_STEPS_PER_SHOWN = 1000


class Trace(NamedTuple):
    """Every step of n chains: arrays indexed [t, i], t = the chain's iteration (0-based).

    Entries where `active` is False are padding (the chain had already finished).
    current, proposal (T, n, d); kappa, gate_prob, log_g_current, log_g_proposal, gate_gamma
    (the γ in force), rt (T, n) float (gate fields NaN without a gate, gate_gamma NaN for
    unguided chains, rt NaN when not shown); active, shown (passed the gate),
    right_is_proposal, chose_proposal, accepted (T, n) bool (a chain moves iff the proposal was
    chosen, so accepted is chose_proposal). `final` is the last ChainState.
    """

    current: np.ndarray
    proposal: np.ndarray
    kappa: np.ndarray
    gate_prob: np.ndarray
    log_g_current: np.ndarray
    log_g_proposal: np.ndarray
    gate_gamma: np.ndarray
    active: np.ndarray
    shown: np.ndarray
    right_is_proposal: np.ndarray
    chose_proposal: np.ndarray
    accepted: np.ndarray
    rt: np.ndarray
    final: chain.ChainState

    def samples(self, burn_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(states (T', n, d), valid (T', n)): chain states at iterations >= burn_in (every
        iteration, shown or screened out, is one MCMC sample)."""
        return self.current[burn_in:], self.active[burn_in:]

    def chains(self, which: slice) -> Trace:
        """The trace of the chains `which` only (a block's chains of a joint simulation)."""
        fields = {k: getattr(self, k)[:, which] for k in self._fields if k != "final"}
        final = chain.ChainState(*(np.asarray(f)[which] for f in self.final))
        return Trace(**fields, final=final)


class ByChain:
    """One density made of several: rows `groups[k]` (an index array or slice into the chains)
    are scored by densities[k]; `logpdf(x)` takes every chain's row, in chain order. It lets one
    gate screen the chains of several emotions at once."""

    def __init__(self, densities: list, groups: list) -> None:
        self.densities, self.groups = densities, groups

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for density, rows in zip(self.densities, self.groups, strict=True):
            out[rows] = density.logpdf(x[rows])
        return out


GATE_FIELDS = ("gate_prob", "log_g_current", "log_g_proposal", "gate_gamma")


def _record_gate(rec: dict[str, list], screen, guided: np.ndarray) -> None:
    """Append one step's gate fields (a GateResult) to `rec`; control chains get γ NaN."""
    rec["gate_prob"].append(screen.prob)
    rec["log_g_current"].append(screen.log_g_current)
    rec["log_g_proposal"].append(screen.log_g_proposal)
    rec["gate_gamma"].append(np.where(guided, screen.gamma, np.nan))


def _stack(rec: dict[str, list]) -> dict[str, np.ndarray]:
    """The recorded steps as (T, n) arrays; without a gate the gate fields are all NaN (a
    broadcast view, not T x n copies)."""
    out = {k: np.stack(v) for k, v in rec.items() if v}
    for key in GATE_FIELDS:
        out.setdefault(key, np.broadcast_to(np.nan, out["rt"].shape))
    return out


def simulate_chains(
    start: np.ndarray,
    n_shown: int,
    kappa_proposal: float | np.ndarray,
    agent: Agent,
    emotion: str | np.ndarray,
    gate: Gate | None,
    rng: np.random.Generator,
    adapt: tuple[float, int] | None = None,
    identity: np.ndarray | None = None,
    guided: np.ndarray | None = None,
) -> Trace:
    """Run n chains from `start` (n, d) until each has had `n_shown` trials shown to `agent`.

    emotion: the chains' target emotion, or (n,) names (chains of several blocks at once; give
    them a gate over `ByChain` densities). kappa_proposal: scalar or (n,); adapt: (target
    acceptance, burn_in iterations) for Robbins-Monro tuning of kappa during burn-in, or None.
    Gate-screened proposals are steps too (the chain stays) but are not shown; an annealed
    gate's γ follows each chain's shown trials so far over `n_shown` (as in the engine).
    guided: (n,) bool, the chains the gate screens (None: all; the others are unguided control
    chains). Sides are randomised here, 50/50 per trial. identity: (n,) the child each chain
    shows (for agents that judge pixels), None: the model's default.
    """
    state = chain.init(start, kappa_proposal)
    n = len(start)
    n_done = np.zeros(n, dtype=np.int64)
    log_g = gate.density.logpdf(state.position) if gate is not None else None
    nan = np.full(n, np.nan)
    guided = np.ones(n, dtype=bool) if guided is None else np.asarray(guided, dtype=bool)
    rec: dict[str, list] = {k: [] for k in Trace._fields if k not in ("accepted", "final")}
    while True:
        active = n_done < n_shown
        if not active.any():
            break
        if len(rec["active"]) > MAX_STEPS_PER_SHOWN * n_shown:
            raise RuntimeError(
                f"{', '.join(dict.fromkeys(np.atleast_1d(emotion).tolist()))}: after "
                f"{len(rec['active'])} steps {int(active.sum())} chain(s) still "
                f"lack {n_shown} shown trials: the gate passes almost nothing (gamma "
                f"{gate.gamma if gate else None}); lower gate.gamma or chains.kappa_proposal"
            )
        proposal = chain.propose(state, rng)
        if gate is None:
            shown, screen = active, None
        else:
            screen = gate.screen(state.position, proposal, rng, log_g, n_done / n_shown)
            shown = active & (screen.passed | ~guided)
        right_is_prop = rng.random(n) < 0.5
        chose = np.zeros(n, dtype=bool)
        rt = nan.copy()
        if shown.any():
            idx = slice(None) if shown.all() else np.flatnonzero(shown)
            cur, prop, rip = state.position[idx], proposal[idx], right_is_prop[idx]
            m = rip[:, None]
            answer = agent.choose(emotion if isinstance(emotion, str) else emotion[idx],
                                  np.where(m, cur, prop), np.where(m, prop, cur), rng,
                                  identity=None if identity is None else identity[idx])
            chose[idx] = answer.chose_right == rip
            rt[idx] = answer.rt
        new = chain.step(state, proposal, chose)
        if adapt is not None:
            new = chain.adapt_kappa(new, chose, adapt[0], adapt[1])
        if not active.all():  # finished chains stay exactly as they were
            new = chain.ChainState(
                np.where(active[:, None], new.position, state.position),
                np.where(active, new.iteration, state.iteration),
                np.where(active, new.n_accepted, state.n_accepted),
                np.where(active, new.kappa, state.kappa),
            )
        rec["current"].append(state.position)
        rec["proposal"].append(proposal)
        rec["kappa"].append(state.kappa)
        rec["active"].append(active)
        rec["shown"].append(shown)
        rec["right_is_proposal"].append(right_is_prop)
        rec["chose_proposal"].append(chose)
        rec["rt"].append(rt)
        if screen is not None:
            _record_gate(rec, screen, guided)
            log_g = np.where(chose, screen.log_g_proposal, log_g)
        n_done += shown
        state = new
    out = _stack(rec)
    return Trace(**out, accepted=out["chose_proposal"], final=state)


def simulate_gsp_chains(
    start: np.ndarray,
    n_shown: int,
    points: int,
    agent: Agent,
    emotion: str | np.ndarray,
    gate: Gate | None,
    rng: np.random.Generator,
    identity: np.ndarray | None = None,
    guided: np.ndarray | None = None,
) -> tuple[Trace, dict]:
    """Run n GSP chains from `start` (n, d) for `n_shown` slider trials each (`mcmcp.sampling.gsp`).
    identity: (n,) the child each chain shows (for agents that judge images), None: default.
    guided: (n,) bool, the chains whose moves the gate screens (None: all; the others are
    control chains); an annealed gate's γ follows the chain's trials so far over `n_shown`.

    Every trial is shown and is one step: `proposal` is the confirmed point, `accepted` says the
    chain moved there (False for point 0, x itself, or a move the gate refused). Returns the
    trace (kappa NaN: GSP has no proposal concentration) and the slider's own arrays, indexed
    [t, i] like the trace: direction (T, n, d), gsp_shift, gsp_start, gsp_choice (T, n) int.
    """
    from mcmcp.sampling import gsp

    state = chain.init(start, np.nan)
    n = len(start)
    log_g = gate.density.logpdf(state.position) if gate is not None else None
    guided = np.ones(n, bool) if guided is None else np.asarray(guided, bool)
    rec: dict[str, list] = {k: [] for k in ("current", "proposal", "rt", *GATE_FIELDS)}
    extra: dict[str, list] = {k: [] for k in ("direction", "gsp_shift", "gsp_start",
                                              "gsp_choice")}
    rows = np.arange(n)
    accepted = []
    for t in range(n_shown):
        circle = gsp.draw_circle(state.position, points, rng)
        answer = agent.slide(emotion, circle.points, circle.start, circle.shift, rng, identity)
        chosen = circle.points[rows, answer.choice]
        moved = np.ones(n, bool)
        if gate is not None:
            res = gate.screen(state.position, chosen, rng, log_g, t / n_shown)
            moved = res.passed | ~guided
            _record_gate(rec, res, guided)
            log_g = np.where(moved, res.log_g_proposal, log_g)
        new = gsp.step(state, circle.points, answer.choice, moved)
        rec["current"].append(state.position)
        rec["proposal"].append(chosen)
        rec["rt"].append(answer.rt)
        accepted.append(moved & (answer.choice != 0))
        for key, value in zip(extra, (circle.direction, circle.shift, circle.start,
                                      answer.choice), strict=True):
            extra[key].append(value)
        state = new
    out = _stack(rec)
    shape = (n_shown, n)
    ones, zeros = np.ones(shape, bool), np.zeros(shape, bool)
    trace = Trace(**out, kappa=np.full(shape, np.nan), active=ones, shown=ones,
                  right_is_proposal=zeros, chose_proposal=ones, accepted=np.stack(accepted),
                  final=state)
    return trace, {k: np.stack(v) for k, v in extra.items()}
