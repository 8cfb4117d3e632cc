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

ROOT = Path(__file__).resolve().parents[2]
TIMING = ["rt", "onset", "gap", "dropped_frames", "timestamp", "run", "date"]  # differ by run


def make_assets(folder: Path, latent_dim: int = 3) -> tuple[Path, Path]:
    """A tiny untrained VAE checkpoint (16x16 faces) and a random 7-emotion face store."""
    from vae.checkpoint import save_checkpoint
    from vae.faceset import FaceSet
    from vae.model import ModelConfig, build_model
    from vae.store import write_store

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
    from mcmcp.config import load_config
    from mcmcp.materials import open_model
    from mcmcp.sampling.densities import class_centroids, emotion_densities
    from mcmcp.sampling.gate import Gate
    from vae.store import read_store

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
@pytest.mark.parametrize("paradigm", ["mcmcp", "gsp"])
def test_kill9_then_resume_continues_exactly(tmp_path, paradigm):
    """kill -9 mid-session: files readable, rows whole; --resume = the uninterrupted run.
    GSP (slider trials, gated after the choice) resumes exactly the same way."""
    extra = {"catch_rate": 0.15, "repeat_rate": 0.1} if paradigm == "mcmcp" else \
        {"catch_rate": 0.0, "repeat_rate": 0.0}
    cfg = str(write_config(tmp_path, paradigm=paradigm,
                           trials={"per_chain": 6, "practice": 1, "break_every": 0, **extra}))
    out = str(tmp_path / "out")
    # the reference: the same participant, uninterrupted, in another data folder
    ref_out = str(tmp_path / "ref")
    assert run_cli("--config", cfg, "--participant", "crash", "--no-window", "--out", ref_out) == 0
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
    need = ["participant", "kind", "row", "current_0", "proposal_2", "rt",
            "response" if paradigm == "mcmcp" else "gsp_choice"]
    assert shown[need].notna().all().all()
    assert json.loads((tmp_path / "out/sub-crash/ses-01/session.json").read_text())["status"] \
        == "running"

    assert run_cli("--config", cfg, "--participant", "crash", "--no-window", "--resume",
                   "--out", out) == 0
    full = read_trials(tmp_path / "out/sub-crash/ses-01/trials.csv")
    ref = read_trials(tmp_path / "ref/sub-crash/ses-01/trials.csv")
    assert len(full) == len(ref)
    pd.testing.assert_frame_equal(comparable(full), comparable(ref))
    meta = json.loads((tmp_path / "out/sub-crash/ses-01/session.json").read_text())
    assert meta["status"] == "complete" and len(meta["resumed"]) == 1
    # each run is on record, and the session clock goes on across the crash
    assert [r["run"] for r in meta["runs"]] == [1, 2] and meta["runs"][1]["status"] == "complete"
    assert meta["runs"][1]["clock_at_start"] > meta["runs"][0]["clock_at_start"]
    onsets = full.loc[full["kind"] != "gate", "onset"].to_numpy(float)
    assert (np.diff(onsets) > 0).all()
    assert full["run"].tolist() == [1] * len(partial) + [2] * (len(full) - len(partial))


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
    # the torn line, and before it the whole gate rows of the trial it tore (that trial is asked
    # again from its own stream, so they are drawn again)
    set_aside = (path.parent / "trials.csv.partial").read_text()
    expected_gates = "".join(ln for ln in lines[shown_rows[1] + 1:keep])
    assert set_aside == expected_gates + torn + "\n"
    assert all(",gate," in ln for ln in expected_gates.splitlines())
    df = read_trials(path)
    assert df["row"].tolist() == list(range(len(df)))
    assert (df["kind"] != "gate").sum() == 2 * 2 * 3
    assert list(df.columns) == schema.header(3)


def test_config_round_trips_through_session_json(tmp_path):
    from mcmcp.config import config_to_dict, load_config

    cfg = load_config(write_config(tmp_path))
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg


# ----------------------------------------------------------------------------- lab-ready


def meta_of(folder: Path) -> dict:
    return json.loads((folder / "session.json").read_text())


def test_two_agent_pilots_differ_and_record_their_streams(tmp_path):
    from mcmcp.sampling.seeds import participant_key

    cfg = str(write_config(tmp_path, trials={"per_chain": 2, "practice": 1, "catch_rate": 0.2},
                           block_order="random"))
    out = tmp_path / "out"
    for pid in ("pilot1", "pilot2"):
        assert run_cli("--config", cfg, "--participant", pid, "--no-window", "--out",
                       str(out)) == 0
    a, b = (read_trials(out / f"sub-{p}/ses-01/trials.csv") for p in ("pilot1", "pilot2"))
    assert not np.array_equal(a["proposal_0"].to_numpy(float)[:4],
                              b["proposal_0"].to_numpy(float)[:4])
    for pid in ("pilot1", "pilot2"):
        meta = meta_of(out / f"sub-{pid}/ses-01")
        assert meta["seeds"]["participant_key"] == participant_key(pid)
        assert sorted(meta["block_order"]) == ["happy", "sad"]
        blocks = read_trials(out / f"sub-{pid}/ses-01/trials.csv")
        first = blocks[blocks["kind"] == "chain"]["emotion"].iloc[0]
        assert first == meta["block_order"][0]


def test_rows_carry_lab_columns_and_a_codebook(tmp_path):
    cfg = str(write_config(tmp_path, trials={"per_chain": 2, "practice": 1, "catch_rate": 0.0}))
    assert run_cli("--config", cfg, "--participant", "C1", "--no-window", "--out",
                   str(tmp_path / "out")) == 0
    folder = tmp_path / "out/sub-C1/ses-01"
    df = read_trials(folder / "trials.csv")
    shown = df[df["kind"] != "gate"]
    assert (shown["device"] == "agent").all() and shown["key"].isna().all()
    assert (df["experiment"] == "small").all() and (df["run"] == 1).all()
    assert df["frame_rate"].isna().all()  # no window, no frame rate
    assert df["date"].iloc[0] == meta_of(folder)["date"]
    book = pd.read_csv(folder / "codebook.csv")
    assert book["column"].tolist() == list(df.columns) == schema.header(3)
    assert book["meaning"].notna().all() and set(book["dtype"]) <= {
        "string", "Int64", "Float64", "boolean"}
    plain = pd.read_csv(folder / "trials.csv")  # no dtype given: still one column per field
    assert list(plain.columns) == list(df.columns) and plain["rt"].dtype == float


def test_a_wrong_command_changes_nothing(tmp_path, capsys):
    """Every refusal comes before any file is touched (the issue's phantom `resumed`)."""
    cfg = str(write_config(tmp_path, trials={"per_chain": 2, "practice": 0, "catch_rate": 0.0}))
    out = tmp_path / "out"
    assert run_cli("--config", cfg, "--participant", "H1", "--no-window", "--out", str(out)) == 0
    capsys.readouterr()
    folder = out / "sub-H1/ses-01"
    meta = meta_of(folder)
    meta["config"]["agent"] = None  # as if a person had started it in a window, then crashed
    meta["status"] = "running"
    (folder / "session.json").write_text(json.dumps(meta))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    wrong = [
        ["--resume", "--participant", "H1", "--no-window"],                 # no agent to answer
        ["--resume", "--participant", "H1", "--no-window", "--agent", "latent", "--trials", "9"],
        ["--resume", "--participant", "../x"],
        ["--resume", "--participant", "H1", "--session", "0"],
        ["--resume", "--participant", "H1", "--accept-changed-inputs", "--agent-delay", "nan"],
    ]
    for args in wrong:
        assert run_cli(*args, "--out", str(out)) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, args
    fresh = tmp_path / "fresh"
    for args in (["--session", "0"], ["--agent-delay", "-1"], ["--agent-delay", "inf"],
                 ["--agent-delay", "nan"], ["--participant", "../x"], ["--trials", "0"]):
        full = ["--config", cfg, "--no-window", "--out", str(fresh), *args]
        if "--participant" not in args:
            full += ["--participant", "F1"]
        assert run_cli(*full) == 2, args
        assert "Traceback" not in capsys.readouterr().err
        assert not fresh.exists(), args


def test_unfinished_checkpoint_is_refused_and_a_failing_verdict_warned(tmp_path, capsys):
    from mcmcp.config import ConfigError
    from mcmcp.materials import checkpoint_fitness
    from vae.checkpoint import load_checkpoint, save_checkpoint
    from vae.model import ModelConfig, build_model

    mc = ModelConfig(image_size=(16, 16), latent_dim=3, hidden=8, channels=(4, 8))
    half = tmp_path / "half.pt"
    save_checkpoint(half, build_model(mc, seed=0), mc, {"epochs": 50}, "none", {}, epoch=11)
    cfg = write_config(tmp_path, trials={"per_chain": 1, "practice": 0, "catch_rate": 0.0})
    data = yaml.safe_load(cfg.read_text())
    data["model"]["checkpoint"] = str(half)
    cfg.write_text(yaml.safe_dump(data))
    assert run_cli("--config", str(cfg), "--participant", "U1", "--no-window", "--out",
                   str(tmp_path / "out")) == 2
    assert "stopped after epoch 11 of 50" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    loaded = load_checkpoint(half)
    loaded.epoch = 50
    assert checkpoint_fitness(loaded) == []
    loaded.verdict = {"passed": False, "summary": "classifier accuracy 0.35 < 0.8"}
    (warning,) = checkpoint_fitness(loaded)
    assert "FAILED" in warning and "0.35" in warning
    loaded.epoch = 11
    with pytest.raises(ConfigError, match="finished"):
        checkpoint_fitness(loaded)


def test_faces_not_from_the_checkpoint_are_a_loud_warning(tmp_path, capsys):
    cfg = str(write_config(tmp_path, trials={"per_chain": 1, "practice": 0, "catch_rate": 0.0}))
    assert run_cli("--config", cfg, "--participant", "W1", "--no-window", "--out",
                   str(tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert "WARNING: face store" in err and "validation identities included" in err
    assert "validation identities" in meta_of(tmp_path / "out/sub-W1/ses-01")["runs"][0][
        "warnings"][0]


@pytest.mark.slow
def test_default_face_store_is_built_on_first_use(tmp_path, monkeypatch, capsys, default_faces):
    """A fresh clone has no data/faces.h5: the deterministic default store is built (one line
    says so) instead of the session stopping with 'face store not found'."""
    import mcmcp.materials
    import vae.procedural.faces

    default = tmp_path / "data/faces.h5"
    monkeypatch.setattr(mcmcp.materials, "DEFAULT_FACES", default)
    def generated_once(**kwargs):
        # the suite's shared copy of the default set (conftest), made by this very function
        # with these very arguments: generating the 2240 faces again only costs time
        assert kwargs == {"n_identities": 160, "poses_per_emotion": 2, "size": (64, 64),
                          "seed": 0}, kwargs
        return default_faces

    monkeypatch.setattr(vae.procedural.faces, "generate_faces", generated_once)
    cfg = write_config(tmp_path, trials={"per_chain": 1, "practice": 0, "catch_rate": 0.0},
                       model={"checkpoint": str(ROOT / "vae/checkpoints/default.pt"),
                              "faces": str(default)})
    assert run_cli("--config", str(cfg), "--participant", "D1", "--no-window", "--out",
                   str(tmp_path / "out")) == 0
    assert default.is_file()
    assert "building the default synthetic face store" in capsys.readouterr().err
    missing = write_config(tmp_path, name="other", model={
        "checkpoint": str(ROOT / "vae/checkpoints/default.pt"), "faces": str(tmp_path / "no.h5")})
    assert run_cli("--config", str(missing), "--participant", "D2", "--no-window", "--out",
                   str(tmp_path / "out")) == 2  # only the default store is built for you
    assert "'model.faces'" in capsys.readouterr().err


def test_resume_refuses_a_changed_checkpoint_or_face_store(tmp_path, capsys):
    from vae.checkpoint import save_checkpoint
    from vae.faceset import FaceSet
    from vae.model import ModelConfig, build_model
    from vae.store import write_store

    cfg = write_config(tmp_path, trials={"per_chain": 2, "practice": 0, "catch_rate": 0.0})
    out = str(tmp_path / "out")
    assert run_cli("--config", str(cfg), "--participant", "R1", "--no-window", "--out", out) == 0
    folder = tmp_path / "out/sub-R1/ses-01"
    meta = meta_of(folder)
    (folder / "session.json").write_text(json.dumps({**meta, "status": "running"}))
    ckpt, faces = make_assets(tmp_path)
    old_ckpt = meta["checkpoint_sha256"]
    mc = ModelConfig(image_size=(16, 16), latent_dim=3, hidden=8, channels=(4, 8))
    ckpt.unlink()
    save_checkpoint(ckpt, build_model(mc, seed=1), mc, {}, "none", {})  # "retrained"
    resume = ["--participant", "R1", "--no-window", "--resume", "--out", out]
    before = (folder / "session.json").read_bytes()
    assert run_cli(*resume) == 2
    err = capsys.readouterr().err
    assert old_ckpt in err and "is now" in err and "--accept-changed-inputs" in err
    assert (folder / "session.json").read_bytes() == before
    faces.unlink()  # "rebuilt" face store
    rng = np.random.default_rng(5)
    write_store(FaceSet(rng.integers(0, 256, (42, 16, 16), dtype=np.uint8),
                        np.repeat(np.arange(7), 6), np.array([f"id{i % 6}" for i in range(42)]),
                        source="test"), faces)
    assert run_cli(*resume) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "faces" in err and meta["faces_sha256"] in err
    assert run_cli(*resume, "--accept-changed-inputs") == 0
    last = meta_of(folder)["runs"][-1]
    assert last["accepted_changed_inputs"] and last["checkpoint_sha256"] != old_ckpt
    ckpt.unlink()
    mc4 = ModelConfig(image_size=(16, 16), latent_dim=4, hidden=8, channels=(4, 8))
    save_checkpoint(ckpt, build_model(mc4, seed=0), mc4, {}, "none", {})
    (folder / "session.json").write_text(json.dumps({**meta_of(folder), "status": "running"}))
    assert run_cli(*resume, "--accept-changed-inputs") == 2  # never, even when accepted
    assert "latent size is 4" in capsys.readouterr().err


def test_leftovers_of_a_killed_start_do_not_block_the_session(tmp_path, capsys):
    """A start killed while creating the session leaves at most a hidden temporary folder
    (nothing half-made under the session's name); an earlier version left an empty-handed
    ses-01. Resume says there is no session; a fresh start takes over."""
    cfg = str(write_config(tmp_path, trials={"per_chain": 1, "practice": 0, "catch_rate": 0.0}))
    out = tmp_path / "out"
    leftover = out / "sub-K1/.ses-01.abc123.creating"
    leftover.mkdir(parents=True)
    (leftover / "session.json").write_text('{"config": {"na')
    assert run_cli("--participant", "K1", "--no-window", "--resume", "--out", str(out)) == 2
    assert "start the session without --resume" in capsys.readouterr().err
    assert run_cli("--config", cfg, "--participant", "K1", "--no-window", "--out", str(out)) == 0
    assert sorted(p.name for p in (out / "sub-K1").iterdir()) == ["ses-01"]
    old = out / "sub-K2/ses-01"
    old.mkdir(parents=True)
    (old / "trials.csv").write_text(",".join(schema.header(3)) + "\n")
    assert run_cli("--config", cfg, "--participant", "K2", "--no-window", "--out", str(out)) == 0
    assert meta_of(old)["status"] == "complete"


def cli_process(*args: str, limit: int | None = None) -> subprocess.Popen:
    """`python -m mcmcp.run ARGS` as its own process; `limit`: the largest file it may write
    (RLIMIT_FSIZE, bytes), a disk that is full for it (writes fail with EFBIG like ENOSPC)."""
    import resource

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen([sys.executable, "-m", "mcmcp.run", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=cap)


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_a_session_runs_in_one_process_at_a_time(tmp_path):
    """While one process runs a session, a --resume and a fresh start of it are refused; once
    that process is dead (kill -9) its lock is gone and --resume finishes the session once."""
    cfg = str(write_config(tmp_path, trials={"per_chain": 50, "practice": 0, "catch_rate": 0.0}))
    out = str(tmp_path / "out")
    first = cli_process("--config", cfg, "--participant", "L1", "--no-window", "--agent-delay",
                        "0.5", "--out", out)  # 200 trials x 0.5 s: far longer than this test
    for line in first.stdout:  # the session is running and holds its lock
        if line.startswith("ONSET trial=2 "):
            break
    second = cli_process("--participant", "L1", "--no-window", "--resume", "--out", out)
    third = cli_process("--config", cfg, "--participant", "L1", "--no-window", "--out", out)
    for proc, expect in ((second, f"is open in process {first.pid}"), (third, "already exists")):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and expect in err and len(errors(err)) == 1, err
        assert "Traceback" not in err
    assert first.poll() is None, "the first session should still be running"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert run_cli("--participant", "L1", "--no-window", "--resume", "--out", out) == 0
    df = read_trials(tmp_path / "out/sub-L1/ses-01/trials.csv")
    shown = df[df["kind"] != "gate"]
    assert shown["trial"].tolist() == list(range(1, 2 * 2 * 50 + 1))  # each trial once
    assert df["row"].tolist() == list(range(len(df)))


@pytest.mark.slow
def test_disk_full_at_start_and_mid_session(tmp_path):
    # a constant gamma: its gate rows fill the small disk mid-session (an annealed gate writes
    # fewer rows)
    cfg = str(write_config(tmp_path, trials={"per_chain": 6, "practice": 1, "catch_rate": 0.15,
                                             "repeat_rate": 0.1, "break_every": 0},
                           gate={"kind": "vmf", "gamma": 0.05, "anneal": None}))
    out = str(tmp_path / "out")
    run = ["--config", cfg, "--participant", "Z1", "--no-window", "--out", out]
    start = cli_process(*run, limit=2000)  # session.json itself does not fit
    _, err = start.communicate(timeout=120)
    assert start.returncode == 2 and "disk is full" in err and "Traceback" not in err, err
    assert len(errors(err)) == 1 and "was not created" in err
    assert not (tmp_path / "out").exists()  # nothing left behind, not even the data folder

    mid = cli_process(*run, limit=20_000)  # trials.csv fills the disk after some 50 rows
    _, err = mid.communicate(timeout=120)
    assert mid.returncode == 2 and "disk is full" in err and "Traceback" not in err, err
    assert len(errors(err)) == 1
    folder = tmp_path / "out/sub-Z1/ses-01"
    assert meta_of(folder)["status"] == "error" and "trials.csv" in meta_of(folder)["error"]
    kept = read_trials(folder / "trials.csv")
    assert 20 < len(kept) and kept["row"].tolist() == list(range(len(kept)))

    still = cli_process(*run[2:], "--resume", limit=20_000)  # still full: one line again
    _, err = still.communicate(timeout=120)
    assert still.returncode == 2 and "Traceback" not in err and len(errors(err)) == 1, err

    assert run_cli(*run[2:], "--resume") == 0  # space freed: the session completes exactly
    ref_out = str(tmp_path / "ref")
    assert run_cli("--config", cfg, "--participant", "Z1", "--no-window", "--out", ref_out) == 0
    pd.testing.assert_frame_equal(
        comparable(read_trials(folder / "trials.csv")),
        comparable(read_trials(tmp_path / "ref/sub-Z1/ses-01/trials.csv")))


def test_an_unreadable_face_store_is_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path, trials={"per_chain": 1, "practice": 0, "catch_rate": 0.0})
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)  # an HDF5 signature, then nothing
    data = yaml.safe_load(cfg.read_text())
    data["model"]["faces"] = str(bad)
    cfg.write_text(yaml.safe_dump(data))
    assert run_cli("--config", str(cfg), "--participant", "B1", "--no-window", "--out",
                   str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "'model.faces'" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
