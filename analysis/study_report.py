"""The study report behind `python -m analysis.report`: tables, figures and one HTML page.

Everything here is linear in the number of trials: per-participant work is a loop over
participants, group work pools them, and no figure grows with the study (a study of more than
`MAX_LISTED` participants gets summaries instead of one trajectory map per participant, and its
long tables are folded). The page says how to get one participant's own page.
"""

from __future__ import annotations

import base64
import ctypes
import html
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import checks, figures, shared_report
from analysis import diagnostics as dg
from analysis import prototypes as pt
from analysis import verdicts as verdicts_mod
from analysis.load import (
    chain_states,
    load_sessions,
    load_trials,
    session_folders,
)

PREFERRED = (pt.DEGUIDED, pt.UNGUIDED, pt.GUIDED)  # the estimate drawn as "the" prototype
MAX_LISTED = 12  # participants drawn one by one (trajectory maps, face rows); more: summaries
FOLD_ROWS = 30  # longer tables are folded on the page (the CSV always has every row)
# what the report reads of trials.csv besides the coordinates (a third of the memory of all)
TRIAL_COLUMNS = ["participant", "session", "chain", "emotion", "agent", "kind", "iteration",
                 "accepted", "log_gate_current", "log_gate_proposal", "gate_gamma", "correct",
                 "rt", "identity"]
MAX_CHILDREN = 6  # children in the strip of the group's prototype faces drawn as each child
# read besides for the inference checks (`checks.trial_facts`), then dropped with the coordinates
CHECK_COLUMNS = ["row", "chose_proposal", "repeat_of", "kappa_proposal", "response"]


def _burn_in_words(burn_in: float | int) -> str:
    if isinstance(burn_in, int):
        return f"the first {burn_in} steps of every chain"
    return f"the first {burn_in:.0%} of every chain's steps"


def _preferred(table: pd.DataFrame) -> pd.DataFrame:
    """One row per participant x emotion: the de-guided estimate if any, else the plain one."""
    rank = table["estimate"].map({e: i for i, e in enumerate(PREFERRED)})
    return (table.assign(_rank=rank).sort_values("_rank", kind="stable")
            .drop_duplicates(["participant", "emotion"]).drop(columns="_rank")
            .sort_values(["participant", "emotion"], key=lambda c: c.eq("all") if
                         c.name == "participant" else c, kind="stable"))


class _Page:
    """Collects HTML sections, figures (saved as PNG and embedded) and tables (saved as CSV)."""

    def __init__(self, out: Path):
        self.out, self.parts = out, []
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "tables").mkdir(parents=True, exist_ok=True)

    def text(self, tag: str, words: str) -> None:
        self.parts.append(f"<{tag}>{html.escape(words)}</{tag}>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, fig, name: str, caption: str) -> None:
        path = self.out / "figures" / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        data = base64.b64encode(path.read_bytes()).decode()
        self.raw(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def table(self, df: pd.DataFrame, name: str, show: dict[str, str] | None = None) -> None:
        """Save df as tables/<name>.csv; show the `show` columns (renamed) on the page."""
        df.to_csv(self.out / "tables" / f"{name}.csv", index=False)
        view = df[list(show)].rename(columns=show) if show else df
        markup = view.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3g}",
                              classes="t", border=0)
        if len(view) > FOLD_ROWS:
            markup = f"<details><summary>{len(view)} rows (click to show)</summary>{markup}</details>"
        self.raw(markup)
        self.raw(f'<p class="note">Full table: tables/{name}.csv</p>')

    def write(self, title: str) -> Path:
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45;"
                 "color:#222}img{max-width:100%}figcaption{font-size:.9em;color:#444}"
                 "table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0}"
                 "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;"
                 "text-align:right}.note{font-size:.8em;color:#666}.warn{color:#a40}")
        doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
               f"</title><style>{style}</style></head><body>{''.join(self.parts)}</body></html>")
        path = self.out / "index.html"
        path.write_text(doc, encoding="utf-8")
        return path


def build_report(data: str | Path, out: str | Path, checkpoint: str | Path | None = None,
                 faces: str | Path | None = None, burn_in: float | int = 0.5,
                 n_boot: int = 1000, seed: int = 0,
                 min_catch_accuracy: float = dg.MIN_CATCH_ACCURACY,
                 cache: str | Path | None = None, precision: float | None = None) -> Path:
    """Analyse every session under `data` and write the report to `out`; returns index.html.

    cache: a folder for Parquet copies of the sessions (`analysis.load_trials`), None: none.
    precision: the target precision (degrees) of the verdicts; None: the sessions' config
    `analysis.precision`, else `analysis.verdicts.PRECISION_DEG`.
    """
    page = _Page(Path(out))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sessions = load_sessions(data)
        # the model first: encoding the face store is the report's largest transient memory,
        # better spent before the study's data are loaded
        model = _open_model(sessions, checkpoint, faces)
        trials, states, check_facts = read_study(data, cache)
        # chains shared across participants: their own section, from every row (coordinates)
        shared_rows = load_trials(data, cache) if shared_report.is_shared(sessions) else None
        _give_back_memory()
        if states is None:
            _no_trials(page, data, trials, sessions)
        else:
            d = sum(c.startswith("x_") for c in states.columns)
            if model is not None and model[0].config.latent_dim != d:
                raise ValueError(f"checkpoint {checkpoint} has latent_dim "
                                 f"{model[0].config.latent_dim} but the sessions under {data} "
                                 f"have d = {d}; give the checkpoint the sessions ran with")
            facts = _trial_facts(trials, min_catch_accuracy, check_facts)
            del trials  # the report goes on with the chains' states only
            _give_back_memory()
            _fill(page, data, facts, sessions, states, d, model, checkpoint, faces, burn_in,
                  n_boot, seed, min_catch_accuracy, study_precision(sessions, precision),
                  shared_rows)
    notes = list(dict.fromkeys(str(w.message) for w in caught
                               if not issubclass(w.category, DeprecationWarning)))
    if notes:
        page.text("h2", "Warnings")
        page.raw("<ul class='warn'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                 + "</ul>")
        for n in notes:
            print(f"warning: {n}", file=sys.stderr)
    return page.write(f"MCMCP report: {data}")


def read_study(data: str | Path, cache: str | Path | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    """(trials, states, check facts) of every session under `data`: the trial rows the report
    uses, without their coordinates (TRIAL_COLUMNS), the chains' states (`analysis.chain_states`;
    None when no chain trial was recorded yet) and what the inference checks need from the trial
    rows (`analysis.checks.trial_facts`, one row per participant x emotion).

    Session by session, so the coordinates of the whole study never sit in memory next to the
    states rebuilt from them (chains never span sessions); the shown trials of one participant
    (no gate rows) are held until their last session is read, for the checks. Sessions come in
    folder order, which is the order of (participant, session).
    """
    trials, states, facts, dims = [], [], [], {}
    person: list[pd.DataFrame] = []  # the shown trials of the participant being read

    def close_participant() -> None:
        if person:
            facts.append(checks.trial_facts(pd.concat(person, ignore_index=True)))
            person.clear()

    for folder in session_folders(data):
        rows = load_trials(folder, cache, TRIAL_COLUMNS + CHECK_COLUMNS)
        coordinates = [c for c in rows.columns if c.startswith(("current_", "proposal_"))]
        dims.setdefault(len(coordinates) // 2, folder)
        if rows["kind"].isin(["chain", "gate"]).any():
            states.append(chain_states(rows))
        if person and len(rows) and rows["participant"].iloc[0] != person[0]["participant"].iloc[0]:
            close_participant()
        shown = rows[rows["kind"].isin(["chain", "repeat", "catch"]).to_numpy()]
        person.append(shown[[*checks.FACT_INPUTS, *coordinates]])
        trials.append(rows.drop(columns=[*coordinates, "log_gate_current", "log_gate_proposal",
                                         *CHECK_COLUMNS]))
    close_participant()
    facts = (pd.concat(facts, ignore_index=True) if facts
             else pd.DataFrame(columns=checks.FACT_COLUMNS))
    if len(dims) > 1:
        raise ValueError(f"sessions under {data} mix latent dimensions {sorted(dims)} (e.g. "
                         f"{', '.join(str(f) for f in dims.values())}); analyse studies with "
                         "different models separately")
    trials = _concat(trials)
    if not states:
        return trials, None, facts
    states = _concat(states)
    keys = states[["participant", "session", "chain"]]
    if not keys.equals(keys.sort_values(list(keys.columns), kind="stable")):
        states = states.sort_values([*keys.columns, "step"], kind="stable", ignore_index=True)
    return trials, states, facts


class _Facts(NamedTuple):
    """What the report takes from the trial rows themselves (the rest comes from the states)."""

    flags: pd.DataFrame
    participants: list
    guided: bool
    n_shown: int
    n_gate: int
    acceptance: pd.DataFrame
    acceptance_chains: pd.DataFrame
    checks: pd.DataFrame  # analysis.checks.trial_facts
    children: pd.DataFrame | None = None  # pt.children_seen: the child each face is drawn as


def _trial_facts(trials: pd.DataFrame, min_catch_accuracy: float,
                 check_facts: pd.DataFrame) -> _Facts:
    return _Facts(dg.participant_flags(trials, min_catch_accuracy),
                  sorted(trials["participant"].dropna().unique()),
                  bool(trials["gate_gamma"].notna().any()),
                  int((trials["kind"] == "chain").sum()), int((trials["kind"] == "gate").sum()),
                  dg.acceptance(trials, by=["participant", "emotion"]), dg.acceptance(trials),
                  check_facts, pt.children_seen(trials))


def _give_back_memory() -> None:
    """Return freed heap memory to the operating system (glibc's malloc_trim; nothing elsewhere).

    Reading a study session by session frees many mid-sized blocks that glibc keeps for reuse;
    handing them back keeps the report's peak memory near its live data (~0.4 GB less at 100
    participants, benchmarks/bench_scale.py)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """pd.concat of frames with the same columns, one column at a time, each part's column
    dropped once copied: the study is never in memory twice. Empties `parts`."""
    columns = {}
    for name in list(parts[0].columns):
        columns[name] = pd.concat([part[name] for part in parts], ignore_index=True)
        for part in parts:
            del part[name]
    parts.clear()
    return pd.DataFrame(columns, copy=False)


def paradigm_words(sessions: pd.DataFrame) -> str:
    """One sentence naming the study's paradigm(s), from the sessions' configs."""
    counts = (sessions["paradigm"] if "paradigm" in sessions
              else pd.Series("mcmcp", index=sessions.index)).value_counts()
    words = {"mcmcp": "MCMCP (two faces per trial, choose one)",
             "gsp": "GSP (Gibbs Sampling with People: one face on a slider along a great circle "
                    "of the face space; every trial moves the chain to the face confirmed, "
                    "a gate may refuse the move)"}
    if len(counts) == 1:
        return f"Paradigm: {words.get(counts.index[0], counts.index[0])}."
    parts = ", ".join(f"{n} session(s) {p.upper()}" for p, n in counts.items())
    return (f"Mixed study: {parts}. Both paradigms' chains sample the same law (p^g, times "
            "g^gamma when gated), so chains of one emotion are pooled; per-participant rows "
            "keep them apart.")


def _no_trials(page, data, trials, sessions) -> None:
    """The page for data without a single chain trial yet (sessions started, nothing answered)."""
    page.text("h1", "MCMCP study report")
    page.text("p", f"No chain trials recorded yet under {Path(data).resolve()}: "
                   f"{len(sessions)} session(s) found, {len(trials)} row(s) in their trials.csv "
                   "(practice or catch trials only, or none). Nothing to analyse; run the report "
                   "again once trials have been answered.")
    page.table(_flat(sessions), "sessions",
               {c: c for c in ("participant", "session", "status", "start_time") if c in sessions})
    print(f"note: no chain trials under {data} yet; the report says so", file=sys.stderr)


def _flat(table: pd.DataFrame) -> pd.DataFrame:
    """The columns of `table` that hold no dicts or lists (what a CSV and a page can show)."""
    return table[[c for c in table.columns
                  if table[c].map(lambda v: not isinstance(v, (dict, list))).all()]]


def study_precision(sessions: pd.DataFrame, given: float | None = None) -> float:
    """The target precision (degrees): `given`, else the sessions' config `analysis.precision`
    (the smallest, if they differ), else `analysis.verdicts.PRECISION_DEG`."""
    if given is not None:
        return float(given)
    stated = [float(c["analysis"]["precision"]) for c in sessions.get("config", [])
              if isinstance(c, dict) and isinstance(c.get("analysis"), dict)
              and c["analysis"].get("precision") is not None]
    return min(stated) if stated else verdicts_mod.PRECISION_DEG


def _fill(page, data, facts, sessions, states, d, model, checkpoint, faces, burn_in, n_boot,
          seed, min_catch_accuracy, precision, shared_rows=None) -> None:
    flags, participants = facts.flags, facts.participants
    flagged = flags.loc[flags["flagged"], "participant"].tolist()
    # Burn-in is cut once: every estimate below gets the kept states (and burn_in 0): after
    # the burn-in, and in a chain whose gate annealed, only the states sampled with the gate off
    # (`checks.stationary_states`). The group's leave out flagged participants.
    post = checks.stationary_states(states, burn_in)
    kept = post[~post["participant"].isin(flagged)] if flagged else post
    if kept.empty:
        kept = post
    emotions = sorted(states["emotion"].unique())
    guided = facts.guided

    page.text("h1", "MCMCP study report")
    page.raw(f"<p class='note'>Data: {html.escape(str(Path(data).resolve()))} &middot; written "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by analysis.report</p>")
    page.text("h2", "What is in this study")
    n_shown, n_gate = facts.n_shown, facts.n_gate
    page.text("p", (
        f"{len(participants)} participant(s) ({sum(p.startswith('sim') for p in participants)} "
        f"simulated), {len(sessions)} session(s), emotions: {', '.join(emotions)}. "
        f"{states.groupby(['participant', 'session', 'chain']).ngroups} chains; "
        f"{n_shown} chain trials were shown" +
        (f" and {n_gate} proposals were screened out by the gatekeeper (guided)."
         if guided else " (no gatekeeper: unguided).") +
        f" {paradigm_words(sessions)}" +
        f" Burn-in: {_burn_in_words(burn_in)} is discarded before any estimate "
        "(the chains need time to forget where they started)" +
        ("; where the gate was annealed (its pull faded to nothing over the first trials of "
         "each chain), also every step taken while the gate was still on, so the estimates "
         "rest only on what the person chose freely." if _annealed(states) else ".")))
    page.table(_flat(sessions), "sessions",
        {c: c for c in ("participant", "session", "agent_name", "paradigm", "gate_kind",
                        "emotions", "status") if c in sessions})
    if shared_rows is not None:
        shared_report.section(page, shared_rows, burn_in, precision, seed)

    verdicts = checks.flag_unvisited_modes(
        checks.inference_checks(states, facts.checks, burn_in, seed, leave_out=flagged,
                                precision=precision), states)
    _headline_part(page, verdicts, precision, d)

    page.text("h2", "Participants flagged for attention")
    page.text("p", (
        f"Catch trials pair a clear example of the target emotion with a face of another emotion; "
        f"an attentive participant picks the target almost always. A participant is flagged when "
        f"fewer than {min_catch_accuracy:.0%} of their catch trials are correct (guessing gives "
        f"50%; the p-value tests against guessing), or when more than "
        f"{dg.MAX_FAST_FRACTION:.0%} of answers came faster than {dg.FAST_RT} s. "
        + (f"Flagged: {', '.join(flagged)}. They are left out of the group results below."
           if flagged else "No participant was flagged.")))
    page.table(flags, "participants", {
        "participant": "participant", "n_catch": "catch trials", "accuracy": "catch correct",
        "p_value": "p (vs guessing)", "median": "median RT (s)", "iqr": "RT IQR (s)",
        "frac_fast": "fraction < 0.2 s", "reasons": "why flagged"})
    page.figure(figures.participant_quality(flags, min_catch_accuracy, dg.FAST_RT), "quality",
                "Left: share of catch trials answered correctly; bars in red are flagged. Right: "
                "median response time with the middle half of responses.")

    page.text("h2", "Did the chains converge?")
    page.text("p", (
        "Each emotion was explored by several chains started at different faces. If they have "
        "converged, they wander over the same region and R-hat (the Gelman-Rubin statistic: "
        "spread between chains relative to spread within) is close to 1. Rule of thumb: below "
        f"{dg.RHAT_GOOD} is good, above {dg.RHAT_BAD} means the chains still disagree and the "
        "study needs more trials per chain, unless the chains sit in different modes of a "
        "category with two (the verdict then says so: more trials cannot fix that). ESS "
        "(effective sample size) counts how many "
        f"independent samples the correlated chain steps are worth; {dg.ESS_MIN} or more gives a "
        "stable prototype. A point on the sphere has 3 coordinates; we compute R-hat and ESS "
        "(ArviZ, rank-normalised split R-hat, bulk and tail ESS) on each and report the worst: "
        "the largest R-hat and the smallest ESS."))
    conv = _modes_in_convergence(pd.concat(
        [dg.convergence(kept, 0, by=[]).assign(participant="group"), dg.convergence(post, 0)],
        ignore_index=True), verdicts)
    page.table(conv, "convergence", {
        "participant": "participant", "emotion": "emotion", "n_chains": "chains",
        "n_draws": "kept steps per chain", "rhat_max": "R-hat (max)",
        "ess_bulk_min": "ESS bulk (min)", "ess_tail_min": "ESS tail (min)", "verdict": "verdict"})
    ess = pt.chain_ess(post, 0)  # per chain, shared by the group and participants
    group = pt.prototypes(kept, 0, by=[], n_boot=n_boot, seed=seed, ess=ess)
    n_chains = states.groupby(["participant", "session", "chain"]).ngroups
    page.figure(figures.convergence_traces(states, burn_in, _preferred(group), flagged), "traces",
                ("Each line is one chain: how far (in degrees on the sphere) it is from the group "
                 "prototype at every step." if n_chains <= figures.MAX_TRACES * len(emotions) else
                 f"How far (in degrees on the sphere) the {n_chains} chains are from the group "
                 "prototype at every step: the line is the median chain, the bands hold the "
                 "middle 50% and 90% of chains.") +
                " Converged chains settle into the same band; the grey part is discarded: the "
                "burn-in and, where the gate annealed, every step taken with the gate still on "
                "(the gate holds chains tighter than the person's category).")
    acf = dg.autocorrelation(post, 20, 0)
    acf.to_csv(page.out / "tables" / "autocorrelation.csv", index=False)
    page.figure(figures.autocorrelation_plot(acf), "autocorrelation",
                "Autocorrelation: how alike a chain's states are k steps apart (1 = identical). "
                "The faster it drops to 0, the more information each trial adds. "
                "Full table: tables/autocorrelation.csv")
    page.text("p", "Acceptance: how often the proposal face was chosen. Around 20-50% means the "
                   "proposals were neither too timid nor too bold.")
    page.table(facts.acceptance, "acceptance", {
        "participant": "participant", "emotion": "emotion", "n_shown": "trials shown",
        "acceptance": "proposal chosen", "gate_pass": "passed the gate"})
    facts.acceptance_chains.to_csv(page.out / "tables" / "acceptance_chains.csv", index=False)

    table = _calibrated_cones(pd.concat(
        [group, pt.prototypes(post, 0, n_boot=n_boot, seed=seed, ess=ess)], ignore_index=True),
        verdicts)
    deguided = bool((table["estimate"] == pt.DEGUIDED).any())
    page.text("h2", "Prototypes")
    page.text("p", (
        "A participant's prototype of an emotion is the centre of the region their chains settled "
        "in: the mean direction of the kept states (a von Mises-Fisher fit; kappa is how tightly "
        "the choices cluster, larger = more consistent; see 'what a width is' below). The 95% "
        "confidence cone is the angle around that centre that holds the true prototype with 95% "
        "confidence, from the Monte Carlo error of the mean direction (the effective sample "
        "size of the chains, with a t-type quantile for few effective draws; for the group, "
        "participants are the units), which accounts for how alike successive states are and, "
        "for guided chains, for the de-guiding weights; in simulations of 4 chains x 100 and "
        "x 250 trials it held the truth 93-97% of the time (docs/verdicts.md). Only the "
        "estimate the report "
        "draws (de-guided, else unguided) has one. The mode (peak of a smoothed density) is "
        "given as a second opinion. The group "
        "prototype pools every non-flagged participant's chains." +
        (" Guided sessions: the gatekeeper pulls chains toward the model's idea of the emotion, "
         "so each prototype is given twice: 'guided (as sampled)' and 'de-guided (PSIS)', which "
         "reweights every state to remove the gatekeeper's pull (Pareto-smoothed importance "
         "sampling). A k-hat above 0.7 means the reweighting is unreliable." if deguided else
         " The gate was annealed: its pull faded to nothing early in each chain, and the "
         "estimates use only the states sampled after that, which need no re-weighting "
         "(hence 'unguided')." if guided else "")))
    truth = pt.truth_table(sessions)
    table = pt.add_truth_angles(table, truth)
    show = {"participant": "participant", "emotion": "emotion", "estimate": "estimate",
            "kappa": "kappa", "cone95_deg": "95% cone (deg)",
            "mode_to_mean_deg": "mode to mean (deg)"}
    if deguided:
        show.update(khat="k-hat", khat_warning="k-hat > 0.7 (unreliable)",
                    weight_ess="weights ESS")
    if not truth.empty:
        show["truth_deg"] = "distance to true prototype (deg)"
    model_note, with_model = _model_part(page, table, model, checkpoint, faces, facts.children)
    if with_model is not None:
        table = with_model
        show["p_target"] = "model's p(emotion)"
        if "centroid_deg" in table:
            show["centroid_deg"] = "distance to data centroid (deg)"
    page.table(table, "prototypes", show)
    page.raw(model_note)
    _checks_part(page, verdicts, model, guided)

    page.text("h2", "Where the chains went")
    if d != 3:
        page.text("p", f"Maps need a 3-dimensional latent space (this study has d = {d}).")
        return
    page.text("p", "The face space is a sphere; these maps flatten it with an equal-area "
                   "projection (like a world map), so equal areas on the map are equal areas of "
                   "face space.")
    page.figure(figures.density_maps(kept, 0, _preferred(group)), "density",
                "Density of the kept chain states for each emotion, all non-flagged participants "
                "together.")
    overlap = pt.overlap(kept, 0)
    page.figure(figures.overlap_heatmap(overlap), "overlap",
                "Overlap of the emotions' regions (Bhattacharyya coefficient of the densities "
                "above): 1 = the chains for two emotions explored the same faces, 0 = no shared "
                "faces.")
    overlap.reset_index(names="emotion").to_csv(
        page.out / "tables" / "overlap.csv", index=False)
    preferred = _preferred(table)
    page.figure(figures.prototype_map(preferred, truth), "prototype_map",
                "Each participant's prototype (dots; flagged participants are included) and the "
                "group prototype (star) for every emotion" +
                (", with the true prototype (red X) of the simulated participants." if
                 not truth.empty else "."))
    if len(participants) <= MAX_LISTED:
        for p in participants:
            page.figure(figures.trajectories(states, p, burn_in, preferred, truth),
                        f"trajectories_{p}", f"Participant {p}: each coloured line is one chain.")
    else:
        page.text("p", (
            f"With {len(participants)} participants, one trajectory map each would bury the "
            "summaries; a participant's own page (trajectories, convergence and prototypes) is "
            "the report of their folder, e.g. "
            f"python -m analysis.report {Path(data) / ('sub-' + participants[0])} "
            f"--out {page.out / 'participants' / participants[0]}"))


def _child_strip(page, group: pd.DataFrame, loaded, faceset, children: list[str],
                 n_seen: int) -> None:
    """The group's prototype faces drawn as each of several children the study showed: does
    the prototype read the same on every child?"""
    from mcmcp.identities import reference_codes

    if faceset is None or group.empty:
        return
    known = set(np.asarray(faceset.identities).astype(str))
    children = [c for c in children if c in known or c == loaded.default_identity]
    identities = reference_codes(loaded, faceset, children)
    rows = pd.concat([group.assign(participant=f"group as {c}", identity=c) for c in children],
                     ignore_index=True)
    images = pt.decode(loaded.model, pt.table_vectors(rows), identities.stack(rows["identity"]))
    page.figure(figures.prototype_faces(rows.drop(columns="identity"), images), "faces_children",
                f"The group's prototype faces drawn as each of {len(children)} of the "
                f"{n_seen} children the participants saw (most seen first): the expression "
                "comes from the sphere, the child from its reference face, so a prototype "
                "should read as the same emotion on every child.")


HEADLINE_SHOW = {"participant": "participant", "emotion": "emotion",
                 "headline": "verdict", "cone95_deg": "95% cone (deg)",
                 "trials_per_chain": "trials per chain", "needed": "needed",
                 "headline_words": "in words", "group_spread": "the group's spread"}


def _headline_part(page, verdicts: pd.DataFrame, precision: float, d: int) -> None:
    """The verdicts first: is each prototype precise enough, and if not, why not."""
    page.text("h2", f"Verdicts: which prototypes are precise to {precision:g}°")
    people = verdicts[verdicts["participant"] != "all"]
    counts = people["headline"].value_counts()
    page.text("p", (
        f"A prototype is the mean direction of a participant's kept chain states; its 95% "
        f"cone is the angle around it that holds the true prototype 95% of the time (from "
        f"the Monte Carlo error of the mean, which accounts for how alike successive states "
        f"are; in simulations of 4 chains x 100 and x 250 trials it held the truth 93-97% of "
        f"the time, docs/verdicts.md). 'precise enough': the cone is within the target of "
        f"{precision:g}° (--precision, or analysis.precision in the YAML). 'needs more': "
        f"the cone is wider; 'needed' is the trials per chain (the group: participants) "
        f"expected to bring it within the target, from the measured error. Before precision "
        f"come the reasons a precise number could still mislead: no category (the answers "
        f"ignore the faces), several modes, unreliable de-guiding, drift (the prototype moved "
        f"during the session). R-hat is not the headline: short chains of a narrow category "
        f"give R-hat far above 1.1 while their prototype is within a few degrees; it stays "
        f"below, as a check on the widths and modes. Participants: " +
        ", ".join(f"{n} {code}" for code, n in counts.items()) + "."))
    page.table(verdicts.assign(participant=verdicts["participant"].replace("all", "group")),
               "verdicts", {k: v for k, v in HEADLINE_SHOW.items() if k in verdicts})


def _annealed(states: pd.DataFrame) -> bool:
    """True when some chain's gate annealed (a state sampled with γ = 0 while a gate was set)."""
    return bool((states["gate_gamma"] == 0).any())


def _modes_in_convergence(conv: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """The convergence table with the checks' word where R-hat misleads: 'N modes' instead of
    'not converged' (or 'borderline') when the chains sit in different modes of the category,
    which more trials cannot fix, and 'no category' for responses that ignore the faces."""
    facts = verdicts.assign(participant=verdicts["participant"].replace("all", "group"))
    cols = [c for c in ("n_modes", "chains_split", "responses_random") if c in facts]
    merged = conv.merge(facts[["participant", "emotion", *cols]], how="left",
                        on=["participant", "emotion"])
    out = []
    for row in merged.itertuples():
        words = row.verdict
        n_modes = getattr(row, "n_modes", np.nan)
        split = row.participant == "group" or getattr(row, "chains_split", False) is True
        if getattr(row, "responses_random", False) is True:
            words = "no category: the responses do not depend on the faces"
        elif n_modes >= 2 and split and words.startswith(("not converged", "borderline")):
            words = (f"{int(n_modes)} modes: the chains sit in different modes, which more "
                     "trials cannot fix (see the checks)")
        elif n_modes >= 2:
            words += f" ({int(n_modes)} modes)"
        out.append(words)
    return conv.assign(verdict=out)


def _calibrated_cones(table: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """The prototypes table with the checks' calibrated cone (`analysis.cones.mcse_cone`; the
    group's `mean_cone`) as cone95_deg of the estimate the report draws; the chain-bootstrap
    cone, which resamples a handful of chains and covers too rarely, stays in the CSV as
    cone95_bootstrap_deg."""
    table = table.rename(columns={"cone95_deg": "cone95_bootstrap_deg"})
    cone = verdicts.set_index(["participant", "emotion"])["cone95_deg"]
    drawn = _preferred(table)
    table["cone95_deg"] = np.nan
    keys = list(zip(drawn["participant"], drawn["emotion"], strict=True))
    table.loc[drawn.index, "cone95_deg"] = cone.reindex(keys).to_numpy()
    return table


CHECK_SHOW = {"participant": "participant", "emotion": "emotion", "n_modes": "modes",
              "mode_weights": "mode weights", "cone95_deg": "95% cone (deg)", "kappa": "kappa",
              "kappa_corrected": "kappa corrected for lapses", "lapse": "lapse rate",
              "responder_p": "p (choices ignore the faces)", "verdict": "verdict"}


def _checks_part(page, verdicts: pd.DataFrame, model, guided: bool) -> None:
    """The inference checks: what could make an estimate wrong, and where it happened."""
    page.text("h2", "Can the estimates be trusted?")
    page.text("p", (
        "An estimate can look precise and still be wrong. These checks look for the known ways: "
        "a category with two (or more) modes, whose mean lands on a face nobody chose; a mode "
        "that another participant's chains found but these chains never visited; responses "
        "that do not depend on the faces at all (a person pressing keys at random, tested on "
        "the chain trials themselves, no catch trials needed); " +
        ("for guided chains with a gate that stays on, a gate so strong that the de-guiding "
         "weights cannot reach the person's category (the gate's pull γ·kappa_gate against the "
         "category's own kappa), and unguided control chains that disagree with the de-guided "
         "estimate; " if guided else "") +
        "and answers that ignore the faces (lapses, or a side of the screen pressed whatever "
        "the faces), which make the chains wander more widely: the prototypes' directions are "
        "unaffected, their widths are not. What a width is: the chains sample p^g, the "
        "participant's category p raised to an unknown Luce exponent g (how sharply they "
        "choose), flattened further by such answers and bent by the proposal width; so "
        "'kappa' is the concentration of the participant's choices, not of their category. "
        "In simulations a category of kappa 20 read 6 at exponent 0.3 and 126 at exponent 5, "
        "and a kappa of 200 read 247-268: kappa is no bound on the category's width either "
        "way. A category's width is identified only under an assumption, named where it is "
        "given: exponent 1 and the lapse rate of the catch trials ('kappa corrected for "
        "lapses')."))
    people = verdicts[verdicts["participant"] != "all"]
    everyone = verdicts[verdicts["participant"] == "all"]
    if len(everyone) and np.isfinite(everyone["lapse"]).any():
        g = everyone.iloc[0]
        page.text("p", (
            f"Lapses: the catch trials ({int(g['n_catch'])} of them) put the rate of random "
            f"answers at about {g['lapse']:.2f} (95% interval {g['lapse_low']:.2f} to "
            f"{g['lapse_high']:.2f}). " +
            ("'kappa corrected for lapses' assumes a Luce exponent of 1, simulates the same "
             "chains with that lapse rate and inverts the flattening (an interval for each is "
             "in tables/checks.csv); 'inf' means the chains are as tight as chains with this "
             "lapse rate can get: the category is very narrow and the data set no upper limit "
             "on its kappa (the interval's lower end still holds). Answers that follow a side "
             "of the screen count here too (they flatten the chains exactly like lapses); the "
             "side-bias check tells them apart."
             if g["lapse"] > 0 else
             f"No catch trial was missed, so the widths are not corrected; but a lapse rate up "
             f"to {g['lapse_high']:.2f} would fit these catch trials too.")))
    else:
        page.text("p", "Lapses: without catch trials the rate of random answers is unknown, so "
                       "no category width is given, only the concentration of the choices "
                       "(the directions are unaffected).")
    problems = verdicts[verdicts["verdict"] != ""]
    if problems.empty:
        page.text("p", "No check found a problem: one mode per category, responses that depend "
                       "on the faces, and every chain visited where the others found a mode.")
    else:
        page.raw("<p class='warn'><b>Problems found:</b></p><ul class='warn'>" + "".join(
            f"<li>{html.escape('group' if r.participant == 'all' else str(r.participant))}, "
            f"{html.escape(str(r.emotion))}: {html.escape(r.verdict)}</li>"
            for r in problems.itertuples()) + "</ul>")
    show = dict(CHECK_SHOW)
    if "weight_ess_expected" in verdicts and verdicts["weight_ess_expected"].notna().any():
        show["weight_ess_expected"] = "expected share of useful weights"
    page.table(_flat(verdicts.drop(columns=["modes"])), "checks",
               {k: v for k, v in show.items() if k in verdicts})
    random = verdicts.get("responses_random", pd.Series(False, verdicts.index)).eq(True)
    many = verdicts[(verdicts["n_modes"] >= 2) & ~random]
    if many.empty:
        return
    if model is None:
        page.text("p", "Faces of the modes: rerun with --checkpoint to see them.")
        return
    many = pd.concat([many[many["participant"] == "all"],
                      many[many["participant"] != "all"]]).head(MAX_LISTED)
    images = pt.decode(model[0].model, np.array([m[0] for ms in many["modes"] for m in ms]))
    page.figure(figures.mode_faces(many, images), "mode_faces",
                "Where a category has more than one mode, the face at each mode (its share of "
                "the kept states above it): the prototype (their mean) may be a face between "
                "them that nobody chose." + (f" The first {MAX_LISTED} of {len(people)} rows."
                                              if len(many) == MAX_LISTED else ""))


def _open_model(sessions: pd.DataFrame, checkpoint, faces):
    """(LoadedModel, class centroids or None, sessions that recorded no checkpoint, face set or
    None) for --checkpoint (refused if the sessions ran with another model), None without
    one. A face store the checkpoint was not trained on is warned about (the page lists it)."""
    if checkpoint is None:
        return None
    from mcmcp.materials import foreign_store_warning
    from mcmcp.sampling.densities import class_centroids
    from vae.checkpoint import load_checkpoint
    from vae.store import read_store, store_hash

    dims = set(sessions["d"].dropna().astype(int)) if "d" in sessions else set()
    loaded = load_checkpoint(checkpoint, expect_latent_dim=dims.pop() if len(dims) == 1 else None)
    unrecorded = pt.check_model(sessions, loaded.sha256, checkpoint)
    faceset = centroids = None
    if faces is not None:
        faceset = read_store(faces)
        foreign = foreign_store_warning(faces, store_hash(faces), loaded)
        if foreign is not None:
            warnings.warn(f"{foreign}: the class centroids (distance to data centroid) and the "
                          "children's reference faces come from another face set than the "
                          "model's; give the checkpoint's own face store", stacklevel=2)
        centroids = class_centroids(loaded, faceset)
    return loaded, centroids, unrecorded, faceset


def _children(loaded, faceset, chosen: pd.DataFrame, children: pd.DataFrame | None
              ) -> tuple[pd.DataFrame, object]:
    """`chosen` with `identity`: the child each prototype face is drawn as (the one its
    participant saw most; the group's: the study's most common; rows recording none: the
    checkpoint's default), and the `mcmcp.identities.Identities` to draw them. A child the
    face store cannot draw (no --faces, or not in it) is drawn as the default, with a warning."""
    from mcmcp.identities import reference_codes

    default = loaded.default_identity
    chosen = chosen.drop(columns="identity", errors="ignore")
    if children is not None and len(children) and default:
        chosen = chosen.merge(children, on=["participant", "emotion"], how="left")
    else:
        chosen = chosen.assign(identity=None)
    chosen["identity"] = chosen["identity"].fillna(default).astype(object)
    wanted = [c for c in dict.fromkeys(chosen["identity"]) if c and c != default]
    known = set() if faceset is None else set(np.asarray(faceset.identities).astype(str))
    missing = [c for c in wanted if c not in known]
    if missing:
        where = "no --faces was given" if faceset is None else "they are not in the face store"
        warnings.warn(f"prototype faces of children {', '.join(missing)} are drawn as the "
                      f"checkpoint's default child {default} instead: {where}", stacklevel=2)
        chosen["identity"] = chosen["identity"].where(~chosen["identity"].isin(missing), default)
    return chosen, reference_codes(loaded, faceset, [c for c in wanted if c in known])


def _model_part(page, table, model, checkpoint, faces, children=None
                ) -> tuple[str, pd.DataFrame | None]:
    """Decode prototype faces when a checkpoint is given, each as the child its participant
    saw (`children`, from pt.children_seen); returns (html, table with p_* and identity)."""
    if model is None:
        return ("<p><b>No faces drawn:</b> no model checkpoint was given. Rerun with "
                "<code>--checkpoint CHECKPOINT --faces FACES.h5</code> to see the prototype faces "
                "and the model's reading of them.</p>", None)
    from vae.labels import EMOTIONS

    loaded, centroids, unrecorded, faceset = model
    table = pt.model_comparison(table, loaded.model, EMOTIONS, centroids)
    chosen = _preferred(table)
    many = chosen["participant"].nunique() - 1 > MAX_LISTED
    if many:
        chosen = chosen[chosen["participant"] == "all"]
    chosen, identities = _children(loaded, faceset, chosen, children)
    images = pt.decode(loaded.model, pt.table_vectors(chosen),
                       identities.stack(chosen["identity"]))
    drawn = ("" if not identities.codes else
             " Each face is drawn as the child the participant saw (named under the row "
             "label); the group's as the child the study showed most.")
    page.figure(figures.prototype_faces(chosen, images), "faces",
                f"Prototype faces decoded with {Path(checkpoint).name} (sha256 "
                f"{loaded.sha256[:12]}...): " +
                ("the group's, one per emotion (each participant's are on their own page). "
                 if many else "rows are participants and the group, columns emotions. ") +
                "For guided sessions the de-guided (PSIS) prototype is drawn." + drawn)
    table = table.merge(chosen[["participant", "emotion", "estimate", "identity"]],
                        on=["participant", "emotion", "estimate"], how="left")
    seen = [] if children is None else list(
        children.loc[children["participant"] != "all", "identity"].value_counts().index)
    if identities.codes and len(seen) > 1:
        _child_strip(page, chosen[chosen["participant"] == "all"], loaded, faceset,
                     seen[:MAX_CHILDREN], len(seen))
    note = ""
    if unrecorded:
        note = (f"<p class='warn'>{len(unrecorded)} session(s) recorded no model checkpoint, so "
                "their faces are drawn with the given model without a check that it is the one "
                "the chains ran on.</p>")
    if faces is None:
        note += "<p>No face store given: distances to the data's class centroids are omitted.</p>"
    return note, table
