"""The report's figures, drawn with matplotlib (Agg): each function takes tables and returns a
Figure; saving is the caller's job. Maps need d = 3 (the ordinary sphere) and use the equal-area
Mollweide projection (longitude/latitude of the unit vectors, `mcmcp.sampling.sphere.to_lonlat`).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.checks import first_kept_step  # noqa: E402
from analysis.load import KEYS  # noqa: E402
from analysis.prototypes import angle_deg, emotion_densities, table_vectors  # noqa: E402
from mcmcp.sampling import sphere  # noqa: E402

NCOLS = 4
MAX_TRACES = 48  # chains per emotion drawn one line each; more are summarised by bands
MAX_BAR_LABELS = 40  # participants named on the quality figure's axis


def _panels(n: int, projection: str | None = None, size=(3.6, 2.0)) -> tuple[Figure, list]:
    ncols = min(n, NCOLS)
    nrows = int(np.ceil(n / ncols))
    fig = plt.figure(figsize=(size[0] * ncols, size[1] * nrows + 0.5), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1, projection=projection) for i in range(n)]
    return fig, axes


def _lonlat_path(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lon, lat of a path with NaN breaks where it wraps around the map's edge."""
    lon, lat = sphere.to_lonlat(x)
    wrap = np.flatnonzero(np.abs(np.diff(lon)) > np.pi) + 1
    return np.insert(lon, wrap, np.nan), np.insert(lat, wrap, np.nan)


def _style_map(ax, title: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.grid(True, lw=0.3, alpha=0.5)


def _mark(ax, x: np.ndarray, **style) -> None:
    lon, lat = sphere.to_lonlat(np.asarray(x, float))
    ax.plot(lon, lat, ls="none", **style)


def _cone(ax, center: np.ndarray, angle_deg_: float, **style) -> None:
    """Draw the circle of points `angle_deg_` from center (a confidence cone's rim)."""
    if not np.isfinite(angle_deg_):
        return
    other = np.eye(3)[np.argmin(np.abs(center))]
    t1 = sphere.normalize(np.cross(center, other))
    t2 = np.cross(center, t1)
    phi = np.linspace(0, 2 * np.pi, 181)[:, None]
    a = np.radians(angle_deg_)
    ring = np.cos(a) * center + np.sin(a) * (np.cos(phi) * t1 + np.sin(phi) * t2)
    ax.plot(*_lonlat_path(ring), **style)


def trajectories(states: pd.DataFrame, participant: str, burn_in: float | int,
                 protos: pd.DataFrame, truth: pd.DataFrame | None = None) -> Figure:
    """One participant's chains on the sphere (d = 3), a panel per emotion.

    Burn-in steps (and an annealed chain's steps with the gate still on) are drawn thin and
    faded, kept steps solid; circles mark starts, the black star
    the participant's prototype (mean), the red cross the true prototype when known.
    """
    own = states[states["participant"] == participant]
    emotions = sorted(own["emotion"].unique())
    fig, axes = _panels(len(emotions), "mollweide")
    xcols = [c for c in own.columns if c.startswith("x_")]
    colors = plt.get_cmap("tab10")
    for ax, emotion in zip(axes, emotions, strict=True):
        chains = own[own["emotion"] == emotion].groupby(KEYS, sort=True)
        for i, (_, ch) in enumerate(chains):
            x = ch[xcols].to_numpy(float)
            cut = max(int(first_kept_step(ch, burn_in)[0]), 1)
            color = colors(i % 10)
            ax.plot(*_lonlat_path(x[:cut]), color=color, lw=0.6, alpha=0.35)
            ax.plot(*_lonlat_path(x[cut - 1:]), color=color, lw=0.9, alpha=0.9)
            _mark(ax, x[:1], marker="o", ms=5, color=color, mec="k", mew=0.5)
        row = protos[(protos["participant"] == participant) & (protos["emotion"] == emotion)]
        if len(row):
            _mark(ax, table_vectors(row.iloc[[-1]]), marker="*", ms=14, color="k", mec="w")
        if truth is not None and not truth.empty:
            t = truth[(truth["participant"] == participant) & (truth["emotion"] == emotion)]
            if len(t):
                _mark(ax, table_vectors(t, "truth"), marker="X", ms=9, color="red", mec="w")
        _style_map(ax, emotion)
    fig.suptitle(f"Participant {participant}: the path of each chain over the face space "
                 "(o start, faded = burn-in, \u2605 prototype" +
                 (", red X true prototype)" if truth is not None and not truth.empty else ")"),
                 fontsize=11)
    return fig


def convergence_traces(states: pd.DataFrame, burn_in: float | int,
                       group_protos: pd.DataFrame, flagged: list[str] = ()) -> Figure:
    """Distance (degrees) of every chain from its emotion's group prototype, step by step.

    Chains that have converged hover at the same distance band; the grey band is the discarded
    part of a typical chain (the burn-in, and in annealed chains every step with the gate on).
    Up to MAX_TRACES chains per emotion are drawn one line each, coloured by participant; more
    are drawn as the median and the bands holding the middle 50% and 90% of chains at each step.
    """
    emotions = sorted(states["emotion"].unique())
    fig, axes = _panels(len(emotions), size=(3.8, 2.6))
    xcols = [c for c in states.columns if c.startswith("x_")]
    participants = sorted(states["participant"].unique())
    colors = plt.get_cmap("tab10")
    lines = states.groupby([*KEYS, "emotion"]).ngroups <= MAX_TRACES * len(emotions)
    for ax, emotion in zip(axes, emotions, strict=True):
        own = states[states["emotion"] == emotion]
        center = table_vectors(group_protos[group_protos["emotion"] == emotion].iloc[[-1]])[0]
        angle = angle_deg(own[xcols].to_numpy(float), center)
        if lines:
            for _, rows in own.groupby(KEYS, sort=True).indices.items():
                p = own["participant"].iloc[rows[0]]
                ax.plot(own["step"].to_numpy()[rows], angle[rows],
                        color=colors(participants.index(p) % 10), lw=0.7, alpha=0.7)
        else:
            by_step = pd.Series(angle).groupby(own["step"].to_numpy())
            q = by_step.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).unstack()
            # where only the few longest chains remain (gate steps vary), bands mislead
            q = q[by_step.size() >= 0.1 * own.groupby(KEYS).ngroups]
            ax.fill_between(q.index, q[0.05], q[0.95], color="tab:blue", alpha=0.2, lw=0)
            ax.fill_between(q.index, q[0.25], q[0.75], color="tab:blue", alpha=0.4, lw=0)
            ax.plot(q.index, q[0.5], color="tab:blue", lw=1.2)
        firsts = pd.Series(first_kept_step(own, burn_in)).groupby(
            own.groupby(KEYS, sort=False).ngroup().to_numpy()).first()
        cut = float(np.median(firsts))
        ax.axvspan(0, cut, color="0.85", zorder=0)
        ax.set_title(emotion, fontsize=11)
        ax.set_xlabel("step of the chain")
        ax.set_ylabel("degrees from prototype")
        ax.set_ylim(0, 180)
    if lines:
        handles = [plt.Line2D([], [], color=colors(i % 10),
                              label=p + (" (flagged)" if p in flagged else ""))
                   for i, p in enumerate(participants)]
        fig.legend(handles=handles[:20], loc="outside right upper", fontsize=8,
                   title="participant")
        title = "every chain's distance from the group prototype"
    else:
        title = (f"distance of the {states.groupby(KEYS).ngroups} chains from the group "
                 "prototype: median, middle 50% and 90%")
    fig.suptitle(f"Convergence: {title} (grey = discarded: burn-in, and any steps with the "
                 "gate on)", fontsize=11)
    return fig


def density_maps(states: pd.DataFrame, burn_in: float | int, group_protos: pd.DataFrame,
                 n_lon: int = 144, n_lat: int = 72) -> Figure:
    """Where each emotion's kept states lie: kernel density on an equal-area map (d = 3), with
    the group prototype (star) and its 95% confidence cone (white circle)."""
    lon = np.linspace(-np.pi, np.pi, n_lon)
    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat)
    glon, glat = np.meshgrid(lon, lat)
    xyz = np.stack([np.cos(glat) * np.cos(glon), np.cos(glat) * np.sin(glon), np.sin(glat)], -1)
    dens = emotion_densities(states, burn_in, xyz.reshape(-1, 3))
    fig, axes = _panels(len(dens), "mollweide")
    for ax, (emotion, p) in zip(axes, dens.items(), strict=True):
        ax.pcolormesh(glon, glat, p.reshape(glat.shape), cmap="magma", shading="auto")
        row = group_protos[group_protos["emotion"] == emotion].iloc[[-1]]
        center = table_vectors(row)[0]
        _cone(ax, center, float(row["cone95_deg"].iloc[0]), color="c", lw=1.2)
        _mark(ax, center, marker="*", ms=8, color="w", mec="k", mew=0.5)
        _style_map(ax, emotion)
    fig.suptitle("Where the chains spent their time (bright = often; after burn-in, all "
                 "participants pooled). \u2605 group prototype, cyan circle = its 95% confidence cone",
                 fontsize=11)
    return fig


def prototype_map(protos: pd.DataFrame, truth: pd.DataFrame | None = None) -> Figure:
    """Every participant's prototype (dots) and the group's (star) on a map per emotion (d = 3).

    protos: one row per participant x emotion (participant 'all' = the group) with mean_0..2;
    truth: known true prototypes (participant, emotion, truth_0..2) for simulated participants,
    drawn as red crosses (one per distinct truth).
    """
    emotions = sorted(protos["emotion"].unique())
    fig, axes = _panels(len(emotions), "mollweide")
    for ax, emotion in zip(axes, emotions, strict=True):
        own = protos[protos["emotion"] == emotion]
        people = own[own["participant"] != "all"]
        _mark(ax, table_vectors(people), marker="o", ms=4, color="tab:blue", alpha=0.6, mew=0)
        group = own[own["participant"] == "all"]
        if len(group):
            _mark(ax, table_vectors(group.iloc[[-1]]), marker="*", ms=14, color="k", mec="w")
        if truth is not None and not truth.empty:
            t = truth[truth["emotion"] == emotion]
            if len(t):
                _mark(ax, np.unique(table_vectors(t, "truth").round(9), axis=0), marker="X",
                      ms=8, color="red", mec="w")
        _style_map(ax, f"{emotion} ({len(people)} participants)")
    fig.suptitle("Where each participant's prototype lies (dots); \u2605 group prototype" +
                 (", red X true prototype" if truth is not None and not truth.empty else ""),
                 fontsize=11)
    return fig


def overlap_heatmap(matrix: pd.DataFrame) -> Figure:
    """Bhattacharyya overlap between emotions' densities (1 = same region, 0 = separate)."""
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2.5, 0.9 * n + 1.5), layout="constrained")
    im = ax.imshow(matrix.to_numpy(), vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), matrix.index)
    for i in range(n):
        for j in range(n):
            v = matrix.iat[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center",
                    color="w" if v > 0.6 else "k", fontsize=9)
    fig.colorbar(im, ax=ax, label="overlap (Bhattacharyya)")
    ax.set_title("How much the emotions' regions overlap")
    return fig


def prototype_faces(table: pd.DataFrame, images: np.ndarray) -> Figure:
    """Decoded prototype faces: rows = participants (then the group), columns = emotions.

    table: one row per face (participant, emotion, cone95_deg, p_target; optionally identity,
    the child the face is drawn as, named under the row's label), aligned with images
    (n, H, W) in [0, 1].
    """
    rows = list(dict.fromkeys(table["participant"]))
    cols = sorted(table["emotion"].unique())
    h, w = images.shape[1:]
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False, layout="constrained",
                             figsize=(max(1.7 * len(cols) + 0.6, 4.5),
                                      (1.7 * h / w + 0.35) * len(rows) + 0.6))
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, r in enumerate(table.itertuples()):
        ax = axes[rows.index(r.participant), cols.index(r.emotion)]
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=1)
        note = f"\u00b1{r.cone95_deg:.0f}\u00b0" if np.isfinite(r.cone95_deg) else ""
        if "p_target" in table and np.isfinite(r.p_target):
            note += f"  p={r.p_target:.2f}"
        ax.set_title(f"{r.emotion}\n{note}", fontsize=8)
    children = (table.groupby("participant", sort=False)["identity"].first()
                if "identity" in table else {})
    for i, name in enumerate(rows):
        label = "group" if name == "all" else name
        child = children.get(name) if len(children) else None
        if isinstance(child, str) and child:
            label += f"\n(child {child})"
        axes[i, 0].text(-0.08, 0.5, label, rotation=90,
                        transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=9)
    fig.suptitle("Prototype faces\n(\u00b1 95% confidence cone in degrees; "
                 "p = the model's probability of the emotion)", fontsize=9)
    return fig


def mode_faces(table: pd.DataFrame, images: np.ndarray) -> Figure:
    """Decoded faces of the modes of multimodal categories: rows = participant x emotion
    (the group first), columns = modes, heaviest first.

    table: rows of `analysis.checks.inference_checks` (participant, emotion, modes: a list of
    (mean, kappa, weight)); images (n, H, W) in [0, 1]: the modes' faces, row by row.
    """
    n_cols = int(max(len(m) for m in table["modes"]))
    h, w = images.shape[1:]
    fig, axes = plt.subplots(len(table), n_cols, squeeze=False, layout="constrained",
                             figsize=(max(1.9 * n_cols + 1.2, 4.5),
                                      (1.7 * h / w + 0.35) * len(table) + 0.6))
    for ax in axes.ravel():
        ax.set_axis_off()
    k = 0
    for i, row in enumerate(table.itertuples()):
        for j, (_, _, weight) in enumerate(row.modes):
            axes[i, j].imshow(images[k], cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_title(f"mode {j + 1}: {weight:.0%}", fontsize=8)
            k += 1
        who = "group" if row.participant == "all" else row.participant
        axes[i, 0].text(-0.08, 0.5, f"{who}\n{row.emotion}", rotation=90, ha="right",
                        va="center", transform=axes[i, 0].transAxes, fontsize=9)
    fig.suptitle("Faces at the modes of multimodal categories (share of kept states)",
                 fontsize=9)
    return fig


def participant_quality(flags: pd.DataFrame, min_accuracy: float, fast: float) -> Figure:
    """Catch-trial accuracy (flagged participants in red) and response times per participant."""
    n = len(flags)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(min(max(7, 0.5 * n + 5), 14), 3.2),
                                 layout="constrained")
    x = np.arange(n)
    colors = np.where(flags["flagged"], "tab:red", "tab:blue")
    a1.bar(x, flags["accuracy"].fillna(0), color=colors)
    a1.axhline(min_accuracy, color="k", ls="--", lw=1, label=f"threshold {min_accuracy:.0%}")
    a1.axhline(0.5, color="0.5", ls=":", lw=1, label="guessing (50%)")
    a1.set_ylim(0, 1.3)
    a1.set_yticks(np.linspace(0, 1, 6))
    a1.set_ylabel("catch trials correct")
    a1.legend(fontsize=8, loc="upper center", ncols=2)
    a2.errorbar(x, flags["median"], yerr=[flags["median"] - flags["q25"],
                                          flags["q75"] - flags["median"]],
                fmt="o", color="k", ecolor="0.5", capsize=3)
    a2.axhline(fast, color="tab:red", ls="--", lw=1, label=f"too fast (< {fast} s)")
    a2.set_ylabel("response time (s)")
    a2.set_ylim(bottom=0)
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        if n <= MAX_BAR_LABELS:
            ax.set_xticks(x, flags["participant"], rotation=45, ha="right", fontsize=8)
        else:
            ax.set_xlabel(f"{n} participants, in the order of the participants table")
    a1.set_title("Attention checks (red = flagged)", fontsize=10)
    a2.set_title("Response times: median, middle 50%", fontsize=10)
    return fig


def autocorrelation_plot(acf: pd.DataFrame) -> Figure:
    """Mean autocorrelation (over coordinates and chains) by lag, one line per emotion."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2), layout="constrained")
    mean = acf.groupby(["emotion", "lag"])["acf"].mean().unstack(0)
    mean.plot(ax=ax, lw=1.5)
    ax.axhline(0, color="k", lw=0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("lag (steps apart)")
    ax.set_ylabel("autocorrelation")
    ax.set_title("How similar a chain's states are k steps apart (after burn-in)", fontsize=10)
    return fig

