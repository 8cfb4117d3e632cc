"""Synthetic participants: they answer MCMCP trials the way the Luce/Barker choice rule says.

An agent sees two faces (as codes on the sphere, or as decoded images) and picks the right one
with probability
    P(right) = (1 - lapse) * expit(exponent * (log p(right|c) - log p(left|c)) + side_bias)
               + lapse / 2,
i.e. Luce's rule p(r)^g / (p(r)^g + p(l)^g) with decision exponent g, a lapse rate (random answer)
and a logit shift toward "right". Response times are a shifted log-normal, slower when the two
faces are close in preference. Agents plug into the same engine as people; they never touch
chains, files or global random state.

Identity models show each face as one child (`mcmcp.identities`): `choose` takes the trial's
child (`identity`: one id, or (n,) ids, "" or None = the model's default child). Agents that
judge codes (latent, classifier) read expression off the sphere and ignore it; agents that judge
pixels (observer, any `CallableAgent` on images) decode each face as that child.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch
from scipy.special import expit, log_softmax

from mcmcp import table_cache
from mcmcp.sampling.densities import VMFMixture
from mcmcp.specs import ROOT
from vae.labels import canonical_emotion, emotion_index
from vae.memory import keep_freed_memory

AGENT_KINDS = ("latent", "classifier", "observer")
# The observer agent's table (`SphereTable`): 8 cells per cube-face edge (11 degrees), cut in
# 4 up to 3 times (to 1.4 degrees, nodes 0.7 apart) where the corners miss the asked emotion's
# probability at the cell's centre or an edge midpoint by more than 0.003, or its log
# probability by more than 0.2 (the choice between two faces far from the emotion rests on
# it). A 300-trial happy run of 256 chains needs about 21,000 nodes where cutting on every
# emotion's log probability at 0.1 needed 51,000; the settings tried are in docs/faces.md
TABLE_CELLS = 8
TABLE_LEVELS = 3
TABLE_TOLERANCE = 0.003
TABLE_LOG_TOLERANCE = 0.2
# Faces decoded and judged at once. Small batches keep a batch's feature maps in the core's
# cache: at 64x64 on one thread, a face costs 2.4 ms to decode and 0.84 ms to judge in batches
# of 32, against 3.5 and 1.2 ms in batches of 256 (16: no faster than 32)
BATCH = 32
# where the commands (simulate, plan) keep observer tables between runs (`mcmcp.table_cache`),
# beside the default face store; delete it to start over
TABLE_CACHE = ROOT / "data/cache/observer-tables"
CACHE_SIZE = 65536  # codes whose probabilities a CallableAgent remembers (~10 MB)
MIN_PROB = 1e-12  # floor on category probabilities so log p stays finite


class Choice(NamedTuple):
    """Answers to n trials: chose_right (n,) bool, rt (n,) seconds."""

    chose_right: np.ndarray
    rt: np.ndarray


class Agent(Protocol):
    """What the engine needs from a respondent in software. `emotion` is the target emotion of
    every trial, or (n,) names, one per trial (a simulation runs several blocks' chains at once).
    """

    name: str

    def choose(
        self, emotion: str, left: np.ndarray, right: np.ndarray, rng: np.random.Generator,
        identity: str | np.ndarray | None = None,
    ) -> Choice: ...


@dataclass(frozen=True)
class RTModel:
    """rt = shift + exp(log(median) + slowing * difficulty + sigma * N(0, 1)) seconds, where
    difficulty = 1 - |2 P(right) - 1| (1 when both faces are equally good, 0 when one clearly wins).
    """

    shift: float = 0.25
    median: float = 0.55
    slowing: float = 0.6
    sigma: float = 0.35

    def sample(self, p_right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One rt (n,) per trial, from the trials' choice probabilities (n,)."""
        difficulty = 1.0 - np.abs(2.0 * p_right - 1.0)
        z = rng.standard_normal(p_right.shape)
        return self.shift + np.exp(np.log(self.median) + self.slowing * difficulty + self.sigma * z)


@dataclass(frozen=True)
class SliderRTModel:
    """GSP slider trials: rt = shift + exp(log(median) + sigma * N(0, 1)) + drag * steps seconds,
    where steps = slider positions between the handle's start and the confirmed point (a person
    inspects the faces while dragging, so longer drags take longer). An assumption, not a fit:
    Harrison et al. (2020) report slider trials several times longer than 2AFC choices.
    """

    shift: float = 0.5
    median: float = 1.5
    sigma: float = 0.35
    drag: float = 0.1

    def sample(self, steps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One rt (n,) per trial from the slider steps (n,) dragged."""
        z = rng.standard_normal(np.shape(steps))
        return self.shift + np.exp(np.log(self.median) + self.sigma * z) + self.drag * steps


class Slide(NamedTuple):
    """Answers to n GSP trials: choice (n,) circle point confirmed, rt (n,) seconds."""

    choice: np.ndarray
    rt: np.ndarray


def class_columns(emotion: str | np.ndarray, n: int) -> np.ndarray:
    """Classifier columns (n,) (`vae.labels.EMOTIONS` order) of one emotion name for all n rows,
    or of (n,) names."""
    if isinstance(emotion, str):
        return np.full(n, emotion_index(emotion))
    index = {name: emotion_index(name) for name in dict.fromkeys(emotion.tolist())}
    return np.array([index[name] for name in emotion.tolist()], dtype=np.int64)


class LuceAgent:
    """Base of all synthetic agents: the Luce choice rule on `log_preference`.

    Subclasses give `log_preference(emotion, x (n, d)) -> (n,)`, log p(x | emotion) up to a
    constant. exponent >= 0 (0 = indifferent, large = deterministic), lapse in [0, 1],
    side_bias a logit added toward "right" (0 = none).
    """

    name = "luce"

    def __init__(
        self, exponent: float = 1.0, lapse: float = 0.0, side_bias: float = 0.0, rt=RTModel()
    ) -> None:
        if not exponent >= 0:
            raise ValueError(f"agent exponent must be >= 0, got {exponent}")
        if not 0.0 <= lapse <= 1.0:
            raise ValueError(f"agent lapse must be in [0, 1], got {lapse}")
        self.exponent = float(exponent)
        self.lapse = float(lapse)
        self.side_bias = float(side_bias)
        self.rt = rt
        self.slider_rt = SliderRTModel()

    def log_preference(self, emotion: str | np.ndarray, x: np.ndarray,
                       identity: str | np.ndarray | None = None) -> np.ndarray:
        """log p(x | emotion) up to a constant, (n,), for codes x (n, d); emotion: one name for
        every row or (n,) names; identity: the child shown, one id or (n,) ids (None: default)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget anything remembered between trials (nothing, unless a subclass caches)."""

    def save_tables(self) -> None:
        """Keep what later runs can reuse on disk (nothing, unless a subclass keeps tables)."""

    def prob_right(self, emotion: str | np.ndarray, left: np.ndarray,
                   right: np.ndarray, identity: str | np.ndarray | None = None) -> np.ndarray:
        """P(choose right) (n,) for pairs left, right (n, d); both sides are scored in one batch.
        emotion: one name, or (n,) names (one per pair); identity: the pair's child, one id or
        (n,) ids (None: the model's default)."""
        n = len(left)
        both = emotion if isinstance(emotion, str) else np.concatenate([emotion, emotion])
        if identity is not None and not isinstance(identity, str):
            identity = np.concatenate([identity, identity])
        lp = self.log_preference(both, np.concatenate([left, right]), identity)
        p = expit(self.exponent * (lp[n:] - lp[:n]) + self.side_bias)
        return (1.0 - self.lapse) * p + 0.5 * self.lapse

    def choose(
        self, emotion: str | np.ndarray, left: np.ndarray, right: np.ndarray,
        rng: np.random.Generator, identity: str | np.ndarray | None = None,
    ) -> Choice:
        """Answer n trials: left, right (n, d) codes; emotion: one name or (n,) names;
        identity: the child each pair shows, one id or (n,) ids (None: the model's default)."""
        p = self.prob_right(emotion, left, right, identity)
        return Choice(rng.random(p.shape) < p, self.rt.sample(p, rng))

    def slide(self, emotion: str | np.ndarray, points: np.ndarray, start: np.ndarray,
              shift: np.ndarray, rng: np.random.Generator,
              identity: str | np.ndarray | None = None) -> Slide:
        """Answer n GSP trials: points (n, K, d) along each circle, the handle's start point and
        the slider's shift (n,) (`mcmcp.sampling.gsp.Circle`). Point k is chosen with probability
        softmax(exponent * log p)(k) mixed with a lapse uniform over the K points; the rt grows
        with the slider steps from start to choice. emotion: one name or (n,) names; identity:
        the child each slider shows, one id or (n,) ids (None: the model's default)."""
        from mcmcp.sampling import gsp

        n, k, d = points.shape
        both = emotion if isinstance(emotion, str) else np.repeat(emotion, k)
        if identity is not None and not isinstance(identity, str):
            identity = np.repeat(identity, k)
        logp = self.log_preference(both, points.reshape(n * k, d), identity).reshape(n, k)
        choice = gsp.sample_choice(gsp.choice_probabilities(logp, self.exponent, self.lapse), rng)
        steps = np.abs(gsp.point_to_slider(choice, shift, k) - gsp.point_to_slider(start, shift, k))
        return Slide(choice, self.slider_rt.sample(steps, rng))


class LatentAgent(LuceAgent):
    """Category density = a vMF (mixture) per emotion on the sphere; no decoding, fast."""

    name = "latent"

    def __init__(self, densities: dict[str, VMFMixture], **luce) -> None:
        super().__init__(**luce)
        self.densities = {canonical_emotion(e): dens for e, dens in densities.items()}

    def log_preference(self, emotion: str | np.ndarray, x: np.ndarray,
                       identity: str | np.ndarray | None = None) -> np.ndarray:
        if isinstance(emotion, str):
            return self._density(emotion).logpdf(x)
        out = np.empty(len(x))
        for name in dict.fromkeys(emotion.tolist()):
            rows = emotion == name
            out[rows] = self._density(name).logpdf(x[rows])
        return out

    def _density(self, emotion: str) -> VMFMixture:
        try:
            return self.densities[emotion]
        except KeyError:
            raise KeyError(
                f"latent agent has no density for emotion {emotion!r}; "
                f"it has {sorted(self.densities)}"
            ) from None


class ClassifierAgent(LuceAgent):
    """p(emotion | z) from the VAE's classifier head (`model.classify(z) -> logits (n, 7)`)."""

    name = "classifier"

    def __init__(self, model: torch.nn.Module, **luce) -> None:
        super().__init__(**luce)
        self.model = model

    def log_preference(self, emotion: str | np.ndarray, x: np.ndarray,
                       identity: str | np.ndarray | None = None) -> np.ndarray:
        with torch.inference_mode():
            logits = self.model.classify(torch.as_tensor(x, dtype=torch.float32))
            logp = torch.log_softmax(logits, -1).double().numpy()
        return logp[np.arange(len(x)), class_columns(emotion, len(x))]


class CallableAgent(LuceAgent):
    """Any model of category probabilities, e.g. a lab's own observer network.

    fn: codes (n, d) numpy -> (n, 7) probabilities if takes == "codes"; images (n, 1, H, W)
    float32 torch tensor in [0, 1] -> (n, 7) if takes == "images" (then `model` decodes the codes,
    in batches, each as the trial's child: `identities`, a `mcmcp.identities.Identities`, None =
    the model's default child). Columns follow `vae.labels.EMOTIONS`; numpy arrays or tensors
    are accepted.

    Probabilities are remembered per code and child (the code's exact bytes, the last
    CACHE_SIZE faces): a
    chain's current face was scored when it was proposed, so each trial decodes and scores only
    the new proposals, all of a call's new codes in one batch. `reset` forgets them (a simulation
    resets between participants, so no participant's answers depend on who came before).
    """

    def __init__(
        self, name: str, fn: Callable, takes: str = "codes", model: torch.nn.Module | None = None,
        identities=None, **luce,
    ) -> None:
        super().__init__(**luce)
        if takes not in ("codes", "images"):
            raise ValueError(f"CallableAgent takes must be 'codes' or 'images', got {takes!r}")
        if takes == "images" and model is None:
            raise ValueError("CallableAgent(takes='images') needs the VAE `model` to decode codes")
        self.name = name
        self.fn = fn
        self.takes = takes
        self.model = model
        self.identities = identities
        self._cache: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()

    def reset(self) -> None:
        self._cache.clear()

    def _probabilities(self, x: np.ndarray, children: list[str]) -> np.ndarray:
        """Category probabilities (n, 7) of codes x (n, d) shown as `children` (n ids),
        computed (no cache), BATCH codes at a time (images: decoded, each as its child, then
        judged)."""
        if self.takes == "images":
            keep_freed_memory()  # a batch's feature maps are not faulted in again each time
        return np.concatenate([self._judged(x[i : i + BATCH], children[i : i + BATCH])
                               for i in range(0, len(x), BATCH)])

    def _judged(self, x: np.ndarray, children: list[str]) -> np.ndarray:
        with torch.inference_mode():
            inputs = x
            if self.takes == "images":
                z = torch.as_tensor(x, dtype=torch.float32)
                inputs = self.model.decode(z) if self.identities is None else \
                    self.model.decode(z, self.identities.stack(children))
            return torch.as_tensor(self.fn(inputs)).double().numpy()

    def log_preference(self, emotion: str | np.ndarray, x: np.ndarray,
                       identity: str | np.ndarray | None = None) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64)
        # only pixels depend on the child: an agent on codes keys every code as child ""
        if self.takes != "images" or identity is None:
            children = [""] * len(x)
        elif isinstance(identity, str):
            children = [identity] * len(x)
        else:
            children = [str(c or "") for c in identity]
        keys = [(c, row.tobytes()) for c, row in zip(children, x, strict=True)]
        first = {}
        for i, k in enumerate(keys):
            if k not in self._cache:
                first.setdefault(k, i)
        if first:
            rows = list(first.values())
            for k, p in zip(first, self._probabilities(x[rows], [children[i] for i in rows]),
                            strict=True):
                self._cache[k] = p
        columns = class_columns(emotion, len(keys)).tolist()
        out = np.empty(len(keys))
        for i, (k, column) in enumerate(zip(keys, columns, strict=True)):
            self._cache.move_to_end(k)
            out[i] = self._cache[k][column]
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return np.log(np.maximum(out, MIN_PROB))


def _softmax(classifier: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.softmax(classifier(images), -1)


class SphereTable:
    """Category probabilities on the sphere S^2, computed at the nodes of an adaptive cube map
    when first needed and interpolated in between: the observer agent's cheap stand-in for
    decoding and judging every face.

    The cube map is equi-angular: each of the 6 faces of the cube around the sphere is cut
    into `cells` x `cells` cells of equal angle (90 / cells degrees). Each cell has 9 nodes,
    its corners, edge midpoints and centre, and a point is answered by biquadratic
    interpolation of the 9 nodes' log probabilities of its smallest cell, renormalised over
    the `width` categories. Cells are cut for the category asked about: a cell whose 4
    corners predict that category's probability at its centre or an edge midpoint
    (bilinearly, renormalised) worse than `tolerance`, or its log probability worse than
    `log_tolerance`, is cut into 4, at most `levels` times: fine cells only where that
    category bends (near its borders with other categories), coarse ones where it is nearly
    linear. The bilinear miss is the cut test because it overstates what the biquadratic
    answer misses; the edge midpoints are part of it because a value that bends along a
    diagonal can pass through the centre at the corners' mean. All
    categories share the nodes (a node's face is judged once, for all of them). Nodes are
    computed in one batch per level and call, only those not computed before, so the cost of a
    table grows with the part of the sphere visited and then stops. Across the edge between a
    cut cell and an uncut one the answer may jump, by about the tolerance.

    fn: nodes (m, 3) unit vectors -> log probabilities (m, width); it must be deterministic,
    since each node is computed once. Log probabilities, not probabilities, are interpolated
    and renormalised: that is interpolating the logits, which change far more evenly over the
    sphere than a probability does across a border.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], width: int,
                 cells: int = TABLE_CELLS, levels: int = TABLE_LEVELS,
                 tolerance: float = TABLE_TOLERANCE,
                 log_tolerance: float = TABLE_LOG_TOLERANCE) -> None:
        self.fn, self.cells, self.levels = fn, int(cells), int(levels)
        self.tolerance, self.log_tolerance = tolerance, log_tolerance
        # node spacing per cube-face edge: half the finest cell (its midpoints and centre)
        self.fine = self.cells * 2 ** (self.levels + 1)
        n_nodes = 6 * (self.fine + 1) ** 2
        self.values = np.zeros((n_nodes, width))
        self.known = np.zeros(n_nodes, dtype=bool)

    @property
    def n_computed(self) -> int:
        """How many nodes have been computed so far."""
        return int(self.known.sum())

    def __call__(self, x: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Interpolated log probabilities (n, width), renormalised, at unit vectors x (n, 3),
        each row from the cells cut for its category `columns` (n,)."""
        ids, weights = self.corners(x, columns)
        return log_softmax(np.einsum("nk,nkw->nw", weights, self.values[ids]), axis=-1)

    def corners(self, x: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Node ids (n, 9) each unit vector x (n, 3) is interpolated from and their
        biquadratic weights (n, 9): the 3 x 3 nodes of the point's smallest cell as cut for its
        category `columns` (n,), row by row along the face's first axis; nodes not known yet
        are computed."""
        x = np.asarray(x, dtype=np.float64)
        columns = np.broadcast_to(np.asarray(columns, dtype=np.int64), (len(x),))
        face, a, b = self._coordinates(x)  # a, b in node steps, 0 .. fine
        side = self.fine + 1
        ids = np.empty((len(x), 9), dtype=np.int64)
        weights = np.empty((len(x), 9))
        todo = np.arange(len(x))
        for level in range(self.levels + 1):
            stride = 2 ** (self.levels + 1 - level)  # this level's cell, in node steps
            half = stride // 2
            last = self.cells * 2**level - 1
            i = np.clip(np.floor(a[todo] / stride).astype(np.int64), 0, last)
            j = np.clip(np.floor(b[todo] / stride).astype(np.int64), 0, last)
            base = face[todo] * side * side + i * stride * side + j * stride
            nine = base[:, None] + (_STEPS[:, 0] * side + _STEPS[:, 1])[None, :] * half
            self._compute(nine)
            ids[todo] = nine
            weights[todo] = (_quadratic(a[todo] / stride - i)[:, _STEPS[:, 0]]
                             * _quadratic(b[todo] / stride - j)[:, _STEPS[:, 1]])
            if level == self.levels:
                break
            at = self.values[nine]  # (n, 9, width)
            bilinear = log_softmax((at[:, _FROM[:, 0]] + at[:, _FROM[:, 1]]
                                    + at[:, _FROM[:, 2]] + at[:, _FROM[:, 3]]) / 4, axis=-1)
            rows, column = np.arange(len(todo))[:, None], columns[todo][:, None]
            inner = np.arange(len(_INNER))[None, :]
            guess, truth = bilinear[rows, inner, column], at[:, _INNER][rows, inner, column]
            cut = ((np.abs(np.exp(guess) - np.exp(truth)).max(axis=1) > self.tolerance)
                   | (np.abs(guess - truth).max(axis=1) > self.log_tolerance))
            todo = todo[cut]
        return ids, weights

    def _compute(self, ids: np.ndarray) -> None:
        missing = np.unique(ids[~self.known[ids]])
        if len(missing):
            self.values[missing] = np.asarray(self.fn(self.nodes(missing)), dtype=np.float64)
            self.known[missing] = True

    def nodes(self, ids: np.ndarray) -> np.ndarray:
        """Unit vectors (m, 3) of nodes `ids` (m,) (numbered on the finest grid)."""
        side = self.fine + 1
        face, rest = np.divmod(np.asarray(ids), side * side)
        i, j = np.divmod(rest, side)
        axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
        step = (np.pi / 2) / self.fine
        out = np.empty((len(face), 3))
        rows = np.arange(len(face))
        out[rows, axis] = sign
        out[rows, _U[axis]] = np.tan(-np.pi / 4 + i * step)
        out[rows, _V[axis]] = np.tan(-np.pi / 4 + j * step)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def _coordinates(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cube face (n,) of each point and its angles (n,), (n,) along the face's two axes,
        in finest cells (0 .. fine)."""
        rows = np.arange(len(x))
        axis = np.argmax(np.abs(x), axis=1)
        major = np.abs(x[rows, axis])
        face = 2 * axis + (x[rows, axis] < 0)
        scale = self.fine / (np.pi / 2)
        a = (np.arctan(x[rows, _U[axis]] / major) + np.pi / 4) * scale
        b = (np.arctan(x[rows, _V[axis]] / major) + np.pi / 4) * scale
        return face, a, b


# a cell's 9 nodes (row by row along the face's first axis), in half-cells from its first
# corner; the 5 that are not corners; and for each of those the 4 corners whose mean is the
# bilinear prediction there (an edge midpoint's 2 corners, each counted twice)
_STEPS = np.array([(p, q) for p in range(3) for q in range(3)])
_INNER = np.array([1, 3, 4, 5, 7])
_FROM = np.array([[0, 2, 0, 2], [0, 6, 0, 6], [0, 2, 6, 8], [2, 8, 2, 8], [6, 8, 6, 8]])


def _quadratic(t: np.ndarray) -> np.ndarray:
    """The 3 quadratic Lagrange weights (n, 3) of nodes at 0, 1/2 and 1 at positions t (n,)."""
    return np.stack([2 * (t - 0.5) * (t - 1), -4 * t * (t - 1), 2 * t * (t - 0.5)], axis=1)


# the two in-face axes of a cube face whose normal is axis 0, 1 or 2
_U = np.array([1, 0, 0])
_V = np.array([2, 2, 1])


class ObserverAgent(CallableAgent):
    """Sees only decoded pixels, judged by the separately trained observer classifier
    (`vae.observer.ObserverClassifier`: images (n, 1, H, W) -> logits (n, 7)).

    Fast by default (`cells` = TABLE_CELLS, on the sphere S^2): for each child it keeps a
    `SphereTable` of the observer's log probabilities of the full decoder's faces at nodes
    0.7 degrees apart where the asked emotion's probability bends (near its borders with the
    others), up to 5.6 degrees apart where it is nearly linear, each node decoded and judged
    once, when a trial first needs it, and interpolates between them.
    benchmarks/bench_observer.py measures its speed, its agreement with `cells=0`, which
    decodes and judges every face (as any latent dimension other than 3 does), and how far the
    faces it judged are from the one shown.
    Tables outlive `reset`: a node's value depends on the child and the node only, never on
    earlier answers. With a `cache` folder they also outlive the process (`mcmcp.table_cache`):
    a child's table starts from the nodes earlier runs kept there, and `save_tables` adds this
    run's (the commands keep them in `TABLE_CACHE`).

    It works on private channels-last copies of the VAE and the observer: their convolutions
    run about twice as fast on one thread in that layout (benchmarks/bench_scale.py), and the
    caller's modules stay as they were.
    """

    def __init__(self, model: torch.nn.Module, observer, identities=None,
                 cells: int = TABLE_CELLS, cache: str | Path | None = None, **luce) -> None:
        self.cache = None if cache is None else Path(cache)
        self._weights = None if cache is None else table_cache.weights_sha256((model, observer))
        fast_model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        fast_observer = copy.deepcopy(observer).eval().to(memory_format=torch.channels_last)
        super().__init__("observer", functools.partial(_softmax, fast_observer), "images",
                         fast_model, identities, **luce)
        self.cells = int(cells) if model.config.latent_dim == 3 else 0
        self._tables: dict[str, SphereTable] = {}

    def table(self, child: str = "") -> SphereTable:
        """The child's table of log probabilities (7 columns); "" = the model's default child."""
        if not child and self.identities is not None:
            child = self.identities.default  # one table per child, however it is named
        if child not in self._tables:
            def judge(nodes: np.ndarray) -> np.ndarray:
                probs = self._probabilities(nodes, [child] * len(nodes))
                return np.log(np.maximum(probs, MIN_PROB))

            self._tables[child] = table = SphereTable(judge, 7, self.cells)
            if self.cache is not None:
                table_cache.read_into(table, table_cache.table_file(self.cache,
                                                                    self._about(child)))
        return self._tables[child]

    def save_tables(self) -> None:
        """Add the nodes this agent computed to its `cache` folder, and take in those other
        runs added since (nothing without a cache)."""
        if self.cache is None:
            return
        for child, table in self._tables.items():
            about = self._about(child)
            table_cache.write(table, table_cache.table_file(self.cache, about), about)

    def _about(self, child: str) -> dict:
        codes = None if self.identities is None else self.identities.stack([child])
        code = None if codes is None else codes[0]
        return table_cache.describe(self._weights, child, code, self._tables[child])

    def log_preference(self, emotion: str | np.ndarray, x: np.ndarray,
                       identity: str | np.ndarray | None = None) -> np.ndarray:
        if not self.cells:
            return super().log_preference(emotion, x, identity)
        if identity is None or isinstance(identity, str):
            children = np.full(len(x), identity or "", dtype=object)
        else:
            children = np.array([str(c or "") for c in identity], dtype=object)
        columns = class_columns(emotion, len(x))
        out = np.empty(len(x))
        for child in dict.fromkeys(children.tolist()):
            rows = np.flatnonzero(children == child)
            logp = self.table(child)(x[rows], columns[rows])
            out[rows] = logp[np.arange(len(rows)), columns[rows]]
        return out


def make_agent(spec, densities=None, model=None, observer=None, identities=None,
               table_cache=None, cells: int = TABLE_CELLS) -> LuceAgent:
    """An agent from a config `AgentSpec` (kind, exponent, lapse, side_bias).

    latent needs `densities` (emotion -> VMFMixture); classifier a torch VAE `model`;
    observer the VAE `model` and an `observer` with predict_proba, and draws each face as the
    trial's child from `identities` (`mcmcp.identities.Identities`; None: the default child),
    answering from tables of `cells` cells per cube-face edge (0: decoding every face) kept in
    the folder `table_cache` (None: in memory only).
    """
    luce = {"exponent": spec.exponent, "lapse": spec.lapse, "side_bias": spec.side_bias}
    if spec.kind == "latent":
        if densities is None:
            raise ValueError("agent kind 'latent' needs category densities (checkpoint + faces)")
        return LatentAgent(densities, **luce)
    if spec.kind == "classifier":
        if model is None:
            raise ValueError("agent kind 'classifier' needs a VAE checkpoint (model.checkpoint)")
        return ClassifierAgent(model, **luce)
    if spec.kind == "observer":
        if model is None or observer is None:
            raise ValueError(
                "agent kind 'observer' needs the VAE checkpoint and vae/checkpoints/observer.pt"
            )
        return ObserverAgent(model, observer, identities, cells, table_cache, **luce)
    raise ValueError(f"agent.kind must be one of {', '.join(AGENT_KINDS)}, got {spec.kind!r}")
