"""The experiment's typed contract: frozen dataclasses, their defaults and the allowed values.

`mcmcp.config` reads and checks a YAML into these (once, at the edge); everything downstream
trusts them. Every key, its default and its allowed range is here or in `mcmcp.config`'s readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# vMF random-walk concentration used when a config gives none: the value benchmarks/
# bench_chains.py found fastest to a prototype within 5 degrees (4 chains, vMF categories with
# kappa 20-50 on S^2); mean step about 30 degrees.
DEFAULT_KAPPA_PROPOSAL = 5.0

# The gate's default design: annealed over the first 40% of each chain's shown trials. In
# benchmarks/bench_guided.py it is as fast as a constant gamma 0.5 when the gate is right, and
# stays right when it is not (a gate 40 deg off with kappa 100: 2 deg error after 1000 trials
# instead of 18, the width right instead of 2.8 times too narrow, cones covering 96%, not 4%).
DEFAULT_ANNEAL_UNTIL = 0.4

# The default face store: procedural and deterministic, so it is built on first use.
DEFAULT_FACES = ROOT / "data/faces.h5"

STARTS = ("fibonacci", "centroids", "uniform")

GATE_KINDS = ("none", "vmf", "mixture", "classifier", "manual")

AGENT_KINDS = ("latent", "classifier", "observer")

# Emotion block order across participants: as written, rotated by the number the participant id
# ends in (P001 as written, P002 one block later, ...), or shuffled with the participant's seed.
BLOCK_ORDERS = ("fixed", "rotated", "random")

# Which child the faces show (identity models, `stimuli:`): one for everyone, one per
# participant drawn from the list or rotated by participant number, or taking turns across chains.
IDENTITY_ASSIGNS = ("fixed", "participant", "rotated", "chain")

MODEL_KINDS = ("identity", "plain")  # vae.model.KINDS, kept here so configs load without torch

# MCMCP: two faces, choose one (mcmcp.sampling.chain);
# GSP: a slider along a great circle (mcmcp.sampling.gsp).
PARADIGMS = ("mcmcp", "gsp")

GSP_PROMPT = "Move the slider until the face looks as {emotion} as it can"  # its default prompt


@dataclass(frozen=True)
class ModelSpec:
    """checkpoint / faces: resolved paths. latent_dim: the d the experiment expects (None: any).
    kind: the kind of face model the experiment expects, identity or plain (None: any)."""

    checkpoint: Path = ROOT / "vae/checkpoints/default.pt"
    faces: Path = DEFAULT_FACES
    latent_dim: int | None = None
    kind: str | None = None


@dataclass(frozen=True)
class AdaptSpec:
    """Robbins-Monro adaptation of kappa toward `target` acceptance for the first `burn_in` steps."""

    target: float = 0.4
    burn_in: int = 50


@dataclass(frozen=True)
class ChainSpec:
    """unguided: how many of each emotion's chains run without the gate (control chains the
    report compares with the de-guided estimate of the guided ones); 0 with no gate."""

    per_emotion: int = 4
    kappa_proposal: float = DEFAULT_KAPPA_PROPOSAL
    start: str = "fibonacci"
    adapt: AdaptSpec | None = None
    unguided: int = 0


@dataclass(frozen=True)
class TrialSpec:
    per_chain: int = 100
    practice: int = 3
    catch_rate: float = 0.05
    repeat_rate: float = 0.0
    break_every: int = 100


@dataclass(frozen=True)
class AnnealSpec:
    """The gate's γ falls linearly to 0 over the first `until` fraction of each chain's shown
    trials; the gate is off after that (mcmcp.sampling.gate.Gate.gamma_at)."""

    until: float = DEFAULT_ANNEAL_UNTIL


@dataclass(frozen=True)
class GateSpec:
    """anneal: None for a constant gamma (YAML `anneal: null`)."""

    kind: str = "vmf"
    gamma: float = 0.5
    components: int = 3
    mean: tuple[float, ...] | None = None
    kappa: float | None = None
    anneal: AnnealSpec | None = field(default_factory=AnnealSpec)


@dataclass(frozen=True)
class KeySpec:
    left: str = "left"
    right: str = "right"
    quit: str = "escape"


@dataclass(frozen=True)
class DisplaySpec:
    fullscreen: bool = False
    window_size: tuple[int, int] = (1280, 800)
    face_size: int = 320
    face_offset: int = 220
    keys: KeySpec = field(default_factory=KeySpec)
    mouse: bool = True
    fixation: float = 0.5
    prompt: str = "Which face looks {adjective}?"


@dataclass(frozen=True)
class AgentSpec:
    kind: str = "latent"
    exponent: float = 1.0
    lapse: float = 0.0
    side_bias: float = 0.0


@dataclass(frozen=True)
class OnlineSpec:
    """Online studies (`python -m mcmcp.serve`). consent: the text participants agree to before
    anything else (required to serve); completion_code: shown at the end (e.g. Prolific's);
    redirect_url: where the end page sends participants (http or https), e.g. Prolific's
    completion URL; experimenter_token_env: the environment variable holding the experimenter
    page's token (a token never goes into a YAML that is committed).

    Sessions that end (`mcmcp.online.limits`; null turns one off): expire_after_minutes: a
    session in progress without a request for this long becomes `abandoned`;
    time_limit_minutes: a session older than this (from its start) becomes `abandoned`;
    starts_per_minute: /api/start calls per client address and minute, per server process;
    max_in_progress: sessions in progress at once (consent or running) before new
    participants are asked to come back later."""

    consent: str | None = None
    completion_code: str | None = None
    redirect_url: str | None = None
    experimenter_token_env: str = "MCMCP_EXPERIMENTER_TOKEN"
    expire_after_minutes: float | None = 60.0
    time_limit_minutes: float | None = None
    starts_per_minute: int | None = 30
    max_in_progress: int | None = None


@dataclass(frozen=True)
class StimuliSpec:
    """Which child the faces show (identity models; see `mcmcp.identities`). identity: child
    ids of the face store (empty: the checkpoint's default child); assign: fixed (one id),
    participant (one drawn per participant), rotated (by participant number) or chain (turns
    across chains)."""

    identity: tuple[str, ...] = ()
    assign: str = "fixed"


@dataclass(frozen=True)
class GSPSpec:
    """Gibbs Sampling with People (`paradigm: gsp`): the slider has `points` positions along
    the great circle (K; neighbours 360/K degrees apart)."""

    points: int = 32


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    seed: int = 1
    model: ModelSpec = field(default_factory=ModelSpec)
    emotions: tuple[str, ...] = ("happy",)
    chains: ChainSpec = field(default_factory=ChainSpec)
    trials: TrialSpec = field(default_factory=TrialSpec)
    gate: GateSpec = field(default_factory=GateSpec)
    display: DisplaySpec = field(default_factory=DisplaySpec)
    agent: AgentSpec | None = None
    block_order: str = "fixed"
    online: OnlineSpec = field(default_factory=OnlineSpec)
    stimuli: StimuliSpec = field(default_factory=StimuliSpec)
    paradigm: str = "mcmcp"
    gsp: GSPSpec = field(default_factory=GSPSpec)


ADJECTIVES = {
    "angry": "angrier",
    "disgusted": "more disgusted",
    "fearful": "more fearful",
    "happy": "happier",
    "neutral": "more neutral",
    "sad": "sadder",
    "surprised": "more surprised",
}


def prompt_for(cfg: ExperimentConfig, emotion: str) -> str:
    """The on-screen question for a block, e.g. 'Which face looks happier?'."""
    return cfg.display.prompt.format(adjective=ADJECTIVES[emotion], emotion=emotion)
