"""Experiment YAML validation: every error names the file, the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mcmcp.config import ConfigError, config_from_dict, config_to_dict, load_config
from mcmcp.materials import open_model
from mcmcp.specs import prompt_for
from tests.lab.test_session import make_assets

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "experiments").glob("*.yaml"))
LAB = [p for p in SHIPPED if not p.stem.startswith("vae_")]  # vae_*: training configs


@pytest.fixture
def ckpt(tmp_path):
    return make_assets(tmp_path)[0]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base(ckpt: Path, **more) -> dict:
    return {"name": "t", "model": {"checkpoint": str(ckpt)}, **more}


@pytest.mark.parametrize("path", LAB, ids=[p.stem for p in LAB])
def test_shipped_configs_load(path, ckpt):
    cfg = load_config(path, {"model.checkpoint": str(ckpt)})
    assert cfg.name == path.stem
    assert config_from_dict(config_to_dict(cfg), path) == cfg


def test_defaults_and_overrides(tmp_path, ckpt):
    cfg = load_config(write(tmp_path, base(ckpt, emotions=["Happiness", "sad"])),
                      {"trials.per_chain": 7, "display": {"fullscreen": True}})
    assert cfg.emotions == ("happy", "sad")
    assert cfg.trials.per_chain == 7 and cfg.trials.practice == 3
    assert cfg.display.fullscreen and cfg.display.keys.left == "left"
    assert cfg.gate.kind == "vmf" and cfg.agent is None
    assert prompt_for(cfg, "sad") == "Which face looks sadder?"


def test_across_participant_design_reads_its_keys_and_defaults(ckpt):
    """`chains: {across_participants: true, per_emotion: 8}`: the study's chains are shared,
    with the defaults for holds, participants and leases; the resolved config round-trips."""
    cfg = config_from_dict({**base(ckpt), "chains": {"across_participants": True,
                                                     "per_emotion": 8},
                            "trials": {"per_hold": 5, "per_participant": 40}})
    assert cfg.chains.across_participants and cfg.chains.per_emotion == 8
    assert (cfg.trials.per_hold, cfg.trials.per_participant) == (5, 40)
    assert cfg.chains.lease_seconds == 120.0
    assert config_from_dict(config_to_dict(cfg)) == cfg
    own = config_from_dict(base(ckpt))
    assert not own.chains.across_participants and own.trials.per_hold is None
    assert own.chains.lease_seconds is None


def test_gsp_asks_about_one_face_unless_told_otherwise(ckpt):
    data = {**base(ckpt), "paradigm": "gsp", "trials": {"catch_rate": 0.0}}
    cfg = config_from_dict(data)
    assert prompt_for(cfg, "sad") == "Move the slider until the face looks as sad as it can"
    cfg = config_from_dict({**data, "display": {"prompt": "How {emotion}?"}})
    assert prompt_for(cfg, "sad") == "How sad?"


@pytest.mark.parametrize(
    ("changes", "key", "value", "allowed"),
    [
        ({"trials": {"per_chian": 5}}, "trials.per_chian", "5", "known keys here"),
        ({"colour": "red"}, "colour", "'red'", "known keys here"),
        ({"trials": {"per_chain": "many"}}, "trials.per_chain", "'many'", "an integer"),
        ({"display": {"mouse": "yes"}}, "display.mouse", "'yes'", "true or false"),
        ({"trials": {"catch_rate": 0.7}}, "trials.catch_rate", "0.7", "[0.0, 0.5]"),
        ({"gate": {"gamma": 0}}, "gate.gamma", "0", "(0.0, 10.0]"),
        ({"gate": {"kind": "magic"}}, "gate.kind", "'magic'", "none, vmf, mixture"),
        ({"emotions": ["happy", "bored"]}, "emotions[1]", "'bored'", "angry, disgusted"),
        ({"chains": {"start": "random"}}, "chains.start", "'random'", "fibonacci"),
        ({"display": {"window_size": [10, 800]}}, "display.window_size", "[10, 800]", "[200"),
        ({"gate": {"kind": "vmf", "mean": [1, 0, 0]}}, "gate.mean", "[1, 0, 0]", "manual"),
        ({"model": {"checkpoint": "nowhere/missing.pt"}}, "model.checkpoint",
         "'nowhere/missing.pt'", "an existing checkpoint file"),
        ({"paradigm": "slider"}, "paradigm", "'slider'", "mcmcp, gsp"),
        ({"paradigm": "gsp", "gsp": {"points": 2}}, "gsp.points", "2", "[4, 360]"),
        ({"paradigm": "gsp", "trials": {"catch_rate": 0.1}}, "trials.catch_rate", "0.1",
         "0 with paradigm gsp"),
        ({"paradigm": "gsp", "trials": {"catch_rate": 0.0},
          "chains": {"adapt": {"target": 0.4}}}, "chains.adapt", "'target': 0.4",
         "null with paradigm gsp"),
        ({"trials": {"per_hold": 5}}, "trials.per_hold", "5",
         "null unless chains.across_participants is true"),
        ({"chains": {"lease_seconds": 60}}, "chains.lease_seconds", "60",
         "null unless chains.across_participants is true"),
        ({"chains": {"across_participants": "yes"}}, "chains.across_participants", "'yes'",
         "true or false"),
        ({"chains": {"across_participants": True},
          "trials": {"per_hold": 7, "per_participant": 60}}, "trials.per_participant", "60",
         "a multiple of trials.per_hold (7), e.g. 56 or 63"),
        ({"chains": {"across_participants": True}, "trials": {"per_chain": 5}},
         "trials.per_hold", "10", "at most trials.per_chain (5)"),
        ({"chains": {"across_participants": True, "lease_seconds": 0}}, "chains.lease_seconds",
         "0", "[1.0, 86400.0]"),
    ],
)
def test_errors_name_file_key_value_allowed(tmp_path, ckpt, changes, key, value, allowed):
    data = base(ckpt)
    for section, content in changes.items():
        if isinstance(content, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **content}
        else:
            data[section] = content
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and f"'{key}'" in msg and value in msg and allowed in msg, msg
    assert info.value.key == key


def test_missing_name_and_file(tmp_path, ckpt):
    with pytest.raises(ConfigError, match="'name'.*required"):
        load_config(write(tmp_path, {"model": {"checkpoint": str(ckpt)}}))
    with pytest.raises(ConfigError, match="absent.yaml"):
        load_config(tmp_path / "absent.yaml")


def test_latent_size_mismatch(tmp_path, ckpt):
    path = write(tmp_path, base(ckpt, model={"checkpoint": str(ckpt), "latent_dim": 5}))
    cfg = load_config(path)
    with pytest.raises(ConfigError) as info:
        open_model(cfg, path)
    msg = str(info.value)
    assert str(path) in msg and "'model.latent_dim'" in msg and "5" in msg and "which is 3" in msg
    manual = write(tmp_path, base(ckpt, gate={"kind": "manual", "mean": [1, 0], "kappa": 4}))
    with pytest.raises(ConfigError, match="'gate.mean'.*3 numbers"):
        open_model(load_config(manual), manual)
    assert open_model(load_config(write(tmp_path, base(ckpt)))).config.latent_dim == 3


def test_manual_gate_mean_is_normalised(tmp_path, ckpt):
    cfg = load_config(write(tmp_path, base(ckpt, gate={"kind": "manual", "mean": [3, 0, 4],
                                                      "kappa": 2.5})))
    assert cfg.gate.mean == pytest.approx((0.6, 0.0, 0.8))
    assert cfg.gate.kappa == 2.5


# ----------------------------------------------------------------------------- adversarial


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"display": {"fixation": float("nan")}}, "display.fixation"),
        ({"chains": {"kappa_proposal": float("nan")}}, "chains.kappa_proposal"),
        ({"trials": {"catch_rate": float("nan")}}, "trials.catch_rate"),
        ({"gate": {"gamma": float("inf")}}, "gate.gamma"),
        ({"chains": {"adapt": {"burn_in": 10, "target": float("nan")}}}, "chains.adapt.target"),
        ({"gate": {"kind": "manual", "mean": [1, float("nan"), 0], "kappa": 3}}, "gate.mean"),
        ({"gate": {"kind": "manual", "mean": [1, 0, 0], "kappa": float("inf")}}, "gate.kappa"),
        ({"agent": {"lapse": float("-inf")}}, "agent.lapse"),
        ({"seed": 10**400}, "seed"),
    ],
)
def test_nan_and_inf_are_refused(tmp_path, ckpt, changes, key):
    with pytest.raises(ConfigError) as info:
        config_from_dict({**base(ckpt), **changes}, "x.yaml")
    assert info.value.key == key


@pytest.mark.parametrize("section", ["agent", "gate", "trials", "chains", "display", "model"])
@pytest.mark.parametrize("value", [False, 0, "", [], True])
def test_falsy_or_wrong_sections_are_errors_not_defaults(ckpt, section, value):
    with pytest.raises(ConfigError) as info:
        config_from_dict({**base(ckpt), section: value}, "x.yaml")
    assert info.value.key == section and "mapping" in str(info.value)


def test_null_means_none_only_where_none_exists(ckpt):
    assert config_from_dict({**base(ckpt), "agent": None}).agent is None
    assert config_from_dict({**base(ckpt), "chains": {"adapt": None}}).chains.adapt is None
    for section in ("gate", "trials", "display"):
        with pytest.raises(ConfigError, match=f"'{section}'"):
            config_from_dict({**base(ckpt), section: None})
    with pytest.raises(ConfigError, match="'chains.adapt'"):
        config_from_dict({**base(ckpt), "chains": {"adapt": False}})
    with pytest.raises(ConfigError, match="'display.keys'"):
        config_from_dict({**base(ckpt), "display": {"keys": None}})


@pytest.mark.parametrize("prompt", ["Which is {adjective.nope}?", "{adjective[x]}", "{0}", "{}",
                                    "{adjective!r}", "{adjective:>9}", "{nope}", "open {"])
def test_prompt_fields_are_checked_at_load(ckpt, prompt):
    with pytest.raises(ConfigError, match="'display.prompt'"):
        config_from_dict({**base(ckpt), "display": {"prompt": prompt}})
    ok = config_from_dict({**base(ckpt), "display": {"prompt": "{{literal}} {emotion}: {adjective}"}})
    assert prompt_for(ok, "sad") == "{literal} sad: sadder"


def test_yaml_files_that_cannot_be_read_give_one_clean_error(tmp_path, ckpt):
    good = f"name: t\nmodel: {{checkpoint: {ckpt}}}\n"
    cases = {
        "duplicate.yaml": (good + "trials: {per_chain: 3}\ntrials: {per_chain: 4}\n").encode(),
        "latin1.yaml": (good + "display: {prompt: 'Quel visage est plus \xe9mu ?'}\n")
        .encode("latin-1"),
        "deep.yaml": (good + "gate: " + "[" * 100_000 + "]" * 100_000 + "\n").encode(),
        # aliases nest 9 lists of 9 nine times: 9**9 leaves if anything printed it whole
        "bomb.yaml": (good + "gate:\n  kappa:\n  - &a ['x','x','x','x','x','x','x','x','x']\n"
                      + "".join(f"  - &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                                for p, c in zip("abcdefgh", "bcdefghi", strict=True))
                      + "  mean: *i\n").encode(),
        "huge_value.yaml": (good + "emotions: [" + "x" * 3_000_000 + "]\n").encode(),
    }
    expect = {"duplicate.yaml": "appears twice", "latin1.yaml": "UTF-8",
              "deep.yaml": "nested", "bomb.yaml": "'gate.mean'", "huge_value.yaml": "'emotions[0]'"}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        msg = str(info.value)
        assert str(path) in msg and expect[name] in msg, (name, msg[:300])
        assert len(msg) < 1500, (name, len(msg))


def test_fuzzed_configs_are_accepted_whole_or_refused_cleanly(ckpt):
    """Random edits of a valid config: each is refused with a ConfigError of a few lines, or
    accepted as a config whose every number is finite and in range and which round-trips
    through session.json. Never a traceback, never a silent default."""
    import json
    import math

    from mcmcp.config import config_to_dict

    rng = np.random.default_rng(0)
    values = [None, False, True, 0, -1, 1, 3, 0.5, 1e308, -1e308, float("nan"), float("inf"),
              float("-inf"), 10**30, "", "x", "happy", "{adjective.x}", [], [1], [1, 0, 0],
              ["happy", "sad"], {}, {"kind": "manual"}, {"a": 1}, "fixed", "rotated", "none"]
    template = {
        "name": "f", "seed": 3, "model": {"checkpoint": str(ckpt), "latent_dim": 3},
        "emotions": ["happy", "sad"], "block_order": "fixed",
        "chains": {"per_emotion": 2, "kappa_proposal": 5.0, "start": "uniform",
                   "adapt": {"target": 0.4, "burn_in": 5}},
        "trials": {"per_chain": 5, "practice": 1, "catch_rate": 0.1, "repeat_rate": 0.1,
                   "break_every": 4},
        "gate": {"kind": "vmf", "gamma": 0.5, "components": 2},
        "display": {"fullscreen": False, "window_size": [800, 600], "face_size": 200,
                    "face_offset": 150, "keys": {"left": "f", "right": "j", "quit": "escape"},
                    "mouse": True, "fixation": 0.3, "prompt": "Which is {adjective}?"},
        "agent": {"kind": "latent", "exponent": 1.0, "lapse": 0.1, "side_bias": 0.0},
    }

    def paths(d, prefix=()):
        for k, v in d.items():
            yield (*prefix, k)
            if isinstance(v, dict):
                yield from paths(v, (*prefix, k))

    all_paths = list(paths(template))
    accepted = refused = 0
    for _ in range(600):
        data = json.loads(json.dumps(template))
        for _ in range(int(rng.integers(1, 4))):
            path = all_paths[int(rng.integers(len(all_paths)))]
            holder = data
            for k in path[:-1]:
                holder = holder.get(k) if isinstance(holder, dict) else None
            if not isinstance(holder, dict):
                continue
            if rng.random() < 0.15:
                holder.pop(path[-1], None)
            else:
                holder[path[-1]] = values[int(rng.integers(len(values)))]
        try:
            cfg = config_from_dict(data, "fuzz.yaml")
        except ConfigError as err:
            refused += 1
            assert len(str(err)) < 1000 and str(err).startswith("fuzz.yaml: key ")
            continue
        accepted += 1
        plain = config_to_dict(cfg)
        text = json.dumps(plain, allow_nan=False)  # no NaN/inf anywhere in what a session saves
        assert config_from_dict(json.loads(text)) == cfg
        numbers = [v for v in _leaves(plain) if isinstance(v, float)]
        assert all(math.isfinite(v) for v in numbers)
        assert cfg.trials.catch_rate + cfg.trials.repeat_rate <= 0.9
        assert (cfg.agent is None) == (data.get("agent") is None)
        assert (cfg.chains.adapt is None) == (data.get("chains", {}).get("adapt") is None)
        assert isinstance(data.get("gate", {}), dict) and isinstance(data.get("trials", {}), dict)
        prompt_for(cfg, cfg.emotions[0])
    assert accepted > 50 and refused > 300


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value
