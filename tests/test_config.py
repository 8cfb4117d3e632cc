"""Experiment YAML validation: every error names the file, the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_session import make_assets

from mcmcp.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    open_model,
    prompt_for,
)

ROOT = Path(__file__).resolve().parent.parent
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
