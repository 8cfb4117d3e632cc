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

DEVICES = ("desktop", "tablet", "phone")  # online.devices (mcmcp.online.screening)

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


# Across-participant chains (`chains.across_participants`): a held chain goes back to the study
# after this long without an answer, so one participant who leaves never stalls a chain.
DEFAULT_LEASE_SECONDS = 120.0
# ... and by default each participant gives a chain they hold this many trials, 60 in all
# (~3 minutes of MCMCP choices per emotion block when split over seven emotions' holds).
DEFAULT_PER_HOLD = 10
DEFAULT_PER_PARTICIPANT = 60


@dataclass(frozen=True)
class ChainSpec:
    """unguided: how many of each emotion's chains run without the gate (control chains the
    report compares with the de-guided estimate of the guided ones); 0 with no gate.

    across_participants: False, each participant-session runs `per_emotion` chains of its own;
    True, the study runs `per_emotion` chains per emotion that pass from participant to
    participant (a participant leases a chain, answers `trials.per_hold` trials of it, hands
    it back; `mcmcp.shared`), and a lease ends after `lease_seconds` without an answer."""

    per_emotion: int = 4
    kappa_proposal: float = DEFAULT_KAPPA_PROPOSAL
    start: str = "fibonacci"
    adapt: AdaptSpec | None = None
    unguided: int = 0
    across_participants: bool = False
    lease_seconds: float | None = None


@dataclass(frozen=True)
class TrialSpec:
    """per_chain: shown trials of each chain (across participants: of each shared chain, summed
    over everyone who held it). per_hold / per_participant (across participants only, else
    None): shown trials a participant gives each chain they hold / gives in all (a multiple of
    per_hold; the holds are spread over the emotion blocks)."""

    per_chain: int = 100
    practice: int = 3
    catch_rate: float = 0.05
    repeat_rate: float = 0.0
    break_every: int = 100
    per_hold: int | None = None
    per_participant: int | None = None


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

    The recruitment site's other ends, screening and links (docs/online.md): decline_code /
    decline_url: shown / gone to when a participant does not consent (Prolific: a no-consent
    code); screenout_code / screenout_url: the same when the browser screens them out;
    min_window: (width, height) in CSS pixels the browser window must have (None: any);
    devices: the kinds of device allowed (desktop, tablet, phone); fullscreen: ask for full
    screen and record every exit; participant_links: which links open the study (a guessed id
    must not claim a session): open (any, as given: trying out, lab machines), signed (only lab
    links `?participant=ID&sig=...`, an HMAC of the id keyed with the secret in the environment
    variable `link_secret_env`; `python -m mcmcp.links` makes them) or recruitment (only a
    recruitment site's, with PROLIFIC_PID, STUDY_ID and SESSION_ID).

    Sessions that end (`mcmcp.online.limits`; null turns one off): expire_after_minutes: a
    session in progress without a request for this long becomes `abandoned`;
    time_limit_minutes: a session older than this (from its start) becomes `abandoned`;
    starts_per_minute: /api/start calls per client address and minute, all server processes
    together;
    max_in_progress: sessions in progress at once (consent or running) before new
    participants are asked to come back later.

    faces: who decodes the faces: server (PNGs in every view) or browser (the page's decoder
    draws them from the model's weights; the server decodes nothing: `mcmcp.online.faces`)."""

    consent: str | None = None
    completion_code: str | None = None
    redirect_url: str | None = None
    experimenter_token_env: str = "MCMCP_EXPERIMENTER_TOKEN"
    decline_code: str | None = None
    decline_url: str | None = None
    screenout_code: str | None = None
    screenout_url: str | None = None
    min_window: tuple[int, int] | None = None
    devices: tuple[str, ...] = DEVICES
    fullscreen: bool = False
    participant_links: str = "open"
    link_secret_env: str = "MCMCP_LINK_SECRET"
    expire_after_minutes: float | None = 60.0
    time_limit_minutes: float | None = None
    starts_per_minute: int | None = 30
    max_in_progress: int | None = None
    faces: str = "server"


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
class AnalysisSpec:
    """What the study must deliver (`analysis.verdicts`): precision, the half-angle in degrees
    a prototype's 95% cone must be within for the verdict 'precise enough' (the report, the
    experimenter page and the planner judge against it)."""

    precision: float = 5.0


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
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)


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
