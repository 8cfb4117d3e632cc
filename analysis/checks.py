"""Inference checks per participant and emotion: the verdicts that keep an estimate from being
silently wrong. Tables in, tables out (pandas); the maths lives in modes, cones, deguiding,
lapses and responders.

Which states an estimate may use (`stationary_states`): the post-burn-in states, except in an
annealed chain (one whose gate γ reached 0) every state sampled while γ was still above 0: the
chain was not stationary there, and weighting it would be wrong. Each kept state is sampled from
p itself ("p": no gate, a control chain, or an annealed gate that is off) or from p·g^γ with a
constant γ ("guided": removed with importance weights).

`trial_facts` summarises what the checks need from the trial rows (the random-responder test
on the chain trials, catch and repeat counts), one participant or a whole study at a time, so
a report can read a study participant by participant. `inference_checks` then gives, per participant x
emotion (and for the group, participant 'all'): modes (how many, weights, whether the chains
split between them), the weight guard and the control-chain test for guided chains, the lapse
rate with the width corrected for it (`width_note`: the lapse's effect in words), the responder
verdict, and `verdict`: every problem in plain words (empty when there is none).
`flag_unvisited_modes` then compares participants.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from analysis import lapses as lp
from analysis.cones import batch_units, kappa_interval, mcse_cone, mean_cone
from analysis.deguiding import compare_means, gate_natural_parameter, guard
from analysis.groups import between_concentration
from analysis.load import DEFAULT_BURN_IN, KEYS, burn_in_steps, state_columns
from analysis.modes import chain_shares, chains_split, choose_modes, visited
from analysis.prototypes import angle_deg, deguide_weights, effective_n, fit_vmf
from analysis.responders import choice_dependence, min_trials
from analysis.sides import side_bias
from analysis.stationarity import drift
from analysis.verdicts import PRECISION_DEG, cone_trace, judge
from mcmcp import schema

P_SAMPLED, GUIDED = "p", "guided"
MODE_FIT_STATES = 2000  # states the mixture is fitted to (every k-th: neighbours are near-equal)
# fewer kept states than this and the chains are still where they started: separate clusters
# then say nothing about the category's modes (a 16-trial lab demo looked like "two modes")
MIN_MODE_STATES = 50
# the drift check's earlier stretch keeps states sampled with an annealed gate still on where
# the gate pulled at most this share of the category's concentration (benchmarks/bench_checks.py)
WEAK_PULL = 0.5


def stationary_states(states: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN
                      ) -> pd.DataFrame:
    """The states estimates may use (see the module docstring), with a column `sampler`
    ('p' or 'guided').

    In a chain whose γ changed (an annealed gate), the burn-in lasts at least until the gate
    was off: gate rows pile up while γ is high, so annealing over 40% of the shown trials
    typically ends after 60-90% of the steps, beyond the default burn-in. Warns about chains
    left with no state (their γ never reached 0)."""
    step = states["step"].to_numpy(int)
    chain, first, changed, top = _first_kept(states, burn_in)
    keep = step >= first
    lost = np.setdiff1d(np.flatnonzero(changed & (top > 0)), chain[keep])
    if len(lost):
        names = [" ".join(map(str, states.loc[chain == c, KEYS].iloc[0])) for c in lost[:5]]
        warnings.warn(f"{len(lost)} chain(s) ({', '.join(names)}{', ...' if len(lost) > 5 else ''}) "
                      "changed their gate γ and never sampled with the gate off after the burn-in: "
                      "they are left out of the estimates (anneal over fewer trials)", stacklevel=2)
    kept = states[keep]
    kept_gamma = kept["gate_gamma"].to_numpy(float, na_value=np.nan)
    return kept.assign(sampler=np.where(kept_gamma > 0, GUIDED, P_SAMPLED))


def first_kept_step(states: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN
                    ) -> np.ndarray:
    """(n,) for each state of `states`, the first step of its chain that `stationary_states`
    keeps (for figures that draw the discarded part differently)."""
    return _first_kept(states, burn_in)[1]


def _first_kept(states, burn_in):
    """(chain index (n,), first kept step (n,), changed (C,): γ changed, top (C,): largest γ)."""
    step = states["step"].to_numpy(int)
    first = (np.zeros(len(states), int) if float(burn_in) == 0 else
             burn_in_steps(states["n_steps"].to_numpy(int), burn_in) + 1)
    g = np.nan_to_num(states["gate_gamma"].to_numpy(float, na_value=np.nan), nan=0.0)
    chain = states.groupby(KEYS, sort=False).ngroup().to_numpy()
    n = chain.max() + 1 if len(chain) else 0
    top, low = np.full(n, -np.inf), np.full(n, np.inf)
    np.maximum.at(top, chain, g)
    np.minimum.at(low, chain, g)
    last_on = np.full(n, -1)
    np.maximum.at(last_on, chain, np.where(g > 0, step, -1))
    changed = top > low  # annealed (or changed by hand): only the stretch with γ = 0 is stationary
    first = np.where(changed[chain], np.maximum(first, last_on[chain] + 1), first)
    return chain, first, changed, top


def _modes(x, chain_index, weights, seed) -> dict:
    """Modes of the states; a mode's weight is the (weighted) share of states nearest to it.
    Fewer than MIN_MODE_STATES states: n_modes NaN, no modes."""
    if len(x) < MIN_MODE_STATES:
        return {"n_modes": np.nan, "chains_split": False, "mode_weights": "", "modes": []}
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


# the trial columns `trial_facts` reads, besides the current_* and proposal_* coordinates
FACT_INPUTS = ["participant", "session", "row", "emotion", "kind", "chose_proposal", "repeat_of",
               "correct", "kappa_proposal", "response"]
FACT_COLUMNS = ["participant", "emotion", "n_chain_trials", "acceptance", "responder_p",
                "responder_power", "responses_random", "responses_inconclusive", "kappa_proposal",
                "n_catch", "n_catch_correct", "n_repeat", "n_repeat_disagree", "n_sided",
                "n_right"]


def trial_facts(trials: pd.DataFrame) -> pd.DataFrame:
    """What the checks take from trial rows, one row per participant x emotion (FACT_COLUMNS).

    trials: rows with the coordinates, every session of each participant in them (the
    responder test pools a participant's sessions; give it a participant's rows together, never
    one of their sessions alone: facts of two calls do not add up). The responder test runs on
    the emotion's chain trials (its power at the spherical mean of their current states); catch
    counts are the participant's (a lapse belongs to the person, not to one block); a repeat
    disagrees when its chose_proposal differs from the original row's (`repeat_of`); n_sided,
    n_right: the participant's chain and catch trials answered left or right, and those
    answered right (`analysis.sides`; repeats swap an earlier trial's sides, so they are left
    out)."""
    d = schema.latent_dim(list(trials.columns))
    cur, prop = schema.latent_columns("current", d), schema.latent_columns("proposal", d)
    rows = []
    for participant, mine in trials.groupby("participant", sort=True):
        catch = mine.loc[mine["kind"] == "catch", "correct"].dropna()
        response = mine.get("response", pd.Series(pd.NA, index=mine.index, dtype=object))
        response = response[mine["kind"].isin(["chain", "catch"])]
        sided = response.isin(["left", "right"])
        original = mine.set_index(["session", "row"])["chose_proposal"]
        for emotion, block in mine[mine["kind"].isin(["chain", "repeat"])].groupby("emotion"):
            # two-face choices only: a GSP slider row has no chose_proposal (its test would
            # need the whole circle), so a GSP block gets no responder verdict
            shown = block[(block["kind"] == "chain") & block["chose_proposal"].notna()]
            x, y = shown[cur].to_numpy(float), shown[prop].to_numpy(float)
            centre = x.sum(axis=0)
            dep = choice_dependence(x, y, shown["chose_proposal"].to_numpy(bool),
                                    centre / max(np.linalg.norm(centre), 1e-12))
            again = block[block["kind"] == "repeat"]
            first = original.reindex(list(zip(again["session"], again["repeat_of"],
                                               strict=True))).to_numpy(dtype=object)
            rows.append({"participant": participant, "emotion": emotion,
                         "n_chain_trials": dep.n, "acceptance": dep.acceptance,
                         "responder_p": dep.p_value, "responder_power": dep.power,
                         "responses_random": dep.random,
                         "responses_inconclusive": dep.inconclusive,
                         "kappa_proposal": float(shown["kappa_proposal"].astype(float).median()),
                         "n_catch": len(catch), "n_catch_correct": int(catch.sum()),
                         "n_repeat": len(again), "n_sided": int(sided.sum()),
                         "n_right": int((response[sided] == "right").sum()),
                         "n_repeat_disagree": int(np.sum(again["chose_proposal"].to_numpy(
                             dtype=object) != first))})
    return pd.DataFrame(rows, columns=FACT_COLUMNS)


def _lapse(facts: pd.DataFrame, person: bool) -> dict:
    """Catch-trial estimate and repeat-trial bound of the rate of answers that ignore the faces
    (`lapse`: lapses and side presses together, what flattens the chains) of the participants
    in `facts` (rows of `trial_facts`; catch and side counts once per participant); for one
    participant also their side bias (`analysis.sides`) and the random-lapse part
    `lapse_random` = lapse - side bias where the side bias is flagged (else lapse)."""
    people = facts.drop_duplicates("participant")
    est = lp.lapse_from_catch(int(people["n_catch_correct"].sum()), int(people["n_catch"].sum()))
    bound = lp.lapse_bound_from_repeats(int(facts["n_repeat_disagree"].sum()),
                                        int(facts["n_repeat"].sum()))
    out = {"lapse": est.estimate, "lapse_low": est.low, "lapse_high": est.high,
           "n_catch": est.n, "lapse_repeat_bound": bound.estimate, "n_repeat": bound.n}
    if person and "n_sided" in people:
        side = side_bias(int(people["n_right"].fillna(0).sum()),
                         int(people["n_sided"].fillna(0).sum()))
        out.update(side_share_right=side.share_right, side_bias=side.bias,
                   side_bias_low=side.low, side_bias_high=side.high, side=side.side,
                   side_p=side.p_value, side_flagged=side.flagged,
                   # an unflagged ŝ is mostly noise (|2·share - 1| is positive on average)
                   lapse_random=max(est.estimate - side.bias, 0.0) if side.flagged
                   else est.estimate)
    return out


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


def _weights(table: pd.DataFrame) -> np.ndarray | None:
    """De-guiding weights g^-γ (PSIS) of states (None when none was sampled with a gate on)."""
    gamma = table["gate_gamma"].to_numpy(float, na_value=np.nan)
    if not np.nan_to_num(gamma).any():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k-hat is the prototypes table's business
        return deguide_weights(table["log_gate"].to_numpy(float, na_value=np.nan), gamma)[0]


def _drift(kept: pd.DataFrame, before: pd.DataFrame, d: int) -> dict:
    """The stationarity check of one participant x emotion (`analysis.stationarity.drift`) on
    the chains the cone rests on (sampling p, or the guided ones when there is nothing else)."""
    use = kept[kept["sampler"] == P_SAMPLED] if (kept["sampler"] == P_SAMPLED).any() else kept
    keys = use.groupby(KEYS, sort=True).ngroup()
    labels = dict(zip(map(tuple, use[KEYS].to_numpy()), keys.to_numpy(), strict=False))
    before = before[np.array([tuple(k) in labels for k in before[KEYS].to_numpy()], bool)]
    xcols = state_columns(d)
    before = before[before["same_gamma"].to_numpy() | _weak_pull(before, use, xcols)]
    found = drift(use[xcols].to_numpy(float), keys.to_numpy(),
                  _weights(use) if (use["sampler"] == GUIDED).all() else None,
                  before[xcols].to_numpy(float),
                  np.array([labels[tuple(k)] for k in before[KEYS].to_numpy()], int),
                  _weights(before))
    return {"drift_moved": found.moved, "drift_angle_deg": found.angle_deg,
            "drift_p": found.p_value, "drift_where": found.where,
            **{f"early_{i}": v for i, v in enumerate(found.early)},
            **{f"late_{i}": v for i, v in enumerate(found.late)}}


def _weak_pull(before: pd.DataFrame, kept: pd.DataFrame, xcols: list[str]) -> np.ndarray:
    """(len(before),) bool: states sampled while an annealed gate was still on whose pull
    γ·κ_gate was at most WEAK_PULL of the category's concentration (fitted to the kept states):
    there the de-guiding weights g^-γ are tame and the state tells where the person's prototype
    was (a move half-way through a session with an annealed gate happens there). κ_gate is the
    log-linear fit of the recorded log g (`analysis.deguiding.gate_natural_parameter`)."""
    gamma = np.nan_to_num(before["gate_gamma"].to_numpy(float, na_value=np.nan))
    on = ~before["same_gamma"].to_numpy() & (gamma > 0)
    log_g = before["log_gate"].to_numpy(float, na_value=np.nan)
    if on.sum() < 10 or not np.isfinite(log_g[on]).all():
        return np.zeros(len(before), bool)
    eta_g, _ = gate_natural_parameter(before.loc[on, xcols].to_numpy(float), log_g[on])
    kappa = fit_vmf(kept[xcols].to_numpy(float))[1]
    return on & (gamma * np.linalg.norm(eta_g) <= WEAK_PULL * kappa)


def _group_checks(kept: pd.DataFrame, facts: pd.DataFrame, d: int, seed: int,
                  label: dict, person: bool, before: pd.DataFrame | None = None) -> dict:
    """The checks of one participant x emotion (person True; `before`: the states just before
    the kept ones, for the drift check) or of one emotion's group (participants as units)."""
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
        p_cone = mcse_cone(x, ci) if person else mean_cone(x, units)
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
        g_cone = mcse_cone(x, ci, w) if person else mean_cone(x, g["participant"].to_numpy(), w)
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
    row.update(cone95_deg=cone.cone_deg, cone_units=cone.n_units,
               **{f"mean_{i}": v for i, v in enumerate(cone.mean)})
    if person:
        shown = kept.groupby(KEYS, sort=True)["n_shown"].first()
        row["trials_per_chain"] = float(shown.median())
        row.update(_drift(kept, before, d))
    modes = _modes(*modes_on, seed)
    row.update(modes)
    if np.isnan(modes["n_modes"]):
        words.append(f"only {len(modes_on[0])} kept states: too few to look for modes (at "
                     f"least {MIN_MODE_STATES})")
    if modes["n_modes"] >= 2:
        apart = angle_deg(modes["modes"][0][0], modes["modes"][1][0])
        text = (f"{'two' if modes['n_modes'] == 2 else modes['n_modes']} modes (weights "
                f"{modes['mode_weights']}, {apart:.0f}° apart): the prototype is not one face")
        if modes["chains_split"]:
            text += ("; the chains sit in different modes, so R-hat measures the split, not too "
                     "few trials, and the mode weights (from chain counts) are unreliable")
        words.append(text)
    if row.get("drift_moved"):
        stretch = ("the stretch before the kept states and the kept states" if
                   row["drift_where"] == "before" else
                   f"the kept states before and after {row['drift_where'].split()[-1]} of "
                   "each chain")
        words.append(f"the prototype moved by {row['drift_angle_deg']:.0f}° during the session "
                     f"({stretch} differ, p = {row['drift_p']:.2g}); both prototypes are in "
                     "the checks table (early_*, late_*), the estimate describes the later one")
    random = False
    if person and len(facts):
        dep = facts.iloc[0]
        row.update(responder_p=dep["responder_p"], responder_power=dep["responder_power"],
                   responses_random=bool(dep["responses_random"]))
        random = bool(dep["responses_random"])
        if random:  # then modes, weights and widths describe noise: say only this
            words = [f"responses do not depend on the faces (p = {dep['responder_p']:.2g}): "
                     "there is no category to estimate"]
        elif dep["n_chain_trials"] < min_trials(d):
            words.append(f"only {dep['n_chain_trials']} chain trials: too few to test whether the "
                         f"responses depend on the faces (at least {min_trials(d)})")
        elif dep["responses_inconclusive"]:
            words.append("the faces shown in each pair were too alike to tell whether the "
                         "responses depend on them")
    lapse = _lapse(facts, person)
    row.update(lapse)
    if lapse.get("side_flagged") and not random:
        words.append(f"side bias: {lapse['side_share_right']:.0%} of answers were 'right' (a "
                     f"participant following the faces: 50%, p = {lapse['side_p']:.2g}), so "
                     f"about {lapse['side_bias']:.0%} of answers follow the {lapse['side']} "
                     "side, not the faces; the random lapses alone come to about "
                     f"{lapse['lapse_random']:.2f}")
    if p_rows.any() and len(facts):
        row.update(_width(row["kappa"], (row["kappa_low"], row["kappa_high"]), lapse,
                          float(facts["kappa_proposal"].median()), d))
    row["width_note"] = ""
    if np.isfinite(lapse["lapse"]) and lapse["lapse"] == 0 and lapse["lapse_high"] > 0 \
            and not random:
        row["width_note"] = (f"κ is the concentration of the choices; no "
                             f"catch trial missed, but a lapse rate up to "
                             f"{lapse['lapse_high']:.2f} fits {lapse['n_catch']} catch trials "
                             f"(a category κ up to {row.get('kappa_corrected_high', np.nan):.3g}"
                             f" if the Luce exponent is 1)")
    if np.isfinite(lapse["lapse"]) and lapse["lapse"] > 0 and not random:
        corrected = row.get("kappa_corrected", np.nan)
        text = (f"κ is the concentration of the choices, flattened by answers "
                f"that ignore the faces (≈ {lapse['lapse']:.2f} [{lapse['lapse_low']:.2f}, "
                f"{lapse['lapse_high']:.2f}] from {lapse['n_catch']} catch trials)")
        if not np.isnan(corrected):
            text += (f"; the category's κ ≈ {corrected:.3g} [{row['kappa_corrected_low']:.3g}, "
                     f"{row['kappa_corrected_high']:.3g}] if the Luce exponent is 1")
        row["width_note"] = text
    row["verdict"] = "; ".join(words)
    return row


def inference_checks(states: pd.DataFrame, facts: pd.DataFrame,
                     burn_in: float | int = DEFAULT_BURN_IN, seed: int = 0,
                     group: bool = True, leave_out: list | tuple = (),
                     precision: float = PRECISION_DEG) -> pd.DataFrame:
    """One row per participant x emotion (and, with `group`, per emotion for all participants
    pooled: participant 'all', cones over participants, the lapse rate of everyone's catch
    trials, no responder test). Columns: participant, emotion, mean_0.., cone95_deg (batch
    means), kappa (kappa_low, kappa_high: jackknife 95%), n_modes, mode_weights, chains_split,
    mode<k>_0.. (each mode's mean), guard columns (gate_pull, kappa_implied, gate_offset_deg,
    weight_ess_expected, deguided_unreliable), control columns (control_angle_deg, control_p,
    control_disagrees), responder_p, responder_power, responses_random, lapse columns (lapse,
    lapse_low, lapse_high, n_catch, lapse_repeat_bound, n_repeat, kappa_corrected[_low, _high]),
    width_note (what κ measures, and the category's κ where lapses are known, on the named
    assumption of a Luce exponent of 1) and verdict (every
    problem in words). Participants' rows add cone_units (the ESS the cone rests on),
    trials_per_chain (shown), the drift check (drift_moved, drift_angle_deg, drift_p,
    drift_where, early_0.., late_0..: `analysis.stationarity`) and the side-bias check
    (side_share_right, side_bias[_low, _high], side, side_p, side_flagged, lapse_random:
    `analysis.sides`). Every row ends with the headline (`analysis.verdicts.judge` against
    `precision`, degrees): headline (its code), headline_words and needed (trials per chain,
    or participants for the group). The modes themselves are in column `modes`: a list of
    (mean (d,), kappa, weight).

    states: `chain_states` of the study, burn-in included (the drift check looks at the
    stretch before the kept states); facts: `trial_facts` of its trials (the group's rows
    use the facts of the participants whose states are given). leave_out: participants left out
    of the group's rows (e.g. those flagged by their catch trials); they keep their own rows.
    """
    d = len(state_columns_of(states))
    shown = states.groupby(KEYS, sort=False)["shown"].transform("sum").to_numpy()
    states = states.assign(n_shown=shown)
    kept = stationary_states(states, burn_in)
    before = _before(states, burn_in)
    by_person = before.groupby(["participant", "emotion"], sort=False).indices
    rows = []
    for (participant, emotion), g in kept.groupby(["participant", "emotion"], sort=True):
        mine = facts[(facts["participant"] == participant) & (facts["emotion"] == emotion)]
        earlier = before.iloc[by_person.get((participant, emotion), [])]
        row = _group_checks(g, mine, d, seed, {"participant": participant, "emotion": emotion},
                            True, earlier)
        rows.append({**row, **_headline(row, precision, row["trials_per_chain"], False, d)})
    if group:
        pooled = kept[~kept["participant"].isin(leave_out)] if len(leave_out) else kept
        if pooled.empty:
            pooled = kept
        people = facts["participant"].isin(pooled["participant"].unique())
        for emotion, g in pooled.groupby("emotion", sort=True):
            mine = facts[people & (facts["emotion"] == emotion)]
            # a random responder has no category: pooling their states would describe noise
            random = sorted(mine.loc[mine["responses_random"].eq(True), "participant"])
            label = {"participant": "all", "emotion": emotion}
            g = g[~g["participant"].isin(random)]
            if g.empty:
                rows.append({**label, "n_modes": np.nan, "modes": [], "responses_random": True,
                             "verdict": "no participant's responses depend on the faces: "
                                        "there is no category to estimate"})
                continue
            row = _group_checks(g, mine[~mine["participant"].isin(random)], d, seed, label,
                                False)
            if random:
                row["verdict"] = "; ".join(v for v in (row["verdict"], (
                    f"{', '.join(map(str, random))} left out: their responses do not depend on "
                    "the faces")) if v)
            mine_rows = [r for r in rows if r["emotion"] == emotion and r["participant"] != "all"
                         and r["participant"] in set(g["participant"])]
            rows.append({**row, **_between(mine_rows, d),
                         **_headline(row, precision, g["participant"].nunique(), True, d)})
    return pd.DataFrame(rows)


def _between(people: list[dict], d: int) -> dict:
    """The group's spread: the between-participant concentration of the participants'
    prototypes beyond their own errors (`analysis.groups`), and the median of their cones
    (within-participant precision); `group_spread` says both in words."""
    protos = np.array([[r[f"mean_{i}"] for i in range(d)] for r in people])
    error = np.array([cone_trace(r["cone95_deg"], r["cone_units"], d - 1) for r in people])
    found = between_concentration(protos.reshape(-1, d), error)
    within = float(np.nanmedian([r["cone95_deg"] for r in people])) if people else np.nan
    words = "" if not np.isfinite(found.low) else (
        f"participants' prototypes: between-participant κ {found.kappa:.3g} "
        f"[{found.low:.3g}, {found.high:.3g}] ({found.n} participants, beyond their own "
        f"errors); their own 95% cones: median {within:.1f}°")
    return {"kappa_between": found.kappa, "kappa_between_low": found.low,
            "kappa_between_high": found.high, "within_cone_deg": within,
            "group_spread": words}


def _headline(row: dict, precision: float, now: float, group: bool, d: int) -> dict:
    """The row's verdict against the target precision (`analysis.verdicts.judge`)."""
    found = judge(row, precision, now, group, d - 1)
    return {"headline": found.code, "headline_words": found.words, "needed": found.needed}


def _before(states: pd.DataFrame, burn_in: float | int) -> pd.DataFrame:
    """The stretch of each chain just before its kept states (`stationary_states`): from half
    its first kept step up to it, the drift check's earlier stretch, with `same_gamma`: the
    state was sampled with the γ of the chain's kept states (else an annealed gate was still
    on: `_drift` keeps such states only where the gate's pull was weak)."""
    step = states["step"].to_numpy(int)
    first = first_kept_step(states, burn_in)
    g = np.nan_to_num(states["gate_gamma"].to_numpy(float, na_value=np.nan), nan=0.0)
    last = pd.Series(g).groupby(states.groupby(KEYS, sort=False).ngroup().to_numpy()
                                ).transform("last").to_numpy()
    window = (step >= first // 2) & (step < first)
    return states[window].assign(same_gamma=(g == last)[window])


def state_columns_of(states: pd.DataFrame) -> list[str]:
    """The coordinate columns x_0.. of a states table."""
    return [c for c in states.columns if c.startswith("x_")]


def flag_unvisited_modes(table: pd.DataFrame, states: pd.DataFrame) -> pd.DataFrame:
    """`table` (from `inference_checks`) with `unvisited` words added to the verdict of each
    participant whose chains (any state, burn-in included) never came near a mode another
    participant's chains found for the same emotion (random responders neither flag nor are
    flagged: they have no category)."""
    d = len(state_columns_of(states))
    x = states[state_columns(d)].to_numpy(float)
    where = states.groupby(["participant", "emotion"], sort=False).indices
    out = table.copy()
    random = out.get("responses_random", pd.Series(False, out.index)).eq(True)
    people = out[(out["participant"] != "all") & ~random]
    for emotion, rows in people.groupby("emotion", sort=False):
        found = [(row.participant, centre, kappa, weight) for row in rows.itertuples()
                 for centre, kappa, weight in row.modes]
        for idx, row in rows.iterrows():
            mine = x[where[(row["participant"], emotion)]]
            for other, centre, kappa, weight in found:
                if other != row["participant"] and visited(mine, centre, kappa) == 0.0:
                    proto = np.array([row[f"mean_{i}"] for i in range(d)])
                    note = (f"participant {other}'s chains found a mode "
                            f"{angle_deg(proto, centre):.0f}° from this prototype (holding "
                            f"{weight:.0%} of their states); these chains never went there")
                    out.at[idx, "verdict"] = "; ".join(v for v in (out.at[idx, "verdict"], note)
                                                       if v)
                    break
    return out


def judge_states(states: pd.DataFrame, precision: float) -> pd.DataFrame:
    """The verdicts of a states table without trial rows (a simulation's chains: no responder
    test, no catch trials): `inference_checks` with no facts, the default burn-in."""
    return inference_checks(states, pd.DataFrame(columns=FACT_COLUMNS), precision=precision)


def drift_checks(states: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN) -> pd.DataFrame:
    """The drift check alone, one row per participant x emotion (participant, emotion and the
    drift columns of `inference_checks`), on the same stretches `inference_checks` compares;
    for benchmarks that need no other check."""
    d = len(state_columns_of(states))
    kept = stationary_states(states, burn_in)
    before = _before(states, burn_in)
    by_person = before.groupby(["participant", "emotion"], sort=False).indices
    return pd.DataFrame([{"participant": participant, "emotion": emotion,
                          **_drift(g, before.iloc[by_person.get((participant, emotion), [])], d)}
                         for (participant, emotion), g in kept.groupby(["participant", "emotion"],
                                                                       sort=True)])
