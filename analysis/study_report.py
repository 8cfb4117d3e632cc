"""CLI: one readable HTML report (plus PNG figures and CSV tables) for a folder of MCMCP data.

    python -m analysis.report participants_data/ --out reports/NAME \
        [--checkpoint vae/checkpoints/default.pt --faces data/faces.h5] [--burn-in 0.5]

Writes OUT/index.html (self-contained: figures embedded), OUT/figures/*.png, OUT/tables/*.csv.
Without --checkpoint no faces are decoded (the page says so). The participants' files are only
read. Group-level results leave out participants flagged by the attention checks.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis import diagnostics as dg
from analysis import figures
from analysis import prototypes as pt
from analysis.load import chain_states, load_sessions, load_trials

PREFERRED = (pt.DEGUIDED, pt.UNGUIDED, pt.GUIDED)  # the estimate drawn as "the" prototype


def _burn_in(text: str) -> float | int:
    """--burn-in: '0.5' = that fraction of each chain, '100' = that many steps."""
    try:
        value = int(text) if text.isdigit() else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--burn-in {text!r}: give a fraction in [0, 1) "
                                         "or a whole number of steps") from None
    if isinstance(value, float) and not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"--burn-in {text}: a fraction must be in [0, 1)")
    return value


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
        self.raw(view.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3g}",
                              classes="t", border=0))
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
                 max_trajectory_figures: int = 12) -> Path:
    """Analyse every session under `data` and write the report to `out`; returns index.html."""
    page = _Page(Path(out))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trials, sessions = load_trials(data), load_sessions(data)
        states = chain_states(trials)
        d = sum(c.startswith("x_") for c in states.columns)
        _fill(page, data, trials, sessions, states, d, checkpoint, faces, burn_in, n_boot, seed,
              min_catch_accuracy, max_trajectory_figures)
    notes = list(dict.fromkeys(str(w.message) for w in caught
                               if not issubclass(w.category, DeprecationWarning)))
    if notes:
        page.text("h2", "Warnings")
        page.raw("<ul class='warn'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                 + "</ul>")
        for n in notes:
            print(f"warning: {n}", file=sys.stderr)
    return page.write(f"MCMCP report: {data}")


def _fill(page, data, trials, sessions, states, d, checkpoint, faces, burn_in, n_boot, seed,
          min_catch_accuracy, max_trajectory_figures) -> None:
    flags = dg.participant_flags(trials, min_catch_accuracy)
    flagged = flags.loc[flags["flagged"], "participant"].tolist()
    kept = states[~states["participant"].isin(flagged)]
    if kept.empty:
        kept = states
    participants = sorted(trials["participant"].dropna().unique())
    emotions = sorted(states["emotion"].unique())
    guided = trials["gate_gamma"].notna().any()

    page.text("h1", "MCMCP study report")
    page.raw(f"<p class='note'>Data: {html.escape(str(Path(data).resolve()))} &middot; written "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by analysis.report</p>")
    page.text("h2", "What is in this study")
    n_shown = int((trials["kind"] == "chain").sum())
    n_gate = int((trials["kind"] == "gate").sum())
    page.text("p", (
        f"{len(participants)} participant(s) ({sum(p.startswith('sim') for p in participants)} "
        f"simulated), {len(sessions)} session(s), emotions: {', '.join(emotions)}. "
        f"{states.groupby(['participant', 'session', 'chain']).ngroups} chains; "
        f"{n_shown} chain trials were shown" +
        (f" and {n_gate} proposals were screened out by the gatekeeper (guided MCMCP)."
         if guided else " (no gatekeeper: unguided MCMCP).") +
        f" Burn-in: {_burn_in_words(burn_in)} is discarded before any estimate "
        "(the chains need time to forget where they started)."))
    page.table(sessions[[c for c in sessions.columns if sessions[c].map(
        lambda v: not isinstance(v, (dict, list))).all()]], "sessions",
        {c: c for c in ("participant", "session", "agent_name", "gate_kind", "emotions",
                        "status") if c in sessions})

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
        "study needs more trials per chain. ESS (effective sample size) counts how many "
        f"independent samples the correlated chain steps are worth; {dg.ESS_MIN} or more gives a "
        "stable prototype. A point on the sphere has 3 coordinates; we compute R-hat and ESS "
        "(ArviZ, rank-normalised split R-hat, bulk and tail ESS) on each and report the worst: "
        "the largest R-hat and the smallest ESS."))
    conv = pd.concat([dg.convergence(kept, burn_in, by=[]).assign(participant="group"),
                      dg.convergence(states, burn_in)], ignore_index=True)
    page.table(conv, "convergence", {
        "participant": "participant", "emotion": "emotion", "n_chains": "chains",
        "n_draws": "kept steps per chain", "rhat_max": "R-hat (max)",
        "ess_bulk_min": "ESS bulk (min)", "ess_tail_min": "ESS tail (min)", "verdict": "verdict"})
    group = pt.prototypes(kept, burn_in, by=[], n_boot=n_boot, seed=seed)
    page.figure(figures.convergence_traces(states, burn_in, _preferred(group), flagged), "traces",
                "Each line is one chain: how far (in degrees on the sphere) it is from the group "
                "prototype at every step. Converged chains settle into the same band; the grey "
                "part is the burn-in, which is discarded.")
    acf = dg.autocorrelation(states, 20, burn_in)
    acf.to_csv(page.out / "tables" / "autocorrelation.csv", index=False)
    page.figure(figures.autocorrelation_plot(acf), "autocorrelation",
                "Autocorrelation: how alike a chain's states are k steps apart (1 = identical). "
                "The faster it drops to 0, the more information each trial adds. "
                "Full table: tables/autocorrelation.csv")
    page.text("p", "Acceptance: how often the proposal face was chosen. Around 20-50% means the "
                   "proposals were neither too timid nor too bold.")
    page.table(dg.acceptance(trials, by=["participant", "emotion"]), "acceptance", {
        "participant": "participant", "emotion": "emotion", "n_shown": "trials shown",
        "acceptance": "proposal chosen", "gate_pass": "passed the gate"})
    dg.acceptance(trials).to_csv(page.out / "tables" / "acceptance_chains.csv", index=False)

    page.text("h2", "Prototypes")
    page.text("p", (
        "A participant's prototype of an emotion is the centre of the region their chains settled "
        "in: the mean direction of the kept states (a von Mises-Fisher fit; kappa is how tightly "
        "the states cluster, larger = more consistent). The 95% confidence cone is the angle "
        "around that centre that contains 95% of the centres recomputed after resampling whole "
        "chains. The mode (peak of a smoothed density) is given as a second opinion. The group "
        "prototype pools every non-flagged participant's chains." +
        (" Guided sessions: the gatekeeper pulls chains toward the model's idea of the emotion, "
         "so each prototype is given twice: 'guided (as sampled)' and 'de-guided (PSIS)', which "
         "reweights every state to remove the gatekeeper's pull (Pareto-smoothed importance "
         "sampling). A k-hat above 0.7 means the reweighting is unreliable." if guided else "")))
    table = pd.concat([group, pt.prototypes(states, burn_in, n_boot=n_boot, seed=seed)],
                      ignore_index=True)
    truth = pt.truth_table(sessions)
    table = pt.add_truth_angles(table, truth)
    show = {"participant": "participant", "emotion": "emotion", "estimate": "estimate",
            "kappa": "kappa", "cone95_deg": "95% cone (deg)",
            "mode_to_mean_deg": "mode to mean (deg)"}
    if guided:
        show.update(khat="k-hat", khat_warning="k-hat > 0.7 (unreliable)",
                    weight_ess="weights ESS")
    if not truth.empty:
        show["truth_deg"] = "distance to true prototype (deg)"
    model_note, with_model = _model_part(page, table, sessions, d, checkpoint, faces)
    if with_model is not None:
        table = with_model
        show["p_target"] = "model's p(emotion)"
        if "centroid_deg" in table:
            show["centroid_deg"] = "distance to data centroid (deg)"
    page.table(table, "prototypes", show)
    page.raw(model_note)

    page.text("h2", "Where the chains went")
    if d != 3:
        page.text("p", f"Maps need a 3-dimensional latent space (this study has d = {d}).")
        return
    page.text("p", "The face space is a sphere; these maps flatten it with an equal-area "
                   "projection (like a world map), so equal areas on the map are equal areas of "
                   "face space.")
    page.figure(figures.density_maps(kept, burn_in, _preferred(group)), "density",
                "Density of the kept chain states for each emotion, all non-flagged participants "
                "together.")
    overlap = pt.overlap(kept, burn_in)
    page.figure(figures.overlap_heatmap(overlap), "overlap",
                "Overlap of the emotions' regions (Bhattacharyya coefficient of the densities "
                "above): 1 = the chains for two emotions explored the same faces, 0 = no shared "
                "faces.")
    overlap.reset_index(names="emotion").to_csv(
        page.out / "tables" / "overlap.csv", index=False)
    shown = participants[:max_trajectory_figures]
    for p in shown:
        page.figure(figures.trajectories(states, p, burn_in, _preferred(table), truth),
                    f"trajectories_{p}", f"Participant {p}: each coloured line is one chain.")
    if len(participants) > len(shown):
        page.text("p", f"Trajectory maps are drawn for the first {len(shown)} participants only.")


def _model_part(page, table, sessions, d, checkpoint, faces) -> tuple[str, pd.DataFrame | None]:
    """Decode prototype faces when a checkpoint is given; returns (html, table with p_*)."""
    if checkpoint is None:
        return ("<p><b>No faces drawn:</b> no model checkpoint was given. Rerun with "
                "<code>--checkpoint CHECKPOINT --faces FACES.h5</code> to see the prototype faces "
                "and the model's reading of them.</p>", None)
    from mcmcp.densities import class_centroids
    from vae.checkpoint import load_checkpoint
    from vae.datasets import read_store
    from vae.labels import EMOTIONS

    loaded = load_checkpoint(checkpoint, expect_latent_dim=d)
    unrecorded = pt.check_model(sessions, loaded.sha256, checkpoint)
    centroids = None if faces is None else class_centroids(loaded, read_store(faces))
    table = pt.model_comparison(table, loaded.model, EMOTIONS, centroids)
    chosen = _preferred(table)
    images = pt.decode(loaded.model, pt.table_vectors(chosen))
    page.figure(figures.prototype_faces(chosen, images), "faces",
                f"Prototype faces decoded with {Path(checkpoint).name} (sha256 "
                f"{loaded.sha256[:12]}...): rows are participants and the group, columns emotions. "
                "For guided sessions the de-guided (PSIS) prototype is drawn.")
    note = ""
    if unrecorded:
        note = (f"<p class='warn'>{len(unrecorded)} session(s) recorded no model checkpoint, so "
                "their faces are drawn with the given model without a check that it is the one "
                "the chains ran on.</p>")
    if faces is None:
        note += "<p>No face store given: distances to the data's class centroids are omitted.</p>"
    return note, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="participants_data/ tree, a sub-<id> folder or a ses-<NN> "
                                     "folder")
    parser.add_argument("--out", required=True, help="report folder (created; files replaced)")
    parser.add_argument("--checkpoint", help="VAE checkpoint the sessions ran with")
    parser.add_argument("--faces", help="face store (HDF5) for the class centroids")
    parser.add_argument("--burn-in", type=_burn_in, default=0.5,
                        help="fraction of each chain (0.5) or number of steps (100) to discard")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--min-catch-accuracy", type=float, default=dg.MIN_CATCH_ACCURACY)
    args = parser.parse_args(argv)
    if args.faces and not args.checkpoint:
        parser.error("--faces needs --checkpoint (the faces are encoded with that model)")
    if not 0 <= args.min_catch_accuracy <= 1:
        parser.error(f"--min-catch-accuracy {args.min_catch_accuracy}: must be in [0, 1]")
    try:
        path = build_report(args.data, args.out, args.checkpoint, args.faces, args.burn_in,
                            args.bootstrap, args.seed, args.min_catch_accuracy)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
