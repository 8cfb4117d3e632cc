"""Inference checks per participant and emotion: the verdicts that keep an estimate from being
silently wrong. Tables in, tables out (pandas); the maths lives in modes, cones, deguiding,
lapses and responders.

Which states an estimate may use (`stationary_states`): the post-burn-in states, except in an
annealed chain (one whose gate γ reached 0) every state sampled while γ was still above 0: the
chain was not stationary there, and weighting it would be wrong. Each kept state is sampled from
p itself ("p": no gate, a control chain, or an annealed gate that is off) or from p·g^γ with a
constant γ ("guided": removed with importance weights).

`inference_checks` gives, per participant x emotion (and for the group, participant 'all'):
modes (how many, weights, whether the chains split between them), the weight guard and the
control-chain test for guided chains, the lapse rate from catch and repeat trials with the width
corrected for it, the random-responder test, and `verdict`: every problem in plain words
(empty when there is none). `flag_unvisited_modes` then compares participants.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from analysis import lapses as lp
from analysis.cones import batch_units, kappa_interval, mean_cone
from analysis.deguiding import compare_means, gate_natural_parameter, guard
from analysis.load import DEFAULT_BURN_IN, KEYS, post_burn_in, state_columns
from analysis.modes import chain_shares, chains_split, choose_modes, visited
from analysis.prototypes import angle_deg, deguide_weights, effective_n, fit_vmf
from analysis.responders import choice_dependence
from mcmcp import schema

P_SAMPLED, GUIDED = "p", "guided"
MODE_FIT_STATES = 2000  # states the mixture is fitted to (every k-th: neighbours are near-equal)


def stationary_states(states: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN
                      ) -> pd.DataFrame:
    """The states estimates may use (see the module docstring), with a column `sampler`
    ('p' or 'guided').

    In a chain whose γ changed (an annealed gate), the burn-in lasts at least until the gate
    was off: gate rows pile up while γ is high, so annealing over 40% of the shown trials
    typically ends after 60-90% of the steps, beyond the default burn-in. Warns about chains
    left with no state (their γ never reached 0)."""
    kept = post_burn_in(states, burn_in)
    gamma = states["gate_gamma"].to_numpy(float, na_value=np.nan)
    step = states["step"].to_numpy(int)
    chain = states.groupby(KEYS, sort=False).ngroup().to_numpy()
    n = chain.max() + 1 if len(chain) else 0
    g = np.nan_to_num(gamma, nan=0.0)
    top, low = np.full(n, -np.inf), np.full(n, np.inf)
    np.maximum.at(top, chain, g)
    np.minimum.at(low, chain, g)
    last_on = np.full(n, -1)
    np.maximum.at(last_on, chain, np.where(g > 0, step, -1))
    changed = top > low  # annealed (or changed by hand): only the stretch with γ = 0 is stationary
    k_chain = chain[kept.index.to_numpy()]
    on = changed[k_chain] & (kept["step"].to_numpy(int) <= last_on[k_chain])
    lost = np.setdiff1d(np.flatnonzero(changed & (top > 0)), k_chain[~on])
    if len(lost):
        names = [" ".join(map(str, states.loc[chain == c, KEYS].iloc[0])) for c in lost[:5]]
        warnings.warn(f"{len(lost)} chain(s) ({', '.join(names)}{', ...' if len(lost) > 5 else ''}) "
                      "changed their gate γ and never sampled with the gate off after the burn-in: "
                      "they are left out of the estimates (anneal over fewer trials)", stacklevel=2)
    kept = kept[~on]
    kept_gamma = kept["gate_gamma"].to_numpy(float, na_value=np.nan)
    return kept.assign(sampler=np.where(kept_gamma > 0, GUIDED, P_SAMPLED))


def _modes(x, chain_index, weights, seed) -> dict:
    """Modes of the states; a mode's weight is the (weighted) share of states nearest to it."""
    n_eff = effective_n(x, chain_index)
    step = int(np.ceil(len(x) / MODE_FIT_STATES))
    x, chain_index = x[::step], chain_index[::step]
    weights = None if weights is None else weights[::step]
    fit = choose_modes(x, n_eff, weights, seed=seed)
    shares = chain_shares(fit.labels, chain_index, fit.n_modes, weights)
    w = np.ones(len(x)) if weights is None else weights
    mass = np.bincount(fit.labels, w, fit.n_modes) / w.sum()
    means = fit.mixture.means[fit.modes]
    out = {"n_modes": fit.n_modes, "chains_split": chains_split(shares),
           "mode_weights": "/".join(f"{v:.2f}" for v in mass),
           "modes": [(means[j], float(fit.mixture.kappas[fit.modes[j]]), float(mass[j]))
                     for j in range(fit.n_modes)]}
    for j in range(fit.n_modes):
        out.update({f"mode{j + 1}_{i}": v for i, v in enumerate(means[j])})
    return out


def _lapse_columns(trials: pd.DataFrame, d: int) -> dict:
    """Catch-trial estimate and repeat-trial bound of one participant's lapse rate."""
    catch = trials.loc[trials["kind"] == "catch", "correct"].dropna()
    est = lp.lapse_from_catch(int(catch.sum()), len(catch))
    rep = trials[trials["kind"] == "repeat"]
    if len(rep):
        by_row = trials.set_index(["session", "row"])["chose_proposal"]
        orig = by_row.reindex(list(zip(rep["session"], rep["repeat_of"], strict=True)))
        same = rep["chose_proposal"].to_numpy(dtype=object) == orig.to_numpy(dtype=object)
        bound = lp.lapse_bound_from_repeats(int((~same).sum()), len(rep))
    else:
        bound = lp.lapse_bound_from_repeats(0, 0)
    return {"lapse": est.estimate, "lapse_low": est.low, "lapse_high": est.high,
            "n_catch": est.n, "lapse_repeat_bound": bound.estimate, "n_repeat": bound.n}


def _width(kappa: float, interval: tuple[float, float], lapse: dict, kappa_proposal: float,
           d: int) -> dict:
    """The lapse-corrected concentration, and an interval that takes both the fitted κ's
    interval and the lapse's interval into account (low: low κ at low λ; high: high κ at high
    λ). NaN without a lapse estimate."""
    if not np.isfinite(lapse["lapse"]) or not np.isfinite(kappa_proposal):
        return {"kappa_corrected": np.nan, "kappa_corrected_low": np.nan,
                "kappa_corrected_high": np.nan}
    low, high = interval
    return {"kappa_corrected": lp.corrected_kappa(kappa, lapse["lapse"], kappa_proposal, d),
            "kappa_corrected_low": lp.corrected_kappa(low, lapse["lapse_low"], kappa_proposal, d),
            "kappa_corrected_high": lp.corrected_kappa(high, lapse["lapse_high"],
                                                       kappa_proposal, d)}


def _group_checks(kept: pd.DataFrame, trials: pd.DataFrame, d: int, seed: int,
                  label: dict, person: bool) -> dict:
    xcols = state_columns(d)
    row: dict = {**label}
    words: list[str] = []
    chain_index = kept.groupby(KEYS, sort=True).ngroup().to_numpy()
    p_rows = (kept["sampler"] == P_SAMPLED).to_numpy()
    g_rows = ~p_rows
    controls = p_rows & kept["gate_gamma"].isna().to_numpy() & g_rows.any()
    p_cone = g_cone = None
    if p_rows.any():
        x = kept.loc[p_rows, xcols].to_numpy(float)
        ci = np.unique(chain_index[p_rows], return_inverse=True)[1]
        units = batch_units(ci) if person else kept.loc[p_rows, "participant"].to_numpy()
        p_cone = mean_cone(x, units)
        row["kappa"] = fit_vmf(x)[1]
        row["kappa_low"], row["kappa_high"] = kappa_interval(x, units)
        modes_on = (x, ci, None)
    if g_rows.any():
        g = kept[g_rows]
        x = g[xcols].to_numpy(float)
        ci = np.unique(chain_index[g_rows], return_inverse=True)[1]
        log_g = g["log_gate"].to_numpy(float, na_value=np.nan)
        gamma = g["gate_gamma"].to_numpy(float, na_value=np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # k-hat is the prototypes table's business
            w, _, _ = deguide_weights(log_g, gamma)
        units = batch_units(ci) if person else g["participant"].to_numpy()
        g_cone = mean_cone(x, units, w)
        mu_q, kappa_q = fit_vmf(x)
        eta_g, _ = gate_natural_parameter(x, log_g)
        gd = guard(kappa_q * mu_q, eta_g, float(np.median(gamma)))
        row.update(gate_pull=gd.pull, kappa_implied=gd.kappa_category,
                   gate_offset_deg=gd.gate_offset_deg, weight_ess_expected=gd.ess_fraction,
                   deguided_unreliable=gd.unreliable)
        if gd.unreliable:
            words.append(gd.words())
        if not p_rows.any() or controls.any() and not (p_rows & ~controls).any():
            modes_on = (x, ci, w)
    if controls.any() and g_cone is not None:
        cmp = compare_means(g_cone, p_cone)
        row.update(control_angle_deg=cmp.angle_deg, control_p=cmp.p_value,
                   control_disagrees=cmp.disagree)
        if cmp.disagree:
            words.append(f"the de-guided estimate disagrees with the unguided control chains "
                         f"({cmp.angle_deg:.0f}° apart, p = {cmp.p_value:.2g})")
    cone = p_cone if g_cone is None else g_cone  # guided chains outnumber control chains
    row.update(cone95_deg=cone.cone_deg, **{f"mean_{i}": v for i, v in enumerate(cone.mean)})
    modes = _modes(*modes_on, seed)
    row.update(modes)
    if modes["n_modes"] >= 2:
        apart = angle_deg(modes["modes"][0][0], modes["modes"][1][0])
        text = (f"{'two' if modes['n_modes'] == 2 else modes['n_modes']} modes (weights "
                f"{modes['mode_weights']}, {apart:.0f}° apart): the prototype is not one face")
        if modes["chains_split"]:
            text += ("; the chains sit in different modes, so R-hat measures the split, not too "
                     "few trials, and the mode weights (from chain counts) are unreliable")
        words.append(text)
    shown = trials[trials["kind"] == "chain"]
    random = False
    if person:
        dep = choice_dependence(shown[schema.latent_columns("current", d)].to_numpy(float),
                                shown[schema.latent_columns("proposal", d)].to_numpy(float),
                                shown["chose_proposal"].to_numpy(bool), cone.mean)
        row.update(responder_p=dep.p_value, responder_power=dep.power,
                   responses_random=dep.random)
        random = dep.random
        if random:  # then modes, weights and widths describe noise: say only this
            words = [f"responses do not depend on the faces (p = {dep.p_value:.2g}): there is "
                     "no category to estimate"]
        elif dep.inconclusive:
            words.append("the faces shown in each pair were too alike to tell whether the "
                         "responses depend on them")
    lapse = _lapse_columns(trials, d)
    row.update(lapse)
    if p_rows.any():
        kappa_prop = float(shown["kappa_proposal"].astype(float).median())
        row.update(_width(row["kappa"], (row["kappa_low"], row["kappa_high"]), lapse,
                          kappa_prop, d))
    if np.isfinite(lapse["lapse"]) and lapse["lapse"] > 0 and not random:
            corrected = row.get("kappa_corrected", np.nan)
            text = (f"width is a lower bound (lapse ≈ {lapse['lapse']:.2f} "
                    f"[{lapse['lapse_low']:.2f}, {lapse['lapse_high']:.2f}] from "
                    f"{lapse['n_catch']} catch trials)")
            if not np.isnan(corrected):
                text += (f"; corrected κ ≈ {corrected:.3g} [{row['kappa_corrected_low']:.3g}, "
                         f"{row['kappa_corrected_high']:.3g}]")
            words.append(text)
    row["verdict"] = "; ".join(words)
    return row


def inference_checks(trials: pd.DataFrame, states: pd.DataFrame,
                     burn_in: float | int = DEFAULT_BURN_IN, seed: int = 0,
                     group: bool = True) -> pd.DataFrame:
    """One row per participant x emotion (and, with `group`, per emotion for all participants
    pooled: participant 'all', cones over participants, the lapse rate of everyone's catch
    trials, no responder test). Columns: participant, emotion, mean_0.., cone95_deg (batch
    means), kappa (kappa_low, kappa_high: jackknife 95%), n_modes, mode_weights, chains_split,
    mode<k>_0.. (each mode's mean), guard columns (gate_pull, kappa_implied, gate_offset_deg,
    weight_ess_expected, deguided_unreliable), control columns (control_angle_deg, control_p,
    control_disagrees), responder_p, responder_power, responses_random, lapse columns (lapse, lapse_low,
    lapse_high, n_catch, lapse_repeat_bound, n_repeat, kappa_corrected[_low, _high]) and
    verdict. The modes themselves are in column `modes`: a list of (mean (d,), kappa, weight).
    """
    d = schema.latent_dim(list(trials.columns))
    kept = stationary_states(states, burn_in)
    rows = []
    for (participant, emotion), g in kept.groupby(["participant", "emotion"], sort=True):
        t = trials[(trials["participant"] == participant)
                   & (trials["emotion"] == emotion)]
        rows.append(_group_checks(g, _with_catch(trials, participant, t), d, seed,
                                  {"participant": participant, "emotion": emotion}, True))
    if group:
        people = trials["participant"].isin(kept["participant"].unique())
        for emotion, g in kept.groupby("emotion", sort=True):
            t = trials[people & ((trials["emotion"] == emotion) | (trials["kind"] == "catch"))]
            rows.append(_group_checks(g, t, d, seed, {"participant": "all", "emotion": emotion},
                                      False))
    return pd.DataFrame(rows)


def _with_catch(trials, participant, emotion_trials) -> pd.DataFrame:
    """The emotion's chain and repeat trials plus every catch trial of the participant (a lapse
    rate belongs to the person, not to one block)."""
    catch = trials[(trials["participant"] == participant) & (trials["kind"] == "catch")]
    return pd.concat([emotion_trials[emotion_trials["kind"] != "catch"], catch])


def flag_unvisited_modes(table: pd.DataFrame, states: pd.DataFrame) -> pd.DataFrame:
    """`table` (from `inference_checks`) with `unvisited` words added to the verdict of each
    participant whose chains (any state, burn-in included) never came near a mode another
    participant's chains found for the same emotion."""
    d = sum(c.startswith("x_") for c in states.columns)
    out = table.copy()
    people = out[out["participant"] != "all"]
    for idx, row in people.iterrows():
        if row.get("responses_random") is True:
            continue
        mine = states[(states["participant"] == row["participant"])
                      & (states["emotion"] == row["emotion"])][state_columns(d)].to_numpy(float)
        others = people[(people["emotion"] == row["emotion"])
                        & (people["participant"] != row["participant"])]
        for other in others[others.get("responses_random", False) != True].itertuples():  # noqa: E712
            for centre, kappa, weight in other.modes:
                if visited(mine, centre, kappa) == 0.0:
                    proto = np.array([row[f"mean_{i}"] for i in range(d)])
                    note = (f"participant {other.participant}'s chains found a mode "
                            f"{angle_deg(proto, centre):.0f}° from this prototype (holding "
                            f"{weight:.0%} of their states); these chains never went there")
                    out.at[idx, "verdict"] = "; ".join(v for v in (out.at[idx, "verdict"], note)
                                                       if v)
                    break
            else:
                continue
            break
    return out
