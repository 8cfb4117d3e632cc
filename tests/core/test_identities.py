"""One child at a time (issue 11): stimuli.identity in configs, sessions, simulations and the
report, with a tiny untrained identity model (it draws each child's reference face, so two
children give visibly different faces for one code) and real torch decodes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mcmcp.config import ConfigError, config_from_dict, load_config
from mcmcp.engine import Engine
from mcmcp.identities import Assignment, assignment, face_sha256, open_identities
from mcmcp.render import Renderer
from mcmcp.session import SessionFlow
from mcmcp.store import read_trials
from tests.lab.test_session import run_cli
from vae.checkpoint import load_checkpoint, save_checkpoint
from vae.identity import reference_face, reference_images
from vae.model import ModelConfig, build_model
from vae.procedural.faces import generate_faces
from vae.store import read_store, write_store

CHILDREN = ["syn0002", "syn0004"]
# The renderer decodes a pair in one batch, a direct decode one face: float32 sums taken in
# another order by the BLAS and oneDNN kernels, whose split can differ between batch sizes and
# thread counts, move a pixel by up to about 1e-5 (7.1e-6 seen once on a loaded xdist worker).
# A screen shows 1/255 = 3.9e-3 steps and two children differ by > 0.02 on average, so 1e-4
# still tells a wrong child or a wrong code from the right one.
SAME_FACE = 1e-4


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """(identity checkpoint, plain checkpoint, face store) at 16x16; the identity model's
    default child is syn0001."""
    root = tmp_path_factory.mktemp("identity")
    faceset = generate_faces(5, 1, (16, 16), 0)
    faces = write_store(faceset, root / "faces.h5")
    config = ModelConfig(image_size=(16, 16), latent_dim=3, hidden=8, channels=(4, 8))
    model = build_model(config, seed=0)
    model.set_default_identity(torch.from_numpy(reference_images(faceset, ["syn0001"])),
                               "syn0001")
    ckpt = save_checkpoint(root / "identity.pt", model, config, {}, "none", {})
    plain_cfg = ModelConfig(image_size=(16, 16), latent_dim=3, hidden=8, channels=(4, 8),
                            kind="plain", upsample="transposed")
    plain = save_checkpoint(root / "plain.pt", build_model(plain_cfg, seed=0), plain_cfg, {},
                            "none", {})
    return ckpt, plain, faces


def write_config(folder, ckpt, faces, stimuli, **changes):
    data = {"name": "kids", "seed": 5, "model": {"checkpoint": str(ckpt), "faces": str(faces)},
            "emotions": ["happy", "sad"], "chains": {"per_emotion": 2},
            "trials": {"per_chain": 3, "practice": 2, "catch_rate": 0.25, "break_every": 0},
            "gate": {"kind": "none"}, "display": {"fixation": 0.0},
            "agent": {"kind": "classifier"}, **changes}
    if stimuli is not None:
        data["stimuli"] = stimuli
    path = folder / "kids.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def direct_decode(loaded, faceset, z, child):
    """The face of code z (d,) drawn as `child`, straight from the model."""
    code = loaded.model.identity_code(torch.from_numpy(reference_images(faceset, [child])))
    with torch.no_grad():
        return loaded.model.decode(torch.as_tensor(z[None], dtype=torch.float32), code)[0, 0]


@pytest.mark.parametrize(("stimuli", "key"), [
    ({"identity": ["a", "b"]}, "stimuli.assign"),            # fixed shows one child
    ({"assign": "chain"}, "stimuli.assign"),                  # turns of which children?
    ({"identity": ["a", "a"], "assign": "chain"}, "stimuli.identity"),
    ({"identity": [3], "assign": "chain"}, "stimuli.identity[0]"),
    ({"identity": "a b"}, "stimuli.identity"),
    ({"identity": "a", "assign": "sometimes"}, "stimuli.assign"),
    ({"child": "a"}, "stimuli.child"),
])
def test_stimuli_section_is_checked(stimuli, key):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"name": "x", "stimuli": stimuli}, "x.yaml", require_checkpoint=False)
    assert err.value.key == key and "x.yaml" in str(err.value)


def test_assignment_rules():
    def children(stimuli, participant):
        cfg = config_from_dict({"name": "x", "seed": 2, "stimuli": stimuli},
                               require_checkpoint=False)
        return assignment(cfg, participant, "syn0001")

    assert children({}, "P1").ids == ("syn0001",)  # the checkpoint's default child
    assert children({"identity": "syn0003"}, "P1").ids == ("syn0003",)
    kids = ["k1", "k2", "k3"]
    turns = children({"identity": kids, "assign": "chain"}, "P1")
    assert [turns.chain(c) for c in range(5)] == ["k1", "k2", "k3", "k1", "k2"]
    assert list(turns.chain(np.arange(4))) == ["k1", "k2", "k3", "k1"]
    rotated = [children({"identity": kids, "assign": "rotated"}, f"P{n:03d}").ids
               for n in range(1, 5)]
    assert rotated == [("k1",), ("k2",), ("k3",), ("k1",)]
    with pytest.raises(ValueError, match="ends in"):
        children({"identity": kids, "assign": "rotated"}, "pilot")
    drawn = [children({"identity": kids, "assign": "participant"}, f"P{n}").ids[0]
             for n in range(30)]
    assert set(drawn) == set(kids)  # 30 participants draw every child
    again = [children({"identity": kids, "assign": "participant"}, f"P{n}").ids[0]
             for n in range(30)]
    assert drawn == again  # a participant always gets the same child


def test_a_session_shows_each_chains_child(assets, tmp_path):
    """Per-chain children: every pair on screen is the chain's child, decoded as a direct
    decode of that child draws it; catch and practice trials take the children in turn."""
    ckpt, _, faces = assets
    cfg = load_config(write_config(tmp_path, ckpt, faces,
                                   {"identity": CHILDREN, "assign": "chain"}))
    loaded, faceset = load_checkpoint(ckpt), read_store(faces)
    identities = open_identities(cfg, loaded, faceset)
    children = assignment(cfg, "P001", identities.default)
    centroids = {"happy": np.eye(3)[0], "sad": np.eye(3)[1]}
    engine = Engine(cfg, 3, "P001", 1, {}, centroids, "test", identities=children)
    renderer = Renderer(loaded.model, identities=identities)
    flow = SessionFlow(cfg, engine, renderer, [], "end")
    rows, counts = [], {}
    while (screen := flow.screen()).kind != "end":
        if screen.kind != "trial":
            flow.acknowledge()
            continue
        trial = screen.trial
        if trial.kind == "chain":
            assert trial.identity == CHILDREN[trial.slot.chain % 2]
        else:
            j = counts.setdefault((trial.slot.block, trial.kind), 0)
            counts[(trial.slot.block, trial.kind)] += 1
            assert trial.identity == CHILDREN[j % 2]
        for code, image in zip((trial.left, trial.right), screen.images, strict=True):
            np.testing.assert_allclose(image, direct_decode(loaded, faceset, code,
                                                            trial.identity), atol=SAME_FACE)
        rows += flow.tell("left", 0.5, None, None, None, "t")
    one, two = (direct_decode(loaded, faceset, trial.left, c).numpy() for c in CHILDREN)
    assert np.abs(one - two).mean() > 0.02  # the children differ: the comparisons can fail
    assert renderer.hits > 0  # a chain's current face is its last proposal, already decoded
    table = pd.DataFrame(rows)
    steps = table[table["kind"].isin(["chain", "gate"])]
    assert (steps["identity"] == [CHILDREN[int(c) % 2] for c in steps["chain"]]).all()
    assert set(table["identity"]) == set(CHILDREN)


def test_cli_records_children_and_resume_keeps_them(assets, tmp_path):
    ckpt, _, faces = assets
    path = write_config(tmp_path, ckpt, faces, {"identity": CHILDREN, "assign": "chain"},
                        trials={"per_chain": 4, "practice": 1, "catch_rate": 0.2,
                                "break_every": 0})
    out = tmp_path / "out"
    assert run_cli("--config", str(path), "--participant", "P001", "--no-window",
                   "--out", str(out)) == 0
    folder = out / "sub-P001/ses-01"
    meta = json.loads((folder / "session.json").read_text())
    faceset = read_store(faces)
    assert meta["identity"]["children"] == CHILDREN
    assert meta["identity"]["default"] == "syn0001"
    for child in CHILDREN:
        assert meta["identity"]["reference_sha256"][child] == face_sha256(
            reference_face(faceset, child))
    full = read_trials(folder / "trials.csv")
    assert full["identity"].notna().all()
    # a crash after the 7th shown trial: keep its rows, resume
    shown = np.flatnonzero((full["kind"] != "gate").to_numpy())
    lines = (folder / "trials.csv").read_text().splitlines(keepends=True)
    (folder / "trials.csv").write_text("".join(lines[: shown[6] + 2]))
    (folder / "session.json").write_text(json.dumps({**meta, "status": "running"}))
    assert run_cli("--config", str(path), "--participant", "P001", "--no-window", "--resume",
                   "--out", str(out)) == 0
    resumed = read_trials(folder / "trials.csv")
    same = ["kind", "chain", "iteration", "identity", "current_0", "proposal_0", "response"]
    pd.testing.assert_frame_equal(resumed[same], full[same])
    assert resumed["run"].max() == 2


def test_resume_with_other_children_is_refused(assets):
    """Saved rows that showed other children than the config gives cannot be continued."""
    ckpt, _, faces = assets
    cfg = config_from_dict({"name": "x", "emotions": ["happy"], "chains": {"per_emotion": 2},
                            "trials": {"per_chain": 2, "practice": 0, "catch_rate": 0.0},
                            "model": {"checkpoint": str(ckpt)}})
    swapped = [Assignment(tuple(CHILDREN)), Assignment(tuple(CHILDREN[::-1]))]
    engine = Engine(cfg, 3, "P1", 1, identities=swapped[0])
    rows = []
    for _ in range(2):
        rows += engine.tell(engine.ask(), "left", 0.5)
    saved = pd.DataFrame(rows).astype({"identity": "string"})
    Engine(cfg, 3, "P1", 1, rows_so_far=saved, identities=swapped[0])  # the same: resumes
    with pytest.raises(ValueError, match="showed child 'syn000"):
        Engine(cfg, 3, "P1", 1, rows_so_far=saved, identities=swapped[1])


def test_bad_children_are_refused_before_anything_is_written(assets, tmp_path, capsys):
    ckpt, plain, faces = assets
    out = tmp_path / "out"
    cases = [
        (ckpt, {"identity": ["syn0002", "syn9999"], "assign": "chain"}, {},
         "'stimuli.identity[1]' has value 'syn9999'"),
        (plain, {"identity": "syn0002"}, {}, "'stimuli.identity'"),
        (ckpt, None, {"kind": "plain"}, "'model.kind'"),
    ]
    for checkpoint, stimuli, model, words in cases:
        path = write_config(tmp_path, checkpoint, faces, stimuli,
                            model={"checkpoint": str(checkpoint), "faces": str(faces), **model})
        assert run_cli("--config", str(path), "--participant", "P001", "--no-window",
                       "--out", str(out)) == 2
        assert words in capsys.readouterr().err
        assert not out.exists()


@pytest.fixture(scope="module")
def simulated(assets, tmp_path_factory):
    """Three simulated participants, one child each drawn from three; the classifier agent
    answers (so the model is opened) and catch trials come from the face store."""
    from mcmcp import simulate

    ckpt, _, faces = assets
    root = tmp_path_factory.mktemp("sim")
    path = write_config(root, ckpt, faces,
                        {"identity": ["syn0002", "syn0003", "syn0004"], "assign": "participant"},
                        trials={"per_chain": 20, "practice": 0, "catch_rate": 0.1},
                        chains={"per_emotion": 2, "kappa_proposal": 5.0})
    simulate.main(["--config", str(path), "--participants", "3", "--out", str(root / "data")])
    return root / "data"


def test_simulated_rows_carry_children_and_a_foreign_store_is_warned(simulated):
    for pid in ("sim001", "sim002", "sim003"):
        folder = simulated / f"sub-{pid}/ses-01"
        meta = json.loads((folder / "session.json").read_text())
        (child,) = meta["identity"]["children"]
        rows = read_trials(folder / "trials.csv")
        assert (rows["identity"] == child).all() and (rows["kind"] == "catch").any()
        assert "is not the store checkpoint" in meta["warnings"][0]
    seen = {json.loads((simulated / f"sub-{p}/ses-01/session.json").read_text())[
        "identity"]["children"][0] for p in ("sim001", "sim002", "sim003")}
    cfg = config_from_dict({"name": "kids", "seed": 5, "stimuli": {
        "identity": ["syn0002", "syn0003", "syn0004"], "assign": "participant"}},
        require_checkpoint=False)
    assert seen == {assignment(cfg, p, "").ids[0] for p in ("sim001", "sim002", "sim003")}


def test_image_agent_judges_the_trials_child(assets):
    """An agent that sees pixels gets each face drawn as its pair's child."""
    from mcmcp.agents import CallableAgent

    ckpt, _, faces = assets
    loaded, faceset = load_checkpoint(ckpt), read_store(faces)
    cfg = config_from_dict({"name": "x", "stimuli": {"identity": CHILDREN, "assign": "chain"},
                            "model": {"checkpoint": str(ckpt), "faces": str(faces)}})
    identities = open_identities(cfg, loaded, faceset)
    seen = []

    def judge(images):
        seen.append(images.clone())
        return torch.full((len(images), 7), 1 / 7)

    agent = CallableAgent("eyes", judge, "images", loaded.model, identities)
    x = np.eye(3)[:2]
    agent.choose("happy", x, x[::-1], np.random.default_rng(0), identity=np.array(CHILDREN))
    images = seen[0][:, 0]  # [left 0, left 1, right 0, right 1], each as its pair's child
    for image, z, child in zip(images, [x[0], x[1], x[1], x[0]], CHILDREN * 2, strict=True):
        np.testing.assert_allclose(image, direct_decode(loaded, faceset, z, child), atol=SAME_FACE)


@pytest.mark.slow
def test_report_draws_the_child_each_participant_saw(simulated, assets, tmp_path):
    from analysis.report import main

    ckpt, _, faces = assets
    out = tmp_path / "report"
    assert main([str(simulated), "--out", str(out), "--checkpoint", str(ckpt), "--faces",
                 str(faces), "--bootstrap", "20"]) == 0
    protos = pd.read_csv(out / "tables" / "prototypes.csv")
    drawn = protos.dropna(subset=["identity"]).set_index(["participant", "emotion"])["identity"]
    for pid in ("sim001", "sim002", "sim003"):
        meta = json.loads((simulated / f"sub-{pid}/ses-01/session.json").read_text())
        assert (drawn.loc[pid] == meta["identity"]["children"][0]).all()
    assert drawn.loc["all"].isin(["syn0002", "syn0003", "syn0004"]).all()
    if drawn.drop(index="all").nunique() > 1:
        assert (out / "figures" / "faces_children.png").is_file()
    page = (out / "index.html").read_text()
    assert "is not the store checkpoint" in page and "child the participant saw" in page


def test_an_online_database_from_before_the_identity_column_gets_it(tmp_path):
    """A study's database made before rows had `identity` gains the column when the updated
    server opens it; its old rows read as empty there, new rows keep their child."""
    import sqlite3

    from mcmcp.online.database import Database

    url = f"sqlite:///{tmp_path / 'online.sqlite'}"
    Database(url).close()
    with sqlite3.connect(tmp_path / "online.sqlite") as conn:
        conn.execute("ALTER TABLE trials DROP COLUMN identity")  # as an older server made it
        assert "identity" not in {r[1] for r in conn.execute("PRAGMA table_info(trials)")}
    db = Database(url)
    record = db.create(uid="u1", study="s", participant="P1", session=1, token="t" * 20, d=3,
                       screen="a", meta={}, now="now")
    row = {"participant": "P1", "session": 1, "row": 0, "kind": "chain", "identity": "syn0002",
           **{f"{p}_{i}": 0.0 for p in ("current", "proposal") for i in range(3)}}
    assert db.advance(record, "b", now="now", acked=0, rows=[row])
    assert db.frame(record.id, 3)["identity"].tolist() == ["syn0002"]
    db.close()


def test_a_parquet_cache_from_before_the_identity_column_is_read_again(simulated, tmp_path,
                                                                       monkeypatch):
    from analysis.load import load_trials
    from mcmcp import schema

    folder = simulated / "sub-sim001/ses-01"
    with monkeypatch.context() as m:  # the schema as it was before `identity`
        m.setattr(schema, "_AFTER_LATENT", tuple(c for c in schema._AFTER_LATENT
                                                 if c.name != "identity"))
        with pytest.warns(UserWarning, match=r"ignoring columns .*\['identity'\]"):
            assert "identity" not in load_trials(folder, cache=tmp_path)
    again = load_trials(folder, cache=tmp_path, columns=["kind", "identity"])
    assert again["identity"].notna().all()
