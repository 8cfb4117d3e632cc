"""Prototypes: where on the sphere each emotion's chains settle, how sure we are, and what face
that is.

Per emotion (per participant and for the group), from the post-burn-in states:
- mean direction and concentration: the vMF maximum-likelihood fit (`scipy.stats.vonmises_fisher
  .fit`; a weighted MLE of the same form when states carry importance weights);
- mode: the peak of a vMF kernel density (rule-of-thumb bandwidth: Garcia-Portugues 2013 on S^2,
  Taylor 2008 on the circle), found on a Fibonacci grid and climbed to by mean shift with Newton
  steps (the same peak plain mean shift reaches, to 1e-6 degrees);
- 95% confidence cone: the angle around the mean containing 95% of bootstrap means when whole
  chains are resampled with replacement (states within a chain are correlated, chains are not);
- guided chains sample p * g^gamma, not the person's p: "de-guided (PSIS)" estimates reweight
  each state by g(x)^-gamma (from the recorded log_gate), Pareto-smoothed with `arviz.psislw`;
  k-hat > 0.7 means the weights are unreliable (warned and flagged); "guided (as sampled)" keeps
  the raw states.
With a checkpoint: decoded faces, the classifier's probabilities and the angle to each emotion's
class centroid of the encoded face set. Densities are also evaluated on grids for the maps and the
between-emotion overlap (Bhattacharyya coefficient).

Angles are radians inside, degrees in table columns (`_deg`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import torch
from scipy.optimize import brentq
from scipy.special import ive, logsumexp
from scipy.stats import vonmises_fisher

from analysis.load import DEFAULT_BURN_IN, KEYS, post_burn_in
from mcmcp.sampling import sphere
from mcmcp.sampling.densities import VMFMixture

KHAT_MAX = 0.7
KDE_CELLS = 2**20  # (point, sample) pairs per chunk of a kernel density: ~25 MB of temporaries
BOOT_BATCH = 256  # bootstrap replicates drawn at a time
MODE_GRID_SAMPLES = 4000  # samples scoring the grid that picks kde_mode's starting points
UNGUIDED, GUIDED, DEGUIDED = "unguided", "guided (as sampled)", "de-guided (PSIS)"


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle angle in degrees between unit vectors, broadcast over (..., d)."""
    return np.degrees(sphere.geodesic(np.asarray(a, float), np.asarray(b, float)))


# ----------------------------------------------------------------------------- vMF fit


def _mean_resultant_to_kappa(rbar: float, d: int) -> float:
    """Solve A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = rbar for kappa (the vMF MLE)."""
    if rbar < 1e-12:
        return 0.0
    rbar = min(rbar, 1.0 - 1e-12)
    ratio = lambda k: ive(d / 2.0, k) / ive(d / 2.0 - 1.0, k) - rbar  # noqa: E731
    if ratio(1e8) <= 0:  # (nearly) all the weight on one point: as concentrated as it gets
        return 1e8
    return float(brentq(ratio, 1e-10, 1e8))


def fit_vmf(x: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """vMF maximum-likelihood (mean direction (d,), kappa) of unit vectors x (n, d).

    Unweighted: `scipy.stats.vonmises_fisher.fit`. Weighted (importance weights, any scale):
    the same MLE with weighted sums.
    """
    if weights is None:
        mu, kappa = vonmises_fisher.fit(x)
        return np.asarray(mu), float(kappa)
    w = np.asarray(weights, float) / np.sum(weights)
    resultant = w @ x
    rbar = float(np.linalg.norm(resultant))
    return resultant / rbar, _mean_resultant_to_kappa(rbar, x.shape[1])


# ----------------------------------------------------------------------------- kernel density


def kernel_kappa(kappa_hat: float, n: int, d: int) -> float:
    """Rule-of-thumb vMF kernel concentration for n points from a vMF with concentration kappa_hat.

    d = 3: Garcia-Portugues (2013) h^6 = 8 sinh^2(k) / (k n [(1 + 4k^2) sinh 2k - 2k cosh 2k]),
    written with exp(-2k) factored out so it holds for large k; kernel kappa = 1 / h^2.
    d = 2: Taylor (2008) nu = [3 n k^2 I_2(2k) / (4 sqrt(pi) I_0(k)^2)]^(2/5).
    """
    k = max(float(kappa_hat), 1e-3)
    if d == 3:
        e2, e4 = np.exp(-2 * k), np.exp(-4 * k)
        num = 8.0 * ((1.0 - e2) / 2.0) ** 2
        den = k * n * ((1 + 4 * k**2) * (1.0 - e4) / 2.0 - 2 * k * (1.0 + e4) / 2.0)
        return float((num / den) ** (-1.0 / 3.0))
    if d == 2:
        return float((3 * n * k**2 * ive(2, 2 * k) / (4 * np.sqrt(np.pi) * ive(0, k) ** 2))
                     ** 0.4)
    raise ValueError(f"kernel densities are implemented for d = 2 or 3, not d = {d}")


def kde_logpdf(points: np.ndarray, samples: np.ndarray, weights: np.ndarray | None,
               kappa: float, max_cells: int = KDE_CELLS) -> np.ndarray:
    """log of the vMF kernel density sum_i w_i vMF(points; samples_i, kappa) (w sums to 1).

    points (m, d), samples (n, d) -> (m,), a density w.r.t. surface area. Points are taken in
    chunks of at most `max_cells` (point, sample) pairs (at least one point), so memory stays
    bounded (~3 x 8 bytes x max_cells) however many samples there are.
    """
    n, d = samples.shape
    logw = np.log(np.full(n, 1.0 / n) if weights is None else weights / np.sum(weights))
    chunk = max(1, max_cells // max(n, 1))
    out = np.empty(len(points))
    for s in range(0, len(points), chunk):
        a = kappa * points[s:s + chunk] @ samples.T + logw
        top = a.max(axis=1, keepdims=True)  # scipy's logsumexp is ~5x slower on this shape
        out[s:s + chunk] = np.log(np.exp(a - top).sum(axis=1)) + top[:, 0]
    return out + sphere.log_vmf_normaliser(kappa, d)


def grid(n: int, d: int) -> np.ndarray:
    """An even, equal-area grid of n points on S^(d-1) (Fibonacci lattice / equal angles)."""
    return sphere.fibonacci_sphere(n, d)


def _start_scores(points: np.ndarray, samples: np.ndarray, weights: np.ndarray | None,
                  kappa: float, max_cells: int = 2**16) -> np.ndarray:
    """The vMF kernel density at points (m, d) up to a constant factor, (m,) float32.

    Only ranks points (kde_mode's starting points), so float32 is precise enough: the kernel
    exp(kappa (p.x - 1)) is at most 1 (no overflow, no log-sum-exp needed) and one matrix
    product with the weights sums it, in chunks that stay in the processor's cache; several
    times faster than `kde_logpdf`. All zeros when every kernel underflows (points far from
    every sample at a huge kappa).
    """
    scaled = (kappa * samples).astype(np.float32).T  # (d, n)
    w32 = (np.full(len(samples), 1.0 / len(samples)) if weights is None
           else weights / np.sum(weights)).astype(np.float32)
    p32 = points.astype(np.float32)
    chunk = max(16, max_cells // max(len(samples), 1))
    out = np.empty(len(points), np.float32)
    for s in range(0, len(points), chunk):
        a = p32[s:s + chunk] @ scaled
        a -= np.float32(kappa)
        np.exp(a, out=a)
        out[s:s + chunk] = a @ w32
    return out


def kde_mode(samples: np.ndarray, weights: np.ndarray | None, kappa: float,
             n_grid: int = 4000, n_starts: int = 8, iterations: int = 300) -> np.ndarray:
    """The highest point (d,) of the vMF kernel density.

    The density is scored on an even grid; mean shift (`_mean_shift`, which climbs to a local
    peak) starts from the `n_starts` best grid points, and the highest peak reached wins, so a
    coarse grid cannot miss the summit. The climb and the final comparison use every sample;
    the grid is scored with at most MODE_GRID_SAMPLES of them.
    """
    d = samples.shape[1]
    g = grid(n_grid if d == 3 else 720, d)
    # the grid only chooses where to start climbing: scored with an even thinning of a large
    # sample (successive chain states are nearly equal, the thinned density has the same hills)
    step = int(np.ceil(len(samples) / MODE_GRID_SAMPLES))
    few, few_w = samples[::step], None if weights is None else weights[::step]
    scores = _start_scores(g, few, few_w, kappa)
    if not scores.max() > 0:
        scores = kde_logpdf(g, few, few_w, kappa)
    starts = g[np.argsort(scores, kind="stable")[-n_starts:]]  # (k, d)
    peaks = _mean_shift(starts, samples, weights, kappa, iterations)
    return peaks[np.argmax(kde_logpdf(peaks, samples, weights, kappa))]


def _mean_shift(m: np.ndarray, samples: np.ndarray, weights: np.ndarray | None, kappa: float,
                iterations: int) -> np.ndarray:
    """Climb from each start (k, d) to its peak of f(m) = sum_i w_i exp(kappa x_i.m).

    A step is the mean-shift step m <- normalise(sum_i w_i exp(kappa x_i.m) x_i), which always
    climbs but slowly (linear convergence, ~200 steps to 1e-12), or, wherever f is concave on
    the sphere around m, Newton's step on the sphere (gradient and Hessian of f projected on the
    tangent plane), which reaches the same peak in a few steps. Each start climbs on its own
    and stops once it moves less than 1e-12.
    """
    n, d = samples.shape
    m = np.array(m, dtype=float)
    scaled = kappa * samples
    outer = (samples[:, :, None] * samples[:, None, :]).reshape(n, d * d)
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    eye = np.eye(d)
    moving = np.ones(len(m), bool)
    for _ in range(iterations):
        cur = m[moving]
        logit = cur @ scaled.T
        k = np.exp(logit - logit.max(axis=1, keepdims=True)) * w
        k /= k.sum(axis=1, keepdims=True)  # (r, n) kernel weights summing to 1
        s = k @ samples  # (r, d): their mean, the gradient of f over kappa f
        new = sphere.normalize(s)  # the mean-shift step
        ms = np.sum(s * cur, axis=1)
        proj = eye - cur[:, :, None] * cur[:, None, :]  # (r, d, d) tangent projectors
        # Hessian on the sphere over kappa f: kappa P E[x x'] P - (m.s) P; -m m' makes it
        # invertible along m, so the Newton step v solves it and stays tangent (v.m = 0)
        system = (kappa * proj @ (k @ outer).reshape(-1, d, d) @ proj
                  - ms[:, None, None] * proj - cur[:, :, None] * cur[:, None, :])
        concave = (np.linalg.eigvalsh(system) < -1e-6).all(axis=1)
        if concave.any():
            grad = s[concave] - ms[concave, None] * cur[concave]
            v = np.linalg.solve(system[concave], -grad[:, :, None])[:, :, 0]
            new[concave] = sphere.normalize(cur[concave] + v)
        step = np.abs(new - cur).max(axis=1)
        m[moving] = new
        moving[np.flatnonzero(moving)[step < 1e-12]] = False
        if not moving.any():
            break
    return m


def thin(x: np.ndarray, max_points: int) -> np.ndarray:
    """Every k-th row of x so that at most max_points remain (deterministic)."""
    return x[:: int(np.ceil(len(x) / max_points))] if len(x) > max_points else x


# ----------------------------------------------------------------------------- weights, cones


def deguide_weights(log_gate: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, float, float]:
    """PSIS importance weights w ∝ g(x)^-gamma removing the gatekeeper from guided states.

    log_gate, gamma: (n,), NaN gamma = the state came from an unguided chain (weight 1 before
    normalising). Returns (weights (n,) summing to 1, k-hat, ESS of the weights = 1 / sum w^2).
    """
    gamma = np.nan_to_num(np.asarray(gamma, float), nan=0.0)
    log_w = -gamma * np.nan_to_num(np.asarray(log_gate, float), nan=0.0)
    smoothed, khat = az.psislw(log_w)
    if not np.isfinite(smoothed).all():
        # the tail is one value repeated (a chain sat on one state): there is nothing to smooth,
        # and the Pareto fit divides by zero
        smoothed = log_w
    w = np.exp(smoothed - logsumexp(smoothed))
    return w, float(khat), float(1.0 / np.sum(w**2))


def bootstrap_cone(chain_index: np.ndarray, x: np.ndarray, weights: np.ndarray | None,
                   center: np.ndarray, n_boot: int, rng: np.random.Generator,
                   level: float = 0.95) -> float:
    """Angle (degrees) around `center` holding `level` of the means of chain-resampled data.

    chain_index (n,) ints 0..C-1 naming each state's chain; x (n, d); weights (n,) or None.
    NaN with fewer than 2 chains (nothing to resample). A replicate's mean is the sum of its
    chains' weighted sums, so only the C per-chain sums are kept and replicates are drawn
    BOOT_BATCH at a time: memory does not grow with n_boot or with the number of states.
    """
    n_chains = int(chain_index.max()) + 1
    if n_chains < 2:
        return float("nan")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, float)
    sums = np.stack([np.bincount(chain_index, w * x[:, j], n_chains)
                     for j in range(x.shape[1])], axis=1)  # (C, d)
    angles = np.empty(n_boot)
    for start in range(0, n_boot, BOOT_BATCH):
        b = min(BOOT_BATCH, n_boot - start)
        picks = rng.integers(0, n_chains, size=(b, n_chains))
        counts = np.zeros((b, n_chains))
        np.add.at(counts, (np.arange(b)[:, None], picks), 1.0)
        angles[start:start + b] = angle_deg(sphere.normalize(counts @ sums), center)
    return float(np.quantile(angles, level))


# ----------------------------------------------------------------------------- prototypes


def chain_ess(states: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN) -> dict:
    """Effective sample size of each chain's post-burn-in states: ArviZ bulk ESS of the worst
    coordinate (a chain of fewer than 4 states counts each state). {(participant, session,
    chain): ess}. Successive MCMC states are correlated, so a kernel bandwidth rule fed the raw
    count would undersmooth: `prototypes` feeds it the sum over a group's chains."""
    kept = post_burn_in(states, burn_in)
    xcols = [c for c in kept.columns if c.startswith("x_")]
    x = kept[xcols].to_numpy(float)
    return {key: _one_chain_ess(x[rows])
            for key, rows in kept.groupby(KEYS, sort=True).indices.items()}


def _one_chain_ess(xc: np.ndarray) -> float:
    """ESS of one chain's states (n, d): bulk ESS of the worst coordinate (n below 4: n)."""
    if len(xc) < 4:
        return float(len(xc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a stuck chain: 0/0
        ess = [float(az.ess(xc[None, :, i])) for i in range(xc.shape[1])]
    return float(np.nanmin(ess)) if not np.isnan(ess).all() else 1.0


def effective_n(x: np.ndarray, chain_index: np.ndarray) -> float:
    """Effective number of independent states among x (n, d) from the chains `chain_index`
    (n,): the chains' ESS summed, within [2, n] (`chain_ess` for arrays)."""
    total = sum(_one_chain_ess(x[chain_index == c]) for c in np.unique(chain_index))
    return float(min(max(total, 2.0), len(x)))


def _estimate(x, weights, chain_index, n_eff, n_boot, rng, n_grid) -> dict:
    d = x.shape[1]
    mean, kappa = fit_vmf(x, weights)
    if weights is not None:  # importance weights cost effective samples too (Kish)
        w = weights / weights.sum()
        n_eff = max(n_eff / (len(x) * np.sum(w**2)), 2.0)
    kk = kernel_kappa(kappa, int(n_eff), d)
    mode = kde_mode(x, weights, kk, n_grid)
    return {
        **{f"mean_{i}": mean[i] for i in range(d)},
        **{f"mode_{i}": mode[i] for i in range(d)},
        "kappa": kappa, "n_eff": n_eff, "kernel_kappa": kk,
        "mode_to_mean_deg": float(angle_deg(mode, mean)),
        "cone95_deg": bootstrap_cone(chain_index, x, weights, mean, n_boot, rng),
    }


def prototypes(states: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN,
               by: list[str] | None = None, n_boot: int = 1000, seed: int = 0,
               n_grid: int = 4000, ess: dict | None = None) -> pd.DataFrame:
    """Prototype estimates per emotion and per `by` group.

    by: ["participant"] (default) or [] for the group (every chain of the emotion pooled; the
    participant column then reads 'all'). One row per group x emotion x estimate, where estimate is
    'unguided', or for groups with guided chains both 'guided (as sampled)' and 'de-guided (PSIS)'.
    Columns: participant, emotion, estimate, n_chains, n_states, mean_0.., mode_0.., kappa,
    n_eff (effective number of states, used for the kernel bandwidth), kernel_kappa,
    mode_to_mean_deg, cone95_deg, khat, weight_ess, khat_warning.
    ess: `chain_ess(states, burn_in)` when the caller has it already (None: computed here).
    """
    by = ["participant"] if by is None else by
    by_chain = chain_ess(states, burn_in) if ess is None else ess
    rng = np.random.default_rng(seed)
    kept = post_burn_in(states, burn_in)
    xcols = [c for c in kept.columns if c.startswith("x_")]
    groups = kept.groupby([*by, "emotion"], sort=True)
    rows, unreliable = [], []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = dict(zip([*by, "emotion"], key, strict=True))
        label.setdefault("participant", "all")
        x = group[xcols].to_numpy(float)
        chain_index = group.groupby(KEYS, sort=True).ngroup().to_numpy()
        base = {**label, "n_chains": int(chain_index.max()) + 1, "n_states": len(x)}
        gamma = group["gate_gamma"].to_numpy(float, na_value=np.nan)
        total = 0.0
        for key in group[KEYS].drop_duplicates().sort_values(KEYS).itertuples(index=False):
            total += by_chain[tuple(key)]
        n_eff = float(min(max(total, 2.0), len(x)))
        if (np.nan_to_num(gamma) == 0).all():  # no gate, or an annealed gate already off
            rows.append({**base, "estimate": UNGUIDED,
                         **_estimate(x, None, chain_index, n_eff, n_boot, rng, n_grid)})
            continue
        rows.append({**base, "estimate": GUIDED,
                     **_estimate(x, None, chain_index, n_eff, n_boot, rng, n_grid)})
        w, khat, w_ess = deguide_weights(group["log_gate"].to_numpy(float, na_value=np.nan),
                                         gamma)
        if khat > KHAT_MAX:
            unreliable.append(", ".join(f"{k} {v}" for k, v in label.items())
                              + f" (k-hat {khat:.2f})")
        rows.append({**base, "estimate": DEGUIDED, "khat": khat, "weight_ess": w_ess,
                     "khat_warning": khat > KHAT_MAX,
                     **_estimate(x, w, chain_index, n_eff, n_boot, rng, n_grid)})
    if unreliable:  # one warning, not one per participant and emotion
        warnings.warn(f"PSIS k-hat > {KHAT_MAX} for {len(unreliable)} de-guided prototype(s): "
                      f"{'; '.join(unreliable[:5])}{'; ...' if len(unreliable) > 5 else ''}: "
                      "each rests on a few heavily weighted states and is unreliable (column "
                      "khat_warning of the prototypes table)", stacklevel=2)
    table = pd.DataFrame(rows)
    first = ["participant", "emotion", "estimate", "n_chains", "n_states"]
    for col in ("khat", "weight_ess", "khat_warning"):
        if col not in table:
            table[col] = np.nan
    table["khat_warning"] = table["khat_warning"].astype("boolean")
    return table[first + [c for c in table.columns if c not in first]]


def table_vectors(table: pd.DataFrame, prefix: str = "mean") -> np.ndarray:
    """The (n, d) unit vectors stored in a table's `<prefix>_0..` columns."""
    cols = sorted((c for c in table.columns if c.startswith(prefix + "_") and c[-1].isdigit()),
                  key=lambda c: int(c.rsplit("_", 1)[1]))
    return table[cols].to_numpy(float)


def truth_table(sessions: pd.DataFrame) -> pd.DataFrame:
    """Known true prototypes of simulated participants, from session.json `ground_truth` as
    `mcmcp.simulate` writes it: {"kind": ..., "densities": {emotion: VMFMixture.to_dict()}}.

    The true prototype of an emotion is its density's mode (`VMFMixture.mode`: the mean of the
    heaviest component); truth_kappa is that component's concentration. Columns: participant,
    emotion, truth_0.., truth_kappa. Empty when no session records a ground truth. A ground
    truth in another form is a ValueError naming the session file.
    """
    rows = []
    if "ground_truth" in sessions:
        for row in sessions.itertuples():
            if not isinstance(row.ground_truth, dict):
                continue
            where = Path(getattr(row, "folder", "")) / "session.json"
            try:
                densities = {emotion: VMFMixture.from_dict(spec)
                             for emotion, spec in row.ground_truth["densities"].items()}
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise ValueError(
                    f"{where}: ground_truth must hold 'densities': {{emotion: {{'means', "
                    f"'kappas', 'weights'}}}}, as mcmcp.simulate writes it "
                    f"({type(err).__name__}: {err})") from None
            for emotion, dens in densities.items():
                heaviest = int(np.argmax(dens.weights))
                rows.append({"participant": row.participant, "emotion": emotion,
                             **{f"truth_{i}": v for i, v in enumerate(dens.mode())},
                             "truth_kappa": float(dens.kappas[heaviest])})
    return pd.DataFrame(rows).drop_duplicates(["participant", "emotion"]) if rows else pd.DataFrame()


def add_truth_angles(table: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """`table` with truth_deg: the angle from each prototype mean to the known truth. For the
    group ('all') the truth is used when every participant shares the same one."""
    if truth.empty:
        return table.assign(truth_deg=np.nan)
    group = truth.drop(columns="participant").groupby("emotion").agg(
        lambda c: c.iloc[0] if np.allclose(c, c.iloc[0]) else np.nan).reset_index()
    truth = pd.concat([truth, group.assign(participant="all")], ignore_index=True)
    merged = table.merge(truth, on=["participant", "emotion"], how="left")
    merged["truth_deg"] = angle_deg(table_vectors(merged, "mean"), table_vectors(merged, "truth"))
    return merged.drop(columns=[c for c in merged.columns if c.startswith("truth_")
                                and c != "truth_deg"])


# ----------------------------------------------------------------------------- the VAE side


def check_model(sessions: pd.DataFrame, checkpoint_sha256: str, checkpoint_path: str | Path) -> list[str]:
    """Refuse a checkpoint that is not the one the sessions ran with (ValueError naming both
    hashes and the files). Returns the session folders that recorded no checkpoint hash."""
    recorded = sessions.get("checkpoint_sha256", pd.Series([None] * len(sessions)))
    unrecorded = []
    for folder, sha in zip(sessions["folder"], recorded, strict=True):
        if not isinstance(sha, str) or not sha:
            unrecorded.append(str(folder))
        elif sha != checkpoint_sha256:
            raise ValueError(
                f"{Path(folder) / 'session.json'} was run with the checkpoint of sha256 {sha}, but "
                f"{checkpoint_path} has sha256 {checkpoint_sha256}; decode with the model that ran "
                "the session (or analyse sessions of different models separately)")
    return unrecorded


def decode(model: torch.nn.Module, z: np.ndarray, identity: torch.Tensor | None = None
           ) -> np.ndarray:
    """Unit codes (n, d) -> face images (n, H, W) in [0, 1]; identity: (n, k) identity codes,
    one child per face (identity models; None: the model's default child)."""
    with torch.no_grad():
        z = torch.from_numpy(np.array(z, dtype=np.float32))
        out = model.decode(z) if identity is None else model.decode(z, identity)
        return out[:, 0].numpy()


def children_seen(trials: pd.DataFrame) -> pd.DataFrame:
    """The child each participant saw most often per emotion, over their shown chain trials:
    columns participant, emotion, identity, plus the study's rows (participant 'all') with the
    most common child of every emotion. Ties go to the id first in sorted order. Empty when
    the rows record no child (files from before the `identity` column, plain models)."""
    if "identity" not in trials:
        return pd.DataFrame(columns=["participant", "emotion", "identity"])
    shown = trials.loc[(trials["kind"] == "chain") & trials["identity"].notna(),
                       ["participant", "emotion", "identity"]]
    if shown.empty:
        return pd.DataFrame(columns=["participant", "emotion", "identity"])
    shown = shown.astype(str)

    def most_common(by: list[str]) -> pd.DataFrame:
        counts = shown.groupby([*by, "identity"]).size().rename("n").reset_index()
        counts = counts.sort_values([*by, "n", "identity"], ascending=[True] * len(by)
                                    + [False, True], kind="stable")
        return counts.drop_duplicates(by)[[*by, "identity"]]

    return pd.concat([most_common(["participant", "emotion"]),
                      most_common(["emotion"]).assign(participant="all")],
                     ignore_index=True)[["participant", "emotion", "identity"]]


def classify(model: torch.nn.Module, z: np.ndarray) -> np.ndarray:
    """Unit codes (n, d) -> the classifier's probabilities (n, n_classes)."""
    with torch.no_grad():
        return torch.softmax(model.classify(torch.from_numpy(np.array(z, dtype=np.float32))), -1).numpy()


def model_comparison(table: pd.DataFrame, model: torch.nn.Module, label_names: tuple[str, ...],
                     centroids: dict[str, np.ndarray] | None) -> pd.DataFrame:
    """`table` plus the classifier's probability of each emotion for each prototype mean
    (p_<emotion>), p_target (that of the prototype's own emotion) and centroid_deg (angle from the
    mean to its emotion's class centroid in the encoded face set, when centroids are given)."""
    mean = table_vectors(table, "mean")
    probs = classify(model, mean)
    out = table.copy()
    for k, name in enumerate(label_names):
        out[f"p_{name}"] = probs[:, k]
    index = {name: k for k, name in enumerate(label_names)}
    out["p_target"] = [probs[i, index[e]] if e in index else np.nan
                       for i, e in enumerate(out["emotion"])]
    if centroids is not None:
        out["centroid_deg"] = [float(angle_deg(mean[i], centroids[e])) if e in centroids else np.nan
                               for i, e in enumerate(out["emotion"])]
    return out


# ----------------------------------------------------------------------------- maps, overlap


def emotion_densities(states: pd.DataFrame, burn_in: float | int, at: np.ndarray,
                      max_points: int = 2000) -> dict[str, np.ndarray]:
    """Kernel density (per unit area) of each emotion's post-burn-in states at `at` (m, d);
    every chain pooled, thinned to at most `max_points` states (neighbouring states of a chain
    are nearly equal, so thinning loses little), bandwidth by `kernel_kappa`."""
    kept = post_burn_in(states, burn_in)
    xcols = [c for c in kept.columns if c.startswith("x_")]
    out = {}
    for emotion, group in kept.groupby("emotion", sort=True):
        x = thin(group[xcols].to_numpy(float), max_points)
        kk = kernel_kappa(fit_vmf(x)[1], len(x), x.shape[1])  # maps: raw count, sharper picture
        out[str(emotion)] = np.exp(kde_logpdf(at, x, None, kk))
    return out


def overlap(states: pd.DataFrame, burn_in: float | int = DEFAULT_BURN_IN,
            n_grid: int = 6000) -> pd.DataFrame:
    """Bhattacharyya coefficient BC = ∫ sqrt(p q) dA between every two emotions' densities
    (1 = the same region, 0 = disjoint), integrated over an equal-area grid. Square table."""
    d = sum(c.startswith("x_") for c in states.columns)
    g = grid(n_grid, d)
    cell = (4 * np.pi if d == 3 else 2 * np.pi) / len(g)
    dens = emotion_densities(states, burn_in, g)
    names = list(dens)
    root = np.sqrt(np.stack([dens[e] for e in names]))
    return pd.DataFrame(root @ root.T * cell, index=names, columns=names)
