"""One simulated participant's session laid out as trial-schema columns (see `mcmcp.schema`).

`mcmcp.sim.chains.simulate_chains` returns every step of a block's chains as arrays; `block_columns`
turns a block into the rows a lab session would have written, in file order: the chains'
trials interleaved in a random order, each chain's gate rows right before the shown trial they
preceded, catch trials mixed in. `session_columns` stacks the blocks and numbers the rows
(participant, row, trial, onset on a simulated session clock). Everything is column arrays, so a
participant of 10,000 rows is laid out and formatted (`schema.format_columns`) in milliseconds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from mcmcp.schema import direction_columns, latent_columns

SESSION = 1
FIXATION = 0.5  # seconds between a response and the next onset in the simulated session clock


class Block(NamedTuple):
    """One emotion block of one participant: the trace of its chains (mcmcp.sim.chains.Trace, chains
    0..C-1 of the block), the gate's initial exponent (None without a gate; the γ in force at
    each step is the trace's gate_gamma) and the participant's children
    (`mcmcp.identities.Assignment`; None: no `identity` column is written)."""

    emotion: str
    trace: object
    gate_gamma: float | None
    children: object = None


def n_catch_trials(catch_rate: float, n_chains: int, n_shown: int) -> int:
    """Catch trials per block: that share of all shown trials of the block."""
    return round(catch_rate * n_chains * n_shown / (1.0 - catch_rate))


def _event_order(trace, n_shown: int, n_catch: int, rng: np.random.Generator):
    """The block's events in file order: (is_catch (R,) bool, t (R,), i (R,)) where a step
    event is iteration t of chain i and a catch event is catch trial t (i = 0).

    Shown trials take slots 0..C*n_shown+n_catch-1 in a random interleaving of the chains; a
    chain's gate rows share the slot of the shown trial that follows them (ties by iteration).
    """
    n_chains = trace.active.shape[1]
    episode = np.cumsum(trace.shown, axis=0) - trace.shown  # shown trials before step t, (T, C)
    total = n_chains * n_shown + n_catch
    is_catch_slot = np.zeros(total, dtype=bool)
    is_catch_slot[rng.choice(total, n_catch, replace=False)] = True
    chain_slots = np.flatnonzero(~is_catch_slot)
    order = rng.permutation(np.repeat(np.arange(n_chains), n_shown))
    slot_of = chain_slots[np.argsort(order, kind="stable").reshape(n_chains, n_shown)]
    t, i = np.nonzero(trace.active)
    keys = np.concatenate([slot_of[i, episode[t, i]], np.flatnonzero(is_catch_slot)])
    ties = np.concatenate([t, np.zeros(n_catch, dtype=np.int64)])
    perm = np.lexsort((ties, keys))
    is_catch = np.concatenate([np.zeros(len(t), bool), np.ones(n_catch, bool)])[perm]
    ref_t = np.concatenate([t, np.arange(n_catch)])[perm]
    ref_i = np.concatenate([i, np.zeros(n_catch, dtype=np.int64)])[perm]
    return is_catch, ref_t, ref_i


def block_columns(block: Block, b: int, n_shown: int, agent, catch_rate: float,
                  centroids: dict[str, np.ndarray] | None, rng: np.random.Generator,
                  slider: dict | None = None) -> dict:
    """Columns (name -> array, one entry per row, file order) of block `b` of one participant.

    Catch trials (n_catch_trials per block; target = the emotion's centroid, foil = another
    emotion's, answered by `agent`) are mixed in when `centroids` has the emotion and another
    one. rng: the block's layout stream (interleaving, catch positions, foils, catch answers).
    Children (`block.children`): chain c shows its chain's child, the j-th catch trial of the
    block the j-th in turn, as in a lab session (`mcmcp.engine`).
    slider: a GSP block's slider arrays (`mcmcp.sim.chains.simulate_gsp_chains`: direction (T, C, d),
    gsp_shift, gsp_start, gsp_choice (T, C)); its rows have no sides or response.
    """
    tr = block.trace
    n_chains, d = tr.active.shape[1], tr.current.shape[-1]
    foils = [] if centroids is None or block.emotion not in centroids else [
        e for e in centroids if e != block.emotion]
    n_catch = n_catch_trials(catch_rate, n_chains, n_shown) if foils else 0
    is_catch, t, i = _event_order(tr, n_shown, n_catch, rng)
    n = len(is_catch)
    step = ~is_catch
    shown = np.zeros(n, bool)
    shown[step] = tr.shown[t[step], i[step]]
    cur, prop = np.empty((n, d)), np.empty((n, d))
    cur[step], prop[step] = tr.current[t[step], i[step]], tr.proposal[t[step], i[step]]
    kind = np.where(is_catch, "catch", np.where(shown, "chain", "gate")).astype(object)
    right_is_prop = np.zeros(n, bool)
    right_is_prop[step] = tr.right_is_proposal[t[step], i[step]]
    chose = np.zeros(n, bool)
    chose[step] = tr.chose_proposal[t[step], i[step]]
    rt = np.full(n, np.nan)
    rt[shown] = tr.rt[t[shown], i[shown]]
    # roles and responses of chain trials; catch trials overwrite theirs below
    left = np.where(right_is_prop, "current", "proposal").astype(object)
    right = np.where(right_is_prop, "proposal", "current").astype(object)
    response = np.where(chose == right_is_prop, "right", "left").astype(object)
    left[~shown], right[~shown], response[~shown] = None, None, None
    correct = pd.array(np.zeros(n, bool), dtype="boolean")
    correct[:] = pd.NA
    foil_emotion = np.full(n, None, dtype=object)
    if n_catch:
        target = np.repeat(centroids[block.emotion][None, :], n_catch, axis=0)
        foil_names = [foils[k] for k in rng.integers(len(foils), size=n_catch)]
        foil = np.array([centroids[e] for e in foil_names])
        right_is_target = rng.random(n_catch) < 0.5
        m = right_is_target[:, None]
        catch_children = (None if block.children is None
                          else block.children.extra(np.arange(n_catch)))
        answer = agent.choose(block.emotion, np.where(m, foil, target), np.where(m, target, foil),
                              rng, identity=catch_children)
        rows = np.empty(n_catch, dtype=np.int64)  # catch trial j sits at row rows[j]
        rows[t[is_catch]] = np.flatnonzero(is_catch)
        cur[rows], prop[rows] = target, foil
        left[rows] = np.where(right_is_target, "foil", "target")
        right[rows] = np.where(right_is_target, "target", "foil")
        response[rows] = np.where(answer.chose_right, "right", "left")
        correct[rows] = answer.chose_right == right_is_target
        foil_emotion[rows] = foil_names
        rt[rows] = answer.rt
    chain = pd.array(np.where(step, b * n_chains + i, 0), dtype="Int64")
    chain[is_catch] = pd.NA
    iteration = pd.array(t, dtype="Int64")
    iteration[is_catch] = pd.NA
    accepted = pd.array(np.zeros(n, bool), dtype="boolean")
    accepted[step] = tr.accepted[t[step], i[step]]
    accepted[is_catch] = pd.NA
    chose_col = pd.array(chose, dtype="boolean")
    chose_col[~shown] = pd.NA
    kappa = np.full(n, np.nan)
    kappa[step] = tr.kappa[t[step], i[step]]
    cols = {
        "block": np.full(n, b), "emotion": block.emotion, "kind": kind, "chain": chain,
        "iteration": iteration,
        **dict(zip(latent_columns("current", d), cur.T, strict=True)),
        **dict(zip(latent_columns("proposal", d), prop.T, strict=True)),
        "kappa_proposal": kappa, "left_role": left, "right_role": right, "response": response,
        "chose_proposal": chose_col, "accepted": accepted, "correct": correct,
        "foil_emotion": foil_emotion, "rt": rt,
    }
    if block.children is not None:
        identity = np.empty(n, dtype=object)
        identity[step] = block.children.chain(b * n_chains + i[step])
        identity[is_catch] = block.children.extra(t[is_catch])
        cols["identity"] = np.where(identity == "", None, identity)
    if slider is not None:
        _slider_columns(cols, slider, t, i, step)
    if block.gate_gamma is not None:
        # the γ in force at each step (annealed gates); NaN: a control chain, which has no gate
        # columns at all (it never saw the gate)
        gamma = np.full(n, np.nan)
        gamma[step] = tr.gate_gamma[t[step], i[step]]
        guided = ~np.isnan(gamma)
        for name, field in (("log_gate_current", tr.log_g_current),
                            ("log_gate_proposal", tr.log_g_proposal), ("gate_prob", tr.gate_prob)):
            values = np.full(n, np.nan)
            values[guided] = field[t[guided], i[guided]]
            cols[name] = values
        cols["gate_gamma"] = gamma
    return cols


def _slider_columns(cols: dict, slider: dict, t: np.ndarray, i: np.ndarray,
                    step: np.ndarray) -> None:
    """GSP rows: the slider's columns in place of sides and response (see block_columns)."""
    n = len(step)
    for name in ("left_role", "right_role", "response"):
        cols[name] = np.full(n, None, dtype=object)
    cols["chose_proposal"] = pd.array([pd.NA] * n, dtype="boolean")
    for name in ("gsp_shift", "gsp_start", "gsp_choice"):
        values = pd.array(np.zeros(n, dtype=np.int64), dtype="Int64")
        values[step] = slider[name][t[step], i[step]]
        values[~step] = pd.NA
        cols[name] = values
    direction = np.full((n, slider["direction"].shape[-1]), np.nan)
    direction[step] = slider["direction"][t[step], i[step]]
    cols.update(zip(direction_columns(direction.shape[1]), direction.T, strict=True))


def session_columns(blocks: list[dict], participant: str, agent_name: str,
                    timestamp: str) -> tuple[dict, int]:
    """The blocks' columns stacked into one session, numbered: (columns, number of rows).

    Adds participant, session, row, trial (1-based count of shown rows; empty for gate rows),
    onset and gap on the simulated session clock (each shown trial starts FIXATION s after the
    previous response), agent and timestamp.
    """
    n_rows = [len(c["kind"]) for c in blocks]
    n = sum(n_rows)
    cols: dict = {}
    for name in dict.fromkeys(k for c in blocks for k in c):
        parts = []
        for c, k in zip(blocks, n_rows, strict=True):
            value = c.get(name, np.full(k, np.nan))
            parts.append(np.full(k, value, dtype=object) if isinstance(value, str) else value)
        cols[name] = (pd.concat([pd.Series(p) for p in parts], ignore_index=True).array
                      if any(isinstance(p, pd.api.extensions.ExtensionArray) for p in parts)
                      else np.concatenate(parts))
    shown = cols["kind"] != "gate"
    trial = pd.array(np.cumsum(shown), dtype="Int64")
    trial[~shown] = pd.NA
    # onset of shown trial k = sum of (FIXATION + rt) of the shown trials before it, + FIXATION,
    # accumulated in time order exactly as a running clock would
    clock = np.cumsum(np.column_stack([np.full(shown.sum(), FIXATION),
                                       cols["rt"][shown]]).ravel())
    onset = np.full(n, np.nan)
    onset[shown] = clock[0::2]
    cols.update(participant=participant, session=SESSION, row=np.arange(n), trial=trial,
                onset=onset, gap=np.where(shown, FIXATION, np.nan), agent=agent_name,
                timestamp=timestamp)
    return cols, n
