"""The session loop headless and through the CLI: same loop as the window, crash + exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mcmcp import schema
from mcmcp.config import config_from_dict
from mcmcp.engine import Engine
from mcmcp.render import Renderer
from mcmcp.session import HeadlessDisplay, run_session
from mcmcp.store import SessionStore, read_trials

ROOT = Path(__file__).resolve().parent.parent
TIMING = ["rt", "onset", "gap", "dropped_frames", "timestamp"]


def make_assets(folder: Path, latent_dim: int = 3) -> tuple[Path, Path]:
    """A tiny untrained VAE checkpoint (16x16 faces) and a random 7-emotion face store."""
    from vae.checkpoint import save_checkpoint
    from vae.datasets import write_store
    from vae.faceset import FaceSet
    from vae.model import ModelConfig, build_model

    folder.mkdir(parents=True, exist_ok=True)
    ckpt, faces = folder / f"tiny{latent_dim}.pt", folder / "faces.h5"
    if not ckpt.exists():
        cfg = ModelConfig(image_size=(16, 16), latent_dim=latent_dim, hidden=8, channels=(4, 8))
        save_checkpoint(ckpt, build_model(cfg, seed=0), cfg, {}, "none", {})
    if not faces.exists():
        rng = np.random.default_rng(0)
        n = 7 * 6
        write_store(FaceSet(rng.integers(0, 256, (n, 16, 16), dtype=np.uint8),
                            np.repeat(np.arange(7), 6),
                            np.array([f"id{i % 6}" for i in range(n)]), source="test"), faces)
    return ckpt, faces


def write_config(folder: Path, **changes) -> Path:
    """A small experiment YAML on the tiny assets; `changes` replace top-level sections."""
    ckpt, faces = make_assets(folder)
    data = {
        "name": "small",
        "seed": 11,
        "model": {"checkpoint": str(ckpt), "faces": str(faces)},
        "emotions": ["happy", "sad"],
        "chains": {"per_emotion": 2},
        "trials": {"per_chain": 4, "practice": 1, "catch_rate": 0.2, "repeat_rate": 0.1,
                   "break_every": 6},
        "gate": {"kind": "vmf", "gamma": 0.05},
        "display": {"fixation": 0.05},
        "agent": {"kind": "latent"},
    }
    data.update(changes)
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args: str) -> int:
    """`python -m mcmcp.run ARGS` in this process (the --no-window path imports no PsychoPy)."""
    from mcmcp.run import main

    try:
        return main(list(args))
    except SystemExit as exit_:  # argparse errors
        return int(exit_.code)


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[*TIMING, "participant"]).reset_index(drop=True)


def test_headless_loop_in_process(tmp_path):
    """The loop run_session drives (same as the window's) saves one row per event, in order."""
    from mcmcp.agents import make_agent
    from mcmcp.config import load_config, open_model
    from mcmcp.densities import class_centroids, emotion_densities
    from mcmcp.gate import Gate
    from vae.datasets import read_store

    cfg = load_config(write_config(tmp_path))
    loaded = open_model(cfg)
    faces = read_store(cfg.model.faces)
    dens = emotion_densities(loaded, faces)
    gates = {e: Gate(dens[e], cfg.gate.gamma) for e in cfg.emotions}
    agent = make_agent(cfg.agent, densities=dens)
    store = SessionStore.create(tmp_path / "data", "sim001", 1, 3, {"config": {}})
    engine = Engine(cfg, 3, "sim001", 1, gates, class_centroids(loaded, faces), agent.name)
    lines: list[str] = []
    status = run_session(cfg, engine, store, HeadlessDisplay(lines.append), Renderer(loaded.model),
                         agent, lines.append)
    store.finish(status=status)
    df = store.read_rows()
    assert status == "complete"
    assert df["row"].tolist() == list(range(len(df)))
    shown = df[df["kind"] != "gate"]
    assert shown["trial"].tolist() == list(range(1, len(engine.schedule) + 1))
    assert [s.kind for s in engine.schedule] == shown["kind"].tolist()
    assert (df["agent"] == "latent").all()
    assert sum(line.startswith("ONSET") for line in lines) == len(engine.schedule)
    assert {"SCREEN instructions", "SCREEN practice", "SCREEN block", "SCREEN end"} <= set(lines)
    # the measured preparation gap exists wherever no message screen intervened
    assert shown["gap"].notna().sum() >= len(shown) // 2
    assert (shown["gap"].dropna() >= 0).all()


@pytest.mark.slow
def test_no_window_never_imports_psychopy(tmp_path):
    cfg = write_config(tmp_path)
    code = (
        "import sys; from mcmcp.run import main; "
        f"rc = main(['--config', {str(cfg)!r}, '--participant', 'P001', '--no-window', "
        f"'--out', {str(tmp_path / 'out')!r}]); "
        "bad = sorted(m for m in sys.modules if m == 'psychopy' or m.startswith('psychopy.')); "
        "print('PSYCHOPY', bad); sys.exit(rc or bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PSYCHOPY []" in result.stdout
    meta = json.loads((tmp_path / "out/sub-P001/ses-01/session.json").read_text())
    assert meta["status"] == "complete" and meta["agent"] == "latent"
    assert meta["config"]["trials"]["per_chain"] == 4
    assert len(meta["checkpoint_sha256"]) == 64 and "psychopy" not in meta["versions"]


def test_refuses_to_overwrite_and_validates_ids(tmp_path, capsys):
    cfg = str(write_config(tmp_path, trials={"per_chain": 1, "practice": 0, "catch_rate": 0.0}))
    out = str(tmp_path / "out")
    assert run_cli("--config", cfg, "--participant", "P7", "--no-window", "--out", out) == 0
    before = (tmp_path / "out/sub-P7/ses-01/trials.csv").read_bytes()
    capsys.readouterr()
    assert run_cli("--config", cfg, "--participant", "P7", "--no-window", "--out", out) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err
    assert (tmp_path / "out/sub-P7/ses-01/trials.csv").read_bytes() == before
    for bad in ("../x", "a/b", "Jane Doe", ""):
        rc = run_cli("--config", cfg, "--participant", bad, "--no-window", "--out", out)
        assert rc == 2 and "participant id" in capsys.readouterr().err, bad
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sub-P7"]


@pytest.mark.slow
def test_kill9_then_resume_continues_exactly(tmp_path):
    """kill -9 mid-session: files readable, rows whole; --resume = the uninterrupted run."""
    cfg = str(write_config(tmp_path, trials={"per_chain": 6, "practice": 1, "catch_rate": 0.15,
                                             "repeat_rate": 0.1, "break_every": 0}))
    out = str(tmp_path / "out")
    assert run_cli("--config", cfg, "--participant", "ref", "--no-window", "--out", out) == 0
    cmd = [sys.executable, "-m", "mcmcp.run", "--config", cfg, "--participant", "crash",
           "--no-window", "--agent-delay", "0.03", "--out", out]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    deadline = time.monotonic() + 90
    for line in proc.stdout:  # wait for the onset marker, never a guessed sleep
        if line.startswith("ONSET trial=9 ") or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = read_trials(tmp_path / "out/sub-crash/ses-01/trials.csv")
    shown = partial[partial["kind"] != "gate"]
    assert 7 <= len(shown) <= 9  # the trial on screen (and perhaps the one before) may be lost
    need = ["participant", "kind", "row", "current_0", "proposal_2", "response", "rt"]
    assert shown[need].notna().all().all()
    assert json.loads((tmp_path / "out/sub-crash/ses-01/session.json").read_text())["status"] \
        == "running"

    assert run_cli("--config", cfg, "--participant", "crash", "--no-window", "--resume",
                   "--out", out) == 0
    full = read_trials(tmp_path / "out/sub-crash/ses-01/trials.csv")
    ref = read_trials(tmp_path / "out/sub-ref/ses-01/trials.csv")
    assert len(full) == len(ref)
    pd.testing.assert_frame_equal(comparable(full), comparable(ref))
    meta = json.loads((tmp_path / "out/sub-crash/ses-01/session.json").read_text())
    assert meta["status"] == "complete" and len(meta["resumed"]) == 1


def test_resume_sets_aside_a_torn_line(tmp_path):
    """A line torn by a crash goes to trials.csv.partial and the run continues."""
    cfg = str(write_config(tmp_path, trials={"per_chain": 3, "practice": 0, "catch_rate": 0.0}))
    out = str(tmp_path / "out")
    assert run_cli("--config", cfg, "--participant", "t1", "--no-window", "--out", out) == 0
    path = tmp_path / "out/sub-t1/ses-01/trials.csv"
    lines = path.read_text().splitlines(keepends=True)
    shown_rows = [i for i, ln in enumerate(lines[1:], 1) if ",chain," in ln]
    keep = shown_rows[2]  # cut inside the third shown trial's line, as a crash could
    torn = lines[keep][:40]
    path.write_text("".join(lines[:keep]) + torn)
    meta_path = tmp_path / "out/sub-t1/ses-01/session.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "status": "running"}))
    assert run_cli("--config", cfg, "--participant", "t1", "--no-window", "--resume",
                   "--out", out) == 0
    assert (path.parent / "trials.csv.partial").read_text() == torn + "\n"
    df = read_trials(path)
    assert df["row"].tolist() == list(range(len(df)))
    assert (df["kind"] != "gate").sum() == 2 * 2 * 3
    assert list(df.columns) == schema.header(3)


def test_config_round_trips_through_session_json(tmp_path):
    from mcmcp.config import config_to_dict, load_config

    cfg = load_config(write_config(tmp_path))
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg
