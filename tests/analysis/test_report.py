"""analysis.report end to end on small simulated trees, with and without a model."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from analysis.report import main
from mcmcp.sampling.densities import VMFMixture
from mcmcp.sampling.sphere import rotate_towards
from vae.checkpoint import file_sha256, save_checkpoint
from vae.faceset import FaceSet
from vae.model import ModelConfig, build_model
from vae.store import write_store

PNG = b"\x89PNG\r\n\x1a\n"


def _digest(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_report_without_checkpoint(analysis_small_study, tmp_path, capsys):
    before = _digest(analysis_small_study)
    out = tmp_path / "report"
    assert main([str(analysis_small_study), "--out", str(out), "--bootstrap", "50"]) == 0
    page = (out / "index.html").read_text()
    for words in ("Participants flagged", "Flagged: sim003", "R-hat", "below 1.05",
                  "No faces drawn", "Prototypes", "first 50% of every chain"):
        assert words in page
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"traces.png", "density.png", "overlap.png", "quality.png", "autocorrelation.png",
            "trajectories_sim001.png"} <= set(figs)
    assert all((out / "figures" / f).read_bytes().startswith(PNG) for f in figs)
    assert page.count("data:image/png;base64,") == len(figs)  # self-contained
    protos = pd.read_csv(out / "tables" / "prototypes.csv")
    attentive = protos[protos["participant"].isin(["sim001", "sim002", "all"])]
    assert (attentive["truth_deg"] < 15).all()
    conv = pd.read_csv(out / "tables" / "convergence.csv")
    assert set(conv["participant"]) == {"group", "sim001", "sim002", "sim003"}
    flags = pd.read_csv(out / "tables" / "participants.csv")
    assert flags.set_index("participant")["flagged"].to_dict() == {
        "sim001": False, "sim002": False, "sim003": True}
    # the headline comes first: a verdict against the target precision for every row
    assert page.index("Verdicts: which prototypes are precise to 5°") < page.index("R-hat")
    verdicts = pd.read_csv(out / "tables" / "verdicts.csv")
    assert set(verdicts["participant"]) == {"group", "sim001", "sim002", "sim003"}
    assert verdicts["headline"].isin(["precise enough", "needs more", "no category", "drift",
                                      "several modes", "unreliable de-guiding",
                                      "no estimate"]).all()
    wide = verdicts[(verdicts["headline"] == "needs more") & (verdicts["participant"] != "group")]
    assert (wide["cone95_deg"] > 5).all() and (wide["needed"] > wide["trials_per_chain"]).all()
    assert _digest(analysis_small_study) == before


@pytest.fixture
def analysis_model_files(tmp_path):
    config = ModelConfig(image_size=(16, 12), latent_dim=3)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", build_model(config, seed=0), config, {}, "x", {})
    rng = np.random.default_rng(0)
    faces = FaceSet(images=(rng.random((28, 16, 12)) * 255).astype(np.uint8),
                    labels=np.arange(28) % 7, identities=np.array([f"id{i // 7}" for i in range(28)]))
    return ckpt, write_store(faces, tmp_path / "faces.h5")


@pytest.mark.slow
def test_report_with_checkpoint_draws_faces_and_refuses_another_model(
        tmp_path, analysis_simulate, analysis_model_files, capsys):
    ckpt, faces = analysis_model_files
    truth = {"happy": VMFMixture.single([0.0, 0.0, 1.0], 15.0),
             "sad": VMFMixture.single([1.0, 0.0, 0.0], 15.0)}
    # one manual gatekeeper for both emotions, about 50 degrees from each prototype
    # a constant γ (no annealing): the report de-guides with importance weights
    gate = {"kind": "manual", "mean": [0.7, 0.5, 0.7], "kappa": 5.0, "gamma": 1.0,
            "anneal": None}
    data = tmp_path / "participants_data"
    analysis_simulate(data, ["sim001"], truth, seed=1, n_shown=80, gate=gate, catch_rate=0.05,
                      checkpoint_sha256=file_sha256(ckpt))
    out = tmp_path / "report"
    assert main([str(data), "--out", str(out), "--checkpoint", str(ckpt), "--faces", str(faces),
                 "--bootstrap", "20", "--burn-in", "30"]) == 0
    page = (out / "index.html").read_text()
    assert "de-guided (PSIS)" in page and "first 30 steps" in page and "No faces" not in page
    assert (out / "figures" / "faces.png").read_bytes().startswith(PNG)
    protos = pd.read_csv(out / "tables" / "prototypes.csv")
    assert {"p_target", "centroid_deg", "khat"} <= set(protos.columns)
    assert set(protos["estimate"]) == {"guided (as sampled)", "de-guided (PSIS)"}

    other = tmp_path / "other"
    analysis_simulate(other, ["sim002"], truth, seed=2, n_shown=20, checkpoint_sha256="0" * 64)
    capsys.readouterr()
    assert main([str(other), "--out", str(tmp_path / "r2"), "--checkpoint", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert "0" * 64 in err and file_sha256(ckpt) in err and str(ckpt) in err
    assert "sub-sim002/ses-01/session.json" in err


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--out", str(tmp_path / "r"), "--burn-in", "1.5"])
    assert "--burn-in 1.5" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_a_session_with_only_its_header_gets_a_report_not_a_crash(analysis_small_study,
                                                                  tmp_path, capsys):
    folder = tmp_path / "data" / "sub-sim001" / "ses-01"
    folder.mkdir(parents=True)
    source = analysis_small_study / "sub-sim001" / "ses-01"
    (folder / "session.json").write_bytes((source / "session.json").read_bytes())
    (folder / "trials.csv").write_text((source / "trials.csv").read_text().splitlines()[0] + "\n")
    out = tmp_path / "report"
    assert main([str(tmp_path / "data"), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "No chain trials recorded yet" in page and "1 session(s) found, 0 row(s)" in page
    assert "no chain trials" in capsys.readouterr().err


@pytest.mark.slow
def test_a_large_study_gets_summaries_instead_of_a_map_per_participant(
        analysis_small_study, tmp_path, monkeypatch):
    """Figures that grow with the participants give way to summaries (here: more than 2)."""
    from analysis import study_report

    monkeypatch.setattr(study_report, "MAX_LISTED", 2)
    monkeypatch.setattr(study_report, "FOLD_ROWS", 5)
    out = tmp_path / "report"
    study_report.build_report(analysis_small_study, out, n_boot=20)
    page = (out / "index.html").read_text()
    figs = {p.name for p in (out / "figures").glob("*.png")}
    assert "prototype_map.png" in figs and not any(f.startswith("trajectories_") for f in figs)
    assert f"python -m analysis.report {analysis_small_study / 'sub-sim001'}" in page
    assert "<details><summary>" in page  # long tables are folded; their CSVs are whole
    assert len(pd.read_csv(out / "tables" / "prototypes.csv")) == 2 * 4


def test_report_defaults_match_the_diagnostics():
    from analysis import diagnostics, report

    assert report.MIN_CATCH_ACCURACY == diagnostics.MIN_CATCH_ACCURACY


@pytest.mark.slow
def test_two_modes_are_named_with_their_faces_and_never_called_too_short(
        tmp_path, analysis_simulate, analysis_model_files):
    """Issue 12's two-mode case through the report: a sad category with two modes 159 degrees
    apart. The page names the modes and draws their faces; no convergence verdict asks for more
    trials where the chains split between the modes."""
    ckpt, faces = analysis_model_files
    first = np.array([1.0, 0.0, 0.0])
    second = rotate_towards(first, np.array([0.0, 1.0, 0.0]), np.radians(159.0))
    truth = {"sad": VMFMixture(np.array([first, second]), np.array([20.0, 20.0]),
                               np.array([0.5, 0.5])),
             "happy": VMFMixture.single([0.0, 0.0, 1.0], 20.0)}
    data, out = tmp_path / "participants_data", tmp_path / "report"
    analysis_simulate(data, ["sim001", "sim002"], truth, seed=12, n_shown=250,
                      kappa_proposal=5.0, checkpoint_sha256=file_sha256(ckpt))
    assert main([str(data), "--out", str(out), "--checkpoint", str(ckpt), "--faces", str(faces),
                 "--bootstrap", "20"]) == 0
    page = (out / "index.html").read_text()
    checks = pd.read_csv(out / "tables" / "checks.csv", keep_default_na=False)
    sad = checks[checks["emotion"] == "sad"]
    assert (sad["n_modes"] == 2).all() and sad["verdict"].str.contains("two modes").all()
    assert (checks.loc[checks["emotion"] == "happy", "n_modes"] == 1).all()
    for words in ("Can the estimates be trusted?", "Problems found", "sim001, sad: two modes"):
        assert words in page
    conv = pd.read_csv(out / "tables" / "convergence.csv")
    sad_conv = conv[conv["emotion"] == "sad"]
    assert not sad_conv["verdict"].str.startswith(("not converged", "borderline")).any()
    assert (out / "figures" / "mode_faces.png").read_bytes().startswith(PNG)
