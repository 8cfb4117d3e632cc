"""Experiment YAML -> validated, frozen dataclasses (`mcmcp.specs`, the shared contract).

Validation happens once, here, at the edge: an unknown key, a wrong type, a value out of range,
a missing checkpoint or a checkpoint whose latent size does not match the experiment raise
`ConfigError`, whose message names the file, the key (dotted path), the value and what is allowed.
Everything downstream trusts the dataclasses. `config_to_dict` is saved with every session.
"""

from __future__ import annotations

import math
import reprlib
import string
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

from mcmcp.specs import (
    AGENT_KINDS,
    BLOCK_ORDERS,
    DEFAULT_ANNEAL_UNTIL,
    DEFAULT_KAPPA_PROPOSAL,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_PER_HOLD,
    DEFAULT_PER_PARTICIPANT,
    DEVICES,
    GATE_KINDS,
    GSP_PROMPT,
    IDENTITY_ASSIGNS,
    MODEL_KINDS,
    PARADIGMS,
    ROOT,
    STARTS,
    AdaptSpec,
    AgentSpec,
    AnalysisSpec,
    AnnealSpec,
    ChainSpec,
    DisplaySpec,
    ExperimentConfig,
    GateSpec,
    GSPSpec,
    KeySpec,
    ModelSpec,
    OnlineSpec,
    StimuliSpec,
    TrialSpec,
)
from vae.labels import EMOTIONS, canonical_emotion

# Values in error messages are cut short: a config can hold megabytes (or a YAML alias bomb whose
# full repr never ends), and an error is read by a person.
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 160, 160, 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 5
MAX_ALLOWED_CHARS = 600


def short_repr(value: object) -> str:
    """repr(value), bounded in length and depth (for error messages)."""
    return _REPR.repr(value)


class ConfigError(ValueError):
    """A config value that cannot be used; the message names file, key, value and allowed."""

    def __init__(self, file: str | Path, key: str, value: object, allowed: str):
        self.file, self.key, self.value, self.allowed = str(file), key, value, allowed
        if len(allowed) > MAX_ALLOWED_CHARS:
            allowed = allowed[:MAX_ALLOWED_CHARS] + " [...]"
        super().__init__(f"{file}: key '{key}' has value {short_repr(value)}; allowed: {allowed}")


# ----------------------------------------------------------------------------- validation


class _Reader:
    """Pulls typed values out of one mapping, naming file and dotted key in every error."""

    def __init__(self, file: Path, prefix: str, data: Any):
        self.file, self.prefix = file, prefix
        if not isinstance(data, dict):
            raise ConfigError(file, prefix or "<top level>", data, "a mapping of keys to values")
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for k in self.data:
            if k not in allowed:
                raise ConfigError(self.file, self.key(str(k)), self.data[k],
                                  f"no such key; known keys here: {', '.join(allowed)}")

    def error(self, name: str, value: object, allowed: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), value, allowed)

    def sub(self, name: str, *, nullable: bool = False) -> _Reader | None:
        """The section under `name`: its defaults when the key is absent, or None (absent or
        null) for a `nullable` section, one that may not exist (`agent`, `chains.adapt`).
        Anything else that is not a mapping (`false`, `0`, `''`, `[]`, or null where a section
        is required) is an error: a falsy section must never silently become the defaults."""
        value = self.data.get(name)
        if nullable and value is None:
            return None
        if name not in self.data:
            return _Reader(self.file, self.key(name), {})
        if not isinstance(value, dict):
            none = ", or null for none" if nullable else ""
            raise self.error(name, value, f"a mapping of keys to values (leave the key out for "
                                          f"the defaults{none})")
        return _Reader(self.file, self.key(name), value)

    def number(self, name, default, lo, hi, *, integer=False, lo_open=False, hi_open=False):
        value = self.data.get(name, default)
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        kind = "an integer" if integer else "a finite number"
        left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
        allowed = f"{kind} in {left}{lo}, {'inf)' if hi is None else f'{hi}{right}'}"
        if isinstance(value, bool) or not ok_type or not _finite(value):
            raise self.error(name, value, allowed)
        if (value <= lo if lo_open else value < lo) or (
            hi is not None and (value >= hi if hi_open else value > hi)
        ):
            raise self.error(name, value, allowed)
        return int(value) if integer else float(value)

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.data.get(name, default)
        if value not in options:
            raise self.error(name, value, f"one of {', '.join(options)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, value, "true or false")
        return value

    def text(self, name: str, default: str) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, value, "a non-empty string")
        return value


def _finite(value: int | float) -> bool:
    """True for a finite number (NaN and +-inf pass every range comparison, so test first)."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _path(reader: _Reader, name: str, default: str, base: Path) -> Path:
    value = reader.text(name, default)
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _model(r: _Reader, require_checkpoint: bool) -> ModelSpec:
    r.check_keys(("checkpoint", "faces", "latent_dim", "kind"))
    checkpoint = _path(r, "checkpoint", "vae/checkpoints/default.pt", ROOT)
    if require_checkpoint and not checkpoint.is_file():
        raise r.error("checkpoint", r.data.get("checkpoint", "vae/checkpoints/default.pt"),
                      f"an existing checkpoint file (looked for {checkpoint}); train one with "
                      "`python -m vae.train --config experiments/vae_default.yaml`")
    latent = r.data.get("latent_dim")
    return ModelSpec(
        checkpoint=checkpoint,
        faces=_path(r, "faces", "data/faces.h5", ROOT),
        latent_dim=None if latent is None else r.number("latent_dim", None, 2, 64, integer=True),
        kind=None if r.data.get("kind") is None else r.choice("kind", None, MODEL_KINDS),
    )


def _stimuli(r: _Reader) -> StimuliSpec:
    r.check_keys(("identity", "assign"))
    value = r.data.get("identity")
    # a single id, a list of ids; [] (as config_to_dict writes the default) is the default
    ids = [value] if isinstance(value, str) else (None if value == [] else value)
    allowed = ("a child id of the face store (e.g. syn0006) or a list of distinct ids "
               "(leave the key out for the checkpoint's default child)")
    if ids is not None and (not isinstance(ids, list) or len(set(map(str, ids))) != len(ids)):
        raise r.error("identity", value, allowed)
    for k, child in enumerate(ids or []):
        if not (isinstance(child, str) and 1 <= len(child) <= 64
                and all(c.isascii() and (c.isalnum() or c in "-_.") for c in child)):
            raise r.error(f"identity[{k}]" if isinstance(value, list) else "identity", child,
                          allowed)
    assign = r.choice("assign", "fixed", IDENTITY_ASSIGNS)
    if assign == "fixed" and ids is not None and len(ids) > 1:
        raise r.error("assign", assign, f"participant, rotated or chain for a list of "
                                        f"{len(ids)} children (fixed shows one child)")
    if assign != "fixed" and ids is None:
        raise r.error("assign", assign, "fixed (the default child), or list the children in "
                                        "stimuli.identity")
    return StimuliSpec(identity=tuple(ids or ()), assign=assign)


def _emotions(file: Path, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    allowed = f"a non-empty list of distinct emotions from {', '.join(EMOTIONS)} (or variants)"
    if not isinstance(value, list) or not value:
        raise ConfigError(file, "emotions", value, allowed)
    out = []
    for i, label in enumerate(value):
        try:
            if not isinstance(label, str):
                raise ValueError(label)
            out.append(canonical_emotion(label))
        except ValueError:
            raise ConfigError(file, f"emotions[{i}]", label, allowed) from None
    if len(set(out)) != len(out):
        raise ConfigError(file, "emotions", value, allowed)
    return tuple(out)


def _chains(r: _Reader) -> ChainSpec:
    r.check_keys(("per_emotion", "kappa_proposal", "start", "adapt", "unguided",
                  "across_participants", "lease_seconds"))
    adapt = None
    a = r.sub("adapt", nullable=True)
    if a is not None:
        a.check_keys(("target", "burn_in"))
        adapt = AdaptSpec(
            target=a.number("target", 0.4, 0.0, 1.0, lo_open=True, hi_open=True),
            burn_in=a.number("burn_in", 50, 1, None, integer=True),
        )
    across = r.boolean("across_participants", False)
    return ChainSpec(
        per_emotion=r.number("per_emotion", 4, 1, 100, integer=True),
        kappa_proposal=r.number("kappa_proposal", DEFAULT_KAPPA_PROPOSAL, 0.0, 1e5, lo_open=True),
        start=r.choice("start", "fibonacci", STARTS),
        adapt=adapt,
        unguided=r.number("unguided", 0, 0, 100, integer=True),
        across_participants=across,
        lease_seconds=_shared_only(r, "lease_seconds", across, lambda: r.number(
            "lease_seconds", DEFAULT_LEASE_SECONDS, 1.0, 86_400.0), "chains.across_participants"),
    )


def _shared_only(r: _Reader, name: str, across: bool, read, flag: str):
    """A key of across-participant designs: read (with its default) when `across`, else it
    must be absent or null (config_to_dict writes null)."""
    if across:
        return read()
    if r.data.get(name) is not None:
        raise r.error(name, r.data[name], f"null unless {flag} is true (it is false)")
    return None


def _trials(r: _Reader, across: bool) -> TrialSpec:
    r.check_keys(("per_chain", "practice", "catch_rate", "repeat_rate", "break_every",
                  "per_hold", "per_participant"))
    flag = "chains.across_participants"
    per_hold = _shared_only(r, "per_hold", across, lambda: r.number(
        "per_hold", DEFAULT_PER_HOLD, 1, 10_000, integer=True), flag)
    per_participant = _shared_only(r, "per_participant", across, lambda: r.number(
        "per_participant", DEFAULT_PER_PARTICIPANT, 1, 100_000, integer=True), flag)
    if across and per_participant % per_hold:
        lower = max(per_participant // per_hold, 1) * per_hold
        raise r.error("per_participant", per_participant,
                      f"a multiple of trials.per_hold ({per_hold}), e.g. {lower} or "
                      f"{lower + per_hold}: a participant gives every chain they hold "
                      "per_hold trials")
    return TrialSpec(
        per_chain=r.number("per_chain", 100, 1, 100_000, integer=True),
        practice=r.number("practice", 3, 0, 100, integer=True),
        catch_rate=r.number("catch_rate", 0.05, 0.0, 0.5),
        repeat_rate=r.number("repeat_rate", 0.0, 0.0, 0.5, hi_open=True),
        break_every=r.number("break_every", 100, 0, None, integer=True),
        per_hold=per_hold,
        per_participant=per_participant,
    )


def _gate(r: _Reader) -> GateSpec:
    r.check_keys(("kind", "gamma", "components", "mean", "kappa", "anneal"))
    kind = r.choice("kind", "vmf", GATE_KINDS)
    # Absent: the default annealing (none for kind none); null: a constant gamma.
    anneal = None
    a = r.sub("anneal", nullable=True)
    if a is not None:
        if kind == "none" and "anneal" in r.data:
            raise r.error("anneal", r.data.get("anneal"), "null when gate.kind is none")
        a.check_keys(("until",))
        # at least a fifth of the trials with the gate off: they are the ones analysis uses
        anneal = AnnealSpec(until=a.number("until", DEFAULT_ANNEAL_UNTIL, 0.0, 0.8, lo_open=True))
    elif "anneal" not in r.data and kind != "none":
        anneal = AnnealSpec()
    mean, kappa = r.data.get("mean"), r.data.get("kappa")
    if kind == "manual":
        if (not isinstance(mean, list) or len(mean) < 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and _finite(v) for v in mean)
                or not any(mean)):
            raise r.error("mean", mean, "for kind manual: a list of d finite numbers, not all zero")
        scale = max(abs(float(v)) for v in mean)  # divide first: squares of 1e200 overflow
        mean = tuple(float(v) / scale for v in mean)
        norm = sum(v * v for v in mean) ** 0.5
        mean = tuple(v / norm for v in mean)
        kappa = r.number("kappa", None, 0.0, 1e5)
    else:
        for name, value in (("mean", mean), ("kappa", kappa)):
            if value is not None:
                raise r.error(name, value, f"null unless gate.kind is manual (kind is {kind})")
    return GateSpec(
        kind=kind,
        gamma=r.number("gamma", 0.5, 0.0, 10.0, lo_open=True),
        components=r.number("components", 3, 1, 50, integer=True),
        mean=mean,
        kappa=kappa,
        anneal=anneal,
    )


def _display(r: _Reader) -> DisplaySpec:
    r.check_keys(("fullscreen", "window_size", "face_size", "face_offset", "keys", "mouse",
                  "fixation", "prompt"))
    size = r.data.get("window_size", [1280, 800])
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 200 <= v <= 10000
                       for v in size)):
        raise r.error("window_size", size, "[width, height], integers in [200, 10000] pixels")
    k = r.sub("keys")
    k.check_keys(("left", "right", "quit"))
    keys = KeySpec(k.text("left", "left"), k.text("right", "right"), k.text("quit", "escape"))
    if len({keys.left, keys.right, keys.quit}) != 3:
        raise r.error("keys", r.data.get("keys"), "three different keys for left, right, quit")
    prompt = r.text("prompt", "Which face looks {adjective}?")
    if not _plain_fields(prompt, ("adjective", "emotion")):
        raise r.error("prompt", prompt, "text whose only {fields} are {adjective} and {emotion} "
                                        "(write {{ and }} for literal braces)")
    return DisplaySpec(
        fullscreen=r.boolean("fullscreen", False),
        window_size=(int(size[0]), int(size[1])),
        face_size=r.number("face_size", 320, 16, 4000, integer=True),
        face_offset=r.number("face_offset", 220, 0, 4000, integer=True),
        keys=keys,
        mouse=r.boolean("mouse", True),
        fixation=r.number("fixation", 0.5, 0.0, 10.0),
        prompt=prompt,
    )


def _plain_fields(text: str, names: tuple[str, ...]) -> bool:
    """True if every replacement field of a str.format template is a bare `{name}` of `names`
    (no attribute, index, conversion or format spec: `{adjective.x}` or `{adjective[0]}` would
    fail, or worse, succeed, only when the prompt is shown)."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError:  # unbalanced braces
        return False
    return all(name is None or (name in names and conv is None and not spec)
               for _, name, spec, conv in fields)


def _agent(r: _Reader) -> AgentSpec:
    r.check_keys(("kind", "exponent", "lapse", "side_bias"))
    return AgentSpec(
        kind=r.choice("kind", "latent", AGENT_KINDS),
        exponent=r.number("exponent", 1.0, 0.0, 100.0),
        lapse=r.number("lapse", 0.0, 0.0, 1.0),
        side_bias=r.number("side_bias", 0.0, -1.0, 1.0),
    )


def _online(r: _Reader) -> OnlineSpec:
    r.check_keys(("consent", "completion_code", "redirect_url", "experimenter_token_env",
                  "decline_code", "decline_url", "screenout_code", "screenout_url", "min_window",
                  "devices", "fullscreen", "participant_links", "link_secret_env",
                  "expire_after_minutes", "time_limit_minutes", "starts_per_minute",
                  "max_in_progress", "faces"))

    def code(name: str) -> str | None:
        value = r.data.get(name)
        if value is not None and not (
                isinstance(value, str) and 1 <= len(value) <= 64
                and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)):
            raise r.error(name, value, "1-64 letters, digits, '-' or '_' (or null)")
        return value

    def url(name: str) -> str | None:
        value = r.data.get(name)
        if value is not None and not (
                isinstance(value, str) and value.startswith(("https://", "http://"))
                and len(value) <= 2000 and not any(c.isspace() for c in value)):
            raise r.error(name, value, "an http:// or https:// URL without spaces (or null)")
        return value

    def env(name: str, default: str) -> str:
        value = r.text(name, default)
        if not value.replace("_", "").isalnum() or not value.isascii() or value[0].isdigit():
            raise r.error(name, value, "an environment variable name (A-Z, 0-9, _)")
        return value

    window = r.data.get("min_window")
    if window is not None and not (
            isinstance(window, list) and len(window) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10_000
                    for v in window)):
        raise r.error("min_window", window, "[width, height] in CSS pixels, each 1-10000 "
                                            "(or null for any size)")
    devices = r.data.get("devices", list(DEVICES))
    if not (isinstance(devices, list) and devices and all(d in DEVICES for d in devices)
            and len(set(devices)) == len(devices)):
        raise r.error("devices", devices, f"a list of the devices allowed, from {list(DEVICES)}")
    consent = r.data.get("consent")
    return OnlineSpec(
        consent=None if consent is None else r.text("consent", ""),
        completion_code=code("completion_code"),
        redirect_url=url("redirect_url"),
        experimenter_token_env=env("experimenter_token_env", "MCMCP_EXPERIMENTER_TOKEN"),
        decline_code=code("decline_code"),
        decline_url=url("decline_url"),
        screenout_code=code("screenout_code"),
        screenout_url=url("screenout_url"),
        min_window=None if window is None else tuple(window),
        devices=tuple(devices),
        fullscreen=r.boolean("fullscreen", False),
        participant_links=r.choice("participant_links", "open", ("open", "signed", "recruitment")),
        link_secret_env=env("link_secret_env", "MCMCP_LINK_SECRET"),
        faces=r.choice("faces", "server", ("server", "browser")),
        **_online_limits(r),
    )


def _online_limits(r: _Reader) -> dict:
    """The online keys that end sessions (specs.OnlineSpec); null turns one off."""
    defaults = OnlineSpec()

    def optional(name: str, lo: float, hi: float | None, integer: bool):
        if r.data.get(name, getattr(defaults, name)) is None:
            return None
        return r.number(name, getattr(defaults, name), lo, hi, integer=integer, lo_open=True)

    return {"expire_after_minutes": optional("expire_after_minutes", 0, None, False),
            "time_limit_minutes": optional("time_limit_minutes", 0, None, False),
            "starts_per_minute": optional("starts_per_minute", 0, None, True),
            "max_in_progress": optional("max_in_progress", 0, None, True)}


def _gsp(r: _Reader) -> GSPSpec:
    r.check_keys(("points",))
    return GSPSpec(points=r.number("points", 32, 4, 360, integer=True))


def _analysis(r: _Reader) -> AnalysisSpec:
    r.check_keys(("precision",))
    return AnalysisSpec(precision=r.number("precision", 5.0, 0, 180, lo_open=True,
                                           hi_open=True))


def _check_gsp(r: _Reader, cfg: ExperimentConfig) -> None:
    """What a GSP session cannot have: catch and repeat trials are two-face choices, and the
    slider has no proposal concentration to adapt."""
    for key, value in (("trials.catch_rate", cfg.trials.catch_rate),
                       ("trials.repeat_rate", cfg.trials.repeat_rate)):
        if value:
            raise r.error(key, value, "0 with paradigm gsp (catch and repeat trials are "
                                      "two-face choices); set it to 0")
    if cfg.chains.adapt is not None:
        raise r.error("chains.adapt", config_to_dict(cfg)["chains"]["adapt"],
                      "null with paradigm gsp (the slider has no proposal kappa to adapt)")


def merge_overrides(base: dict, overrides: dict) -> dict:
    """Deep-merge `overrides` into a copy of `base`; dotted keys ('trials.per_chain') nest."""
    out = dict(base)
    for key, value in overrides.items():
        head, _, rest = str(key).partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, dict) and isinstance(out.get(head), dict):
            out[head] = merge_overrides(out[head], value)
        else:
            out[head] = value
    return out


def config_from_dict(data: dict, file: str | Path = "<config>", *,
                     require_checkpoint: bool = True) -> ExperimentConfig:
    """Validate a plain mapping (as read from YAML) into an ExperimentConfig.

    require_checkpoint=False leaves model.checkpoint unchecked, for simulations that never touch
    the model (they check it themselves, with `open_model`, when they do).
    """
    file = Path(file)
    r = _Reader(file, "", data)
    r.check_keys(("name", "seed", "model", "emotions", "chains", "trials", "gate", "display",
                  "agent", "block_order",
                  "online", "stimuli", "paradigm", "gsp", "analysis"))
    name = r.data.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise r.error("name", name, "required: a non-empty name of letters, digits, '-' or '_'")
    chains = _chains(r.sub("chains"))
    trials = _trials(r.sub("trials"), chains.across_participants)
    if trials.catch_rate + trials.repeat_rate > 0.9:
        raise r.error("trials.repeat_rate", trials.repeat_rate,
                      f"catch_rate + repeat_rate <= 0.9 (catch_rate is {trials.catch_rate})")
    cfg = ExperimentConfig(
        name=name,
        seed=r.number("seed", 1, 0, 2**63 - 1, integer=True),
        model=_model(r.sub("model"), require_checkpoint),
        emotions=_emotions(file, r.data.get("emotions", ["happy"])),
        chains=chains,
        trials=trials,
        gate=_gate(r.sub("gate")),
        display=_display(r.sub("display")),
        agent=None if (a := r.sub("agent", nullable=True)) is None else _agent(a),
        block_order=r.choice("block_order", "fixed", BLOCK_ORDERS),
        online=_online(r.sub("online")),
        stimuli=_stimuli(r.sub("stimuli")),
        paradigm=r.choice("paradigm", "mcmcp", PARADIGMS),
        gsp=_gsp(r.sub("gsp")),
        analysis=_analysis(r.sub("analysis")),
    )
    if cfg.paradigm == "gsp":
        _check_gsp(r, cfg)
        if "prompt" not in (r.data.get("display") or {}):  # one face: not "which face ...?"
            cfg = replace(cfg, display=replace(cfg.display, prompt=GSP_PROMPT))
    c = cfg.chains
    if c.unguided and cfg.gate.kind == "none":
        raise r.error("chains.unguided", c.unguided,
                      "0 when gate.kind is none (every chain is unguided already)")
    if c.unguided >= c.per_emotion:
        raise r.error("chains.unguided", c.unguided,
                      f"an integer in [0, {c.per_emotion - 1}]: fewer than chains.per_emotion "
                      f"({c.per_emotion}), so some chains are guided")
    if c.across_participants and cfg.stimuli.assign in ("participant", "rotated"):
        raise r.error("stimuli.assign", cfg.stimuli.assign,
                      "fixed or chain with chains.across_participants (a shared chain shows "
                      "every participant who moves it the same child)")
    if c.across_participants and cfg.trials.per_hold > cfg.trials.per_chain:
        raise r.error("trials.per_hold", cfg.trials.per_hold,
                      f"at most trials.per_chain ({cfg.trials.per_chain}): a hold is part of "
                      "one chain")
    d = cfg.model.latent_dim
    if cfg.gate.mean is not None and d is not None and len(cfg.gate.mean) != d:
        raise r.error("gate.mean", list(cfg.gate.mean), f"a list of model.latent_dim = {d} numbers")
    return cfg


def load_config(path: str | Path, overrides: dict | None = None, *,
                require_checkpoint: bool = True) -> ExperimentConfig:
    """Read and validate an experiment YAML; `overrides` (nested or dotted keys) win over it.

    require_checkpoint: as in `config_from_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "<file>", str(path), "an existing YAML file (see experiments/)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, "<file>", str(path),
                          f"UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start} "
                          "is not UTF-8; save the file as UTF-8)") from None
    except OSError as err:
        raise ConfigError(path, "<file>", str(path), f"a readable file ({err.strerror})") from None
    data = read_yaml(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, "<top level>", data, "a mapping of keys to values")
    return config_from_dict(merge_overrides(data, overrides or {}), path,
                            require_checkpoint=require_checkpoint)


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (SafeLoader keeps the last
    one silently, so `trials:` written twice would drop the first section without a word)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if first != key_node.start_mark.line + 1:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {short_repr(key)} appears twice (lines {first} and "
                f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def read_yaml(text: str, file: str | Path) -> Any:
    """Parse YAML text strictly (no duplicated keys); ConfigError naming `file` otherwise."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ConfigError(file, "<file>", str(file), f"valid YAML ({err})") from None
    except RecursionError:
        raise ConfigError(file, "<file>", str(file),
                          "YAML nested at most a few hundred levels deep") from None


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """JSON-able dict of the fully resolved config (paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(asdict(cfg))

