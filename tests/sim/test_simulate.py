"""mcmcp.simulate end to end: the CLI writes lab-format sessions and never overwrites."""

import json

import numpy as np
import pytest
import torch

from analysis.load import load_sessions
from analysis.prototypes import truth_table
from mcmcp import simulate
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import fibonacci_sphere
from mcmcp.sim import study
from mcmcp.store import read_trials
from vae.checkpoint import save_checkpoint
from vae.files import file_sha256
from vae.labels import EMOTIONS
from vae.model import ModelConfig, build_model
from vae.procedural.faces import generate_faces
from vae.store import write_store


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A small (untrained) checkpoint and face store: enough to exercise every code path."""
    root = tmp_path_factory.mktemp("model")
    # the seed study's network (what these tests were tuned on): an untrained identity model
    # draws its reference face whatever the code is
    config = ModelConfig(image_size=(16, 16), hidden=8, channels=(4, 4), kind="plain",
                         upsample="transposed")
    faceset = generate_faces(8, 2, (16, 16), 0)
    model = build_model(config, 0)
    # Untrained, every face would encode to nearly the same code (a gate with kappa ~ 1e4);
    # centring the last layer on these faces spreads their codes over the sphere.
    with torch.no_grad():
        h = model.encoder(torch.from_numpy(faceset.images).float()[:, None] / 255.0)
        model.to_mu.weight.mul_(50.0)
        model.to_mu.bias.copy_(-model.to_mu.weight @ h.mean(0))
    ckpt = save_checkpoint(root / "tiny.pt", model, config,
                           {"val_fraction": 0.25, "split_seed": 0}, "none", {})
    return ckpt, write_store(faceset, root / "faces.h5")


def run(out, ckpt, *extra):
    return simulate.main(["--checkpoint", str(ckpt), "--out", str(out), "--seed", "3", *extra])


def test_cli_manual_truth_all_emotions(tmp_path, model_files, capsys):
    ckpt, _ = model_files
    args = ("--emotion", "all", "--participants", "2", "--chains", "3", "--trials", "12",
            "--gate", "none", "--truth", "manual", "--truth-kappa", "20", "--catch-rate", "0.1",
            "--lapse", "0.1")
    summary = run(tmp_path / "a", ckpt, *args)
    assert "chain-trials/s" in capsys.readouterr().out
    for pid in ("sim001", "sim002"):
        folder = tmp_path / "a" / f"sub-{pid}" / "ses-01"
        df = read_trials(folder / "trials.csv")
        meta = json.loads((folder / "session.json").read_text())
        assert meta["status"] == "complete" and meta["participant"] == pid
        assert meta["ground_truth"]["kind"] == "manual"
        assert set(meta["ground_truth"]["densities"]) == set(EMOTIONS)
        assert meta["agent"]["name"] == "latent" and meta["agent"]["lapse"] == 0.1
        assert (df["agent"] == "latent").all() and (df["participant"] == pid).all()
        assert list(df["row"]) == list(range(len(df)))
        assert list(df["emotion"].drop_duplicates()) == list(EMOTIONS)
        chain_rows = df[df["kind"] == "chain"]
        assert len(chain_rows) == 7 * 3 * 12 and set(df["kind"]) == {"chain", "catch"}
        assert chain_rows.groupby("chain").size().eq(12).all() and df["chain"].nunique() == 21
        # chains are interleaved within a block, not run one after another
        first_block = chain_rows[chain_rows["block"] == 0]["chain"].to_numpy()
        assert np.count_nonzero(np.diff(first_block)) > 10
        catch = df[df["kind"] == "catch"]
        assert len(catch) == 7 * round(0.1 * 36 / 0.9)
        assert catch["correct"].mean() > 0.7  # vMF(k=20) categories 70 degrees apart
        assert df["trial"].dropna().tolist() == list(range(1, len(df) + 1))
        assert df["gate_gamma"].isna().all()
        # the model was never opened, but the codes belong to it: its hash is recorded
        assert meta["checkpoint_sha256"] == file_sha256(ckpt)
    assert summary["rows"] == 2 * 7 * (36 + 4)
    # analysis reads the recorded truth: modes of the 7 Fibonacci vMFs, their kappa
    truth = truth_table(load_sessions(tmp_path / "a")).set_index(["participant", "emotion"])
    assert len(truth) == 2 * 7 and (truth["truth_kappa"] == 20.0).all()
    np.testing.assert_allclose(truth.loc["sim002"].loc[list(EMOTIONS), ["truth_0", "truth_1",
                               "truth_2"]].to_numpy(), fibonacci_sphere(7, 3), atol=1e-12)
    with pytest.raises(SystemExit, match="overwrite"):
        run(tmp_path / "a", ckpt, *args)
    # same seed, same data (apart from the wall-clock timestamp)
    run(tmp_path / "b", ckpt, *args)
    a = (tmp_path / "a/sub-sim002/ses-01/trials.csv").read_text().splitlines()
    b = (tmp_path / "b/sub-sim002/ses-01/trials.csv").read_text().splitlines()
    stamp = a[0].split(",").index("timestamp")
    assert [r.split(",")[:stamp] + r.split(",")[stamp + 1:] for r in a] == \
        [r.split(",")[:stamp] + r.split(",")[stamp + 1:] for r in b]


def test_cli_data_truth_with_vmf_gate(tmp_path, model_files):
    ckpt, faces = model_files
    run(tmp_path, ckpt, "--faces", str(faces), "--emotion", "happy", "--chains", "4",
        "--trials", "30", "--gate", "vmf", "--gamma", "1.5", "--kappa-proposal", "5",
        "--exponent", "2")
    folder = tmp_path / "sub-sim001" / "ses-01"
    df = read_trials(folder / "trials.csv")
    meta = json.loads((folder / "session.json").read_text())
    assert meta["ground_truth"]["kind"] == "data"
    assert meta["gate"]["kind"] == "vmf" and meta["checkpoint_sha256"]
    gate_rows = df[df["kind"] == "gate"]
    assert len(gate_rows) > 0 and gate_rows["response"].isna().all()
    assert (~gate_rows["accepted"]).all() and gate_rows["gate_prob"].between(0, 1).all()
    shown = df[df["kind"] == "chain"]
    assert shown["rt"].gt(0).all()
    # the default annealing: gamma 1.5 falls to 0 over each chain's first 0.4 x 30 trials
    for _, rows in shown.sort_values("iteration").groupby("chain"):
        np.testing.assert_allclose(rows["gate_gamma"].to_numpy(float),
                                   1.5 * np.clip(1 - np.arange(30) / 12, 0, 1))
    assert (shown["kappa_proposal"] == 5.0).all()
    # the sides recorded agree with the response and the choice
    right_prop = shown["right_role"] == "proposal"
    assert ((shown["response"] == "right") == (right_prop == shown["chose_proposal"])).all()


def test_cli_refuses_repeat_trials(tmp_path, model_files):
    ckpt, _ = model_files
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: r\nmodel: {{checkpoint: {ckpt}}}\ntrials: {{repeat_rate: 0.1}}\n"
                   "gate: {kind: none}\n")
    with pytest.raises(SystemExit, match="repeat_rate"):
        simulate.main(["--config", str(cfg), "--truth", "manual", "--out", str(tmp_path)])


def test_manual_truth_needs_no_model_unless_the_gate_or_agent_does(tmp_path):
    missing = tmp_path / "no_such_model.pt"
    args = ("--emotion", "sad", "--chains", "2", "--trials", "5", "--truth", "manual",
            "--catch-rate", "0.2")
    run(tmp_path / "a", missing, "--gate", "none", *args)
    meta = json.loads((tmp_path / "a/sub-sim001/ses-01/session.json").read_text())
    assert meta["checkpoint_sha256"] is None and meta["ground_truth"]["kind"] == "manual"
    df = read_trials(tmp_path / "a/sub-sim001/ses-01/trials.csv")
    assert (df["kind"] == "chain").sum() == 10 and (df["kind"] == "catch").sum() == 2
    for extra, needed_by in ((("--gate", "vmf"), "gate.kind vmf"),
                             (("--gate", "none", "--agent", "classifier"), "agent.kind classifier"),
                             (("--gate", "none", "--truth", "data"), "--truth data")):
        with pytest.raises(SystemExit, match="model.checkpoint") as err:
            run(tmp_path / "b", missing, *args, *extra)
        assert needed_by in str(err.value) and str(missing) in str(err.value)
    assert not (tmp_path / "b").exists()


def test_truth_file_and_its_mode_as_analysis_reads_it(tmp_path):
    # happy: a two-component mixture whose heavier component is the prototype
    happy = VMFMixture(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), np.array([25.0, 40.0]),
                       np.array([0.7, 0.3]))
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"Happiness": happy.to_dict()}))
    run(tmp_path / "out", tmp_path / "none.pt", "--emotion", "happy", "--chains", "2",
        "--trials", "5", "--gate", "none", "--truth", str(path))
    truth = truth_table(load_sessions(tmp_path / "out"))
    assert truth["emotion"].tolist() == ["happy"] and truth["truth_kappa"].tolist() == [25.0]
    np.testing.assert_allclose(truth[["truth_0", "truth_1", "truth_2"]].to_numpy()[0],
                               [0.0, 0.0, 1.0])
    with pytest.raises(SystemExit, match="lacks sad"):
        run(tmp_path / "x", tmp_path / "none.pt", "--emotion", "sad", "--gate", "none",
            "--truth", str(path))
    path.write_text('{"happy": {"means": [[0, 0, 1]]}}')
    with pytest.raises(SystemExit, match=f"{path}: key '--truth'"):
        run(tmp_path / "y", tmp_path / "none.pt", "--gate", "none", "--truth", str(path))


def _without_times(folder):
    """A participant's files as bytes, wall-clock times removed (trials' timestamp and date
    columns, session.json's start, end and date)."""
    rows = [r.split(",") for r in (folder / "trials.csv").read_text().splitlines()]
    timed = [rows[0].index("timestamp"), rows[0].index("date")]
    meta = json.loads((folder / "session.json").read_text())
    for key in ("start_time", "end_time", "date"):
        meta.pop(key)
    return ([[c for i, c in enumerate(r) if i not in timed] for r in rows],
            json.dumps(meta, sort_keys=True))


@pytest.mark.slow
def test_a_participant_is_the_same_alone_with_others_and_in_parallel(tmp_path, model_files):
    """sim002's files do not depend on who else is simulated or on --jobs."""
    ckpt, faces = model_files
    args = ("--faces", str(faces), "--emotion", "all", "--chains", "3", "--trials", "15",
            "--gate", "vmf", "--gamma", "0.5", "--catch-rate", "0.1", "--lapse", "0.05")
    run(tmp_path / "three", ckpt, *args, "--participants", "3")
    run(tmp_path / "parallel", ckpt, *args, "--participants", "3", "--jobs", "2")
    run(tmp_path / "two", ckpt, *args, "--participants", "2")
    # alone: the same study with sim002 only, through the library call the CLI makes
    from mcmcp.config import config_from_dict

    cfg = config_from_dict({"name": "simulate", "seed": 3, "emotions": list(EMOTIONS),
                            "model": {"checkpoint": str(ckpt), "faces": str(faces)},
                            "chains": {"per_emotion": 3}, "trials": {"per_chain": 15,
                                                                     "catch_rate": 0.1},
                            "gate": {"kind": "vmf", "gamma": 0.5},
                            "agent": {"kind": "latent", "lapse": 0.05}}, "<simulate defaults>",
                           require_checkpoint=False)
    model = study.open_model_parts(cfg, "<simulate defaults>", "data")
    study.simulate_study(cfg, tmp_path / "alone", ["sim002"],
                            study.ground_truth("data", cfg, model), model,
                            file_sha256(ckpt), "<simulate defaults>")
    reference = _without_times(tmp_path / "three" / "sub-sim002" / "ses-01")
    assert len(reference[0]) > 7 * 3 * 15  # gate rows and catch trials too
    for other in ("parallel", "two", "alone"):
        assert _without_times(tmp_path / other / "sub-sim002" / "ses-01") == reference, other
    # and participants differ from each other
    assert _without_times(tmp_path / "three" / "sub-sim001" / "ses-01")[0][1:] != reference[0][1:]


@pytest.mark.parametrize("content", [b"not a store at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 64])
def test_an_unreadable_face_store_is_one_clear_line(tmp_path, model_files, content, capsys):
    ckpt, _ = model_files
    faces = tmp_path / "faces.h5"
    faces.write_bytes(content)
    with pytest.raises(SystemExit) as err:
        run(tmp_path / "out", ckpt, "--faces", str(faces), "--emotion", "happy", "--trials", "5")
    message = str(err.value)
    assert message.startswith("error: ") and str(faces) in message and "\n" not in message
    assert not (tmp_path / "out").exists()
