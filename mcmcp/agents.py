"""Synthetic participants: they answer MCMCP trials the way the Luce/Barker choice rule says.

An agent sees two faces (as codes on the sphere, or as decoded images) and picks the right one
with probability
    P(right) = (1 - lapse) * expit(exponent * (log p(right|c) - log p(left|c)) + side_bias)
               + lapse / 2,
i.e. Luce's rule p(r)^g / (p(r)^g + p(l)^g) with decision exponent g, a lapse rate (random answer)
and a logit shift toward "right". Response times are a shifted log-normal, slower when the two
faces are close in preference. Agents plug into the same engine as people; they never touch
chains, files or global random state.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from scipy.special import expit

from mcmcp.densities import VMFMixture
from vae.labels import canonical_emotion, emotion_index

AGENT_KINDS = ("latent", "classifier", "observer")
DECODE_BATCH = 1024
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
        self, emotion: str, left: np.ndarray, right: np.ndarray, rng: np.random.Generator
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

    def log_preference(self, emotion: str | np.ndarray, x: np.ndarray) -> np.ndarray:
        """log p(x | emotion) up to a constant, (n,), for codes x (n, d); emotion: one name for
        every row or (n,) names."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget anything remembered between trials (nothing, unless a subclass caches)."""

    def prob_right(self, emotion: str | np.ndarray, left: np.ndarray,
                   right: np.ndarray) -> np.ndarray:
        """P(choose right) (n,) for pairs left, right (n, d); both sides are scored in one batch.
        emotion: one name, or (n,) names (one per pair)."""
        n = len(left)
        both = emotion if isinstance(emotion, str) else np.concatenate([emotion, emotion])
        lp = self.log_preference(both, np.concatenate([left, right]))
        p = expit(self.exponent * (lp[n:] - lp[:n]) + self.side_bias)
        return (1.0 - self.lapse) * p + 0.5 * self.lapse

    def choose(
        self, emotion: str | np.ndarray, left: np.ndarray, right: np.ndarray,
        rng: np.random.Generator,
    ) -> Choice:
        """Answer n trials: left, right (n, d) codes; emotion: one name or (n,) names."""
        p = self.prob_right(emotion, left, right)
        return Choice(rng.random(p.shape) < p, self.rt.sample(p, rng))


class LatentAgent(LuceAgent):
    """Category density = a vMF (mixture) per emotion on the sphere; no decoding, fast."""

    name = "latent"

    def __init__(self, densities: dict[str, VMFMixture], **luce) -> None:
        super().__init__(**luce)
        self.densities = {canonical_emotion(e): dens for e, dens in densities.items()}

    def log_preference(self, emotion: str | np.ndarray, x: np.ndarray) -> np.ndarray:
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

    def log_preference(self, emotion: str | np.ndarray, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.model.classify(torch.as_tensor(x, dtype=torch.float32))
            logp = torch.log_softmax(logits, -1).double().numpy()
        return logp[np.arange(len(x)), class_columns(emotion, len(x))]


def decode_batched(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """Images (n, 1, H, W) float32 in [0, 1] of codes x (n, d), decoded DECODE_BATCH at a time."""
    with torch.inference_mode():
        z = torch.as_tensor(x, dtype=torch.float32)
        return torch.cat([model.decode(z[i : i + DECODE_BATCH]) for i in range(0, len(z), DECODE_BATCH)])


class CallableAgent(LuceAgent):
    """Any model of category probabilities, e.g. a lab's own observer network.

    fn: codes (n, d) numpy -> (n, 7) probabilities if takes == "codes"; images (n, 1, H, W)
    float32 torch tensor in [0, 1] -> (n, 7) if takes == "images" (then `model` decodes the codes,
    in batches). Columns follow `vae.labels.EMOTIONS`; numpy arrays or tensors are accepted.

    Probabilities are remembered per code (its exact bytes, the last CACHE_SIZE codes): a
    chain's current face was scored when it was proposed, so each trial decodes and scores only
    the new proposals, all of a call's new codes in one batch. `reset` forgets them (a simulation
    resets between participants, so no participant's answers depend on who came before).
    """

    def __init__(
        self, name: str, fn: Callable, takes: str = "codes", model: torch.nn.Module | None = None,
        **luce,
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
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def reset(self) -> None:
        self._cache.clear()

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        """Category probabilities (n, 7) of codes x (n, d), computed (no cache)."""
        inputs = decode_batched(self.model, x) if self.takes == "images" else x
        with torch.inference_mode():
            return torch.as_tensor(self.fn(inputs)).double().numpy()

    def log_preference(self, emotion: str | np.ndarray, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64)
        keys = [row.tobytes() for row in x]
        first = {}
        for i, k in enumerate(keys):
            if k not in self._cache:
                first.setdefault(k, i)
        if first:
            for k, p in zip(first, self._probabilities(x[list(first.values())]), strict=True):
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


class ObserverAgent(CallableAgent):
    """Sees only decoded pixels, judged by the separately trained observer classifier
    (`vae.observer.ObserverClassifier`: images (n, 1, H, W) -> logits (n, 7)).

    It works on private channels-last copies of the VAE and the observer: their convolutions
    run about twice as fast on one thread in that layout (benchmarks/bench_scale.py), and the
    caller's modules stay as they were.
    """

    def __init__(self, model: torch.nn.Module, observer, **luce) -> None:
        fast_model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        fast_observer = copy.deepcopy(observer).eval().to(memory_format=torch.channels_last)
        super().__init__("observer", functools.partial(_softmax, fast_observer), "images",
                         fast_model, **luce)


def make_agent(spec, densities=None, model=None, observer=None) -> LuceAgent:
    """An agent from a config `AgentSpec` (kind, exponent, lapse, side_bias).

    latent needs `densities` (emotion -> VMFMixture); classifier a torch VAE `model`;
    observer the VAE `model` and an `observer` with predict_proba.
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
        return ObserverAgent(model, observer, **luce)
    raise ValueError(f"agent.kind must be one of {', '.join(AGENT_KINDS)}, got {spec.kind!r}")
