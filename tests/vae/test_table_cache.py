"""mcmcp.table_cache: the observer agent's tables outlive the process. A later agent (another
run, another worker) starts from the nodes an earlier one kept and answers as it did; writers
of one file keep each other's nodes; a table is kept per child and per weights; a file that
cannot be trusted is left alone with a warning. On the committed model and observer."""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mcmcp import table_cache
from mcmcp.agents import ObserverAgent
from mcmcp.sampling.sphere import sample_uniform

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parts():
    from vae.checkpoint import load_checkpoint
    from vae.observer import load_observer

    return (load_checkpoint(ROOT / "vae/checkpoints/default.pt").model,
            load_observer(ROOT / "vae/checkpoints/observer.pt"))


def points(n: int, seed: int) -> np.ndarray:
    return sample_uniform(n, 3, np.random.default_rng(seed))


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npz"))


def test_a_later_agent_starts_from_the_nodes_an_earlier_one_kept(parts, tmp_path):
    x = points(40, 0)
    first = ObserverAgent(*parts, cache=tmp_path)
    answers = first.log_preference("happy", x)
    first.save_tables()
    assert len(files(tmp_path)) == 1
    later = ObserverAgent(*parts, cache=tmp_path)
    table = later.table()
    assert table.n_computed == first.table().n_computed > 0
    np.testing.assert_array_equal(table.values, first.table().values)
    np.testing.assert_array_equal(later.log_preference("happy", x), answers)
    assert table.n_computed == first.table().n_computed  # nothing computed again
    inode = files(tmp_path)[0].stat().st_ino
    later.save_tables()  # nothing new: the file is left as it is (an atomic write makes a new one)
    assert files(tmp_path)[0].stat().st_ino == inode
    # the control: without the folder a new agent starts empty
    assert ObserverAgent(*parts).table().n_computed == 0


def test_writers_of_one_file_keep_each_others_nodes(parts, tmp_path):
    a, b = ObserverAgent(*parts, cache=tmp_path), ObserverAgent(*parts, cache=tmp_path)
    a.table(), b.table()  # both read the (empty) folder before either writes
    a.log_preference("sad", points(30, 1))
    b.log_preference("sad", points(30, 2))
    union = a.table().known | b.table().known
    assert union.sum() > max(a.table().n_computed, b.table().n_computed)
    a.save_tables()
    b.save_tables()  # read a's nodes under the lock, then wrote both
    assert b.table().n_computed == union.sum()
    assert ObserverAgent(*parts, cache=tmp_path).table().n_computed == union.sum()


def test_a_table_is_kept_per_child_and_per_weights(parts, tmp_path):
    from mcmcp.identities import Identities

    model, observer = parts
    with torch.no_grad():
        code = model.identity_code(model.default_reference)[0]
    children = Identities(default="kid", codes={"kid": code, "twin": code.flip(0)})
    agent = ObserverAgent(model, observer, children, cache=tmp_path)
    x = points(10, 3)
    agent.log_preference("angry", x, "kid")
    agent.log_preference("angry", x, "twin")
    agent.save_tables()
    assert len(files(tmp_path)) == 2  # one file per child
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.decoder.out.bias.add_(0.01)
    changed = ObserverAgent(other, observer, children, cache=tmp_path)
    assert changed.table("kid").n_computed == 0  # other weights: another file
    assert ObserverAgent(model, observer, children, cache=tmp_path).table("kid").n_computed > 0


def test_a_file_that_cannot_be_trusted_is_left_alone_with_a_warning(parts, tmp_path):
    agent = ObserverAgent(*parts, cache=tmp_path)
    agent.log_preference("fearful", points(10, 4))
    agent.save_tables()
    (path,) = files(tmp_path)
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])  # cut short
    with pytest.warns(UserWarning, match="not used"):
        assert ObserverAgent(*parts, cache=tmp_path).table().n_computed == 0

    with np.load(io.BytesIO(good)) as data:
        ids, values, about = data["ids"], data["values"].copy(), data["about"]
    values[0] += 0.5  # a node the model does not give
    with open(path, "wb") as f:
        np.savez(f, ids=ids, values=values, about=about)
    with pytest.warns(UserWarning, match="not this model's"):
        fresh = ObserverAgent(*parts, cache=tmp_path)
        assert fresh.table().n_computed == 0
    fresh.log_preference("fearful", points(10, 4))
    fresh.save_tables()  # the untrusted file is replaced by this agent's nodes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ObserverAgent(*parts, cache=tmp_path).table().n_computed == fresh.table().n_computed


def test_a_simulated_study_keeps_its_table_for_the_next(parts, tmp_path):
    """simulate_study's observer agent saves after each participant: a second study starts from
    the first one's nodes and its participant answers as the first one did."""
    from mcmcp.config import config_from_dict
    from mcmcp.sim.study import ModelParts, simulate_study
    from mcmcp.store import read_trials
    from vae.checkpoint import load_checkpoint
    from vae.observer import load_observer

    cfg = config_from_dict({"name": "cache", "emotions": ["happy"], "seed": 5,
                            "chains": {"per_emotion": 2}, "trials": {"per_chain": 6, "catch_rate": 0},
                            "gate": {"kind": "none"}, "agent": {"kind": "observer"}},
                           "<test>", require_checkpoint=False)
    loaded = load_checkpoint(ROOT / "vae/checkpoints/default.pt")
    model = ModelParts(loaded, None, load_observer(ROOT / "vae/checkpoints/observer.pt"), None)
    cache = tmp_path / "tables"
    one = simulate_study(cfg, tmp_path / "one", ["sim001"], model=model, table_cache=cache)
    (path,) = files(cache)
    kept = table_cache._read(path)[0]
    assert len(kept) > 0
    two = simulate_study(cfg, tmp_path / "two", ["sim001"], model=model, table_cache=cache)
    assert len(table_cache._read(path)[0]) == len(kept)  # every node it needed was kept
    a, b = (read_trials(s.folders[0] / "trials.csv") for s in (one, two))
    assert len(a) == 12 and a["response"].tolist() == b["response"].tolist()
