"""benchmarks/bench_reader.py and the standard error of a retention (`vae.metrics.retention_se`), against
the binomial closed form."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from vae.metrics import expression_retention, retention_se

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_reader", ROOT / "benchmarks/bench_reader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_retention_se_matches_the_binomial_closed_form():
    """Every original read, each reconstruction read with probability q, independently:
    retention = the share of reconstructions read, whose standard error over n faces is
    sqrt(q (1 - q) / n); resampling the children gives it to within the bootstrap's noise,
    and a child's faces resampled together (all read or none) give a larger one."""
    rng = np.random.default_rng(0)
    children = np.repeat([f"c{i:02d}" for i in range(40)], 10)  # 40 children x 10 faces
    labels = np.zeros(len(children), dtype=int)
    read_orig = np.ones(len(children), dtype=bool)
    q = 0.7
    read_recon = rng.random(len(children)) < q
    se = retention_se(read_orig, read_recon, labels, 0, children, draws=4000)
    closed = np.sqrt(q * (1 - q) / len(children))
    assert abs(se - closed) < 0.15 * closed
    # whole children read or not: 40 clusters, not 400 faces
    whole = np.repeat(rng.random(40) < q, 10)
    se_whole = retention_se(read_orig, whole, labels, 0, children, draws=4000)
    assert abs(se_whole - np.sqrt(q * (1 - q) / 40)) < 0.15 * np.sqrt(q * (1 - q) / 40)
    # recorded per emotion when the children are given (the checkpoint's metrics)
    probs = np.eye(2)[np.where(read_recon, 0, 1)]
    r = expression_retention(np.eye(2)[np.zeros(len(children), int)], probs, labels, ["a", "b"],
                             children)
    assert r["per_emotion"]["a"]["retention_se"] == retention_se(read_orig, read_recon, labels,
                                                                 0, children)
    assert "retention_se" not in expression_retention(
        np.eye(2)[labels], probs, labels, ["a", "b"])["per_emotion"]["a"]


def test_thirds_put_the_darkest_children_first():
    """Nine children of three faces each, greys shuffled: the thirds are the children in order of
    their mean grey, darkest first, with those means."""
    rng = np.random.default_rng(1)
    means = rng.permutation(np.arange(9) * 10.0 + 50)
    children = np.repeat([f"c{i}" for i in range(9)], 3)
    grey = np.repeat(means, 3) + np.tile([-1.0, 0.0, 1.0], 9)
    parts = _bench().thirds(children, grey)
    order = [f"c{i}" for i in np.argsort(means)]
    assert [list(ids) for ids, _ in parts] == [order[:3], order[3:6], order[6:]]
    assert np.allclose(np.concatenate([shade for _, shade in parts]), np.sort(means))


def test_fresh_children_are_not_the_default_stores_people():
    """`--fresh` draws its children with FRESH_SEED, not the seed the default store is built
    with: the same ids name other faces (each child's first neutral face differs from its
    namesake's by more than 10 grey levels per pixel on average)."""
    import inspect

    from vae.procedural.faces import generate_faces

    bench = _bench()
    store_seed = inspect.signature(generate_faces).parameters["seed"].default
    assert bench.FRESH_SEED != store_seed
    store = generate_faces(3, size=(32, 32), seed=store_seed)
    fresh = generate_faces(3, size=(32, 32), seed=bench.FRESH_SEED)
    assert list(store.identities) == list(fresh.identities)
    neutral = store.label_names.index("neutral")
    for child in np.unique(store.identities):
        first = [np.flatnonzero((np.asarray(s.identities) == child)
                                & (np.asarray(s.labels) == neutral))[0] for s in (store, fresh)]
        a, b = store.images[first[0]].astype(float), fresh.images[first[1]].astype(float)
        assert np.abs(a - b).mean() > 10


def test_retention_by_tone_is_each_thirds_own_ratio():
    """Six children, two per third by grey, four faces each (two of emotion 0, two of 1). In the
    darkest third every original of 0 is read and half their reconstructions (0.50); in the
    middle third half the originals and all reconstructions (2.00); in the lightest none of the
    originals ("-"). Emotion 1 is read throughout (1.00)."""
    children = np.repeat([f"c{i}" for i in range(6)], 4)
    grey = np.repeat([10.0, 20.0, 50.0, 60.0, 90.0, 95.0], 4)
    labels = np.tile([0, 0, 1, 1], 6)
    right_orig = np.ones(24, dtype=bool)
    right_recon = np.ones(24, dtype=bool)
    right_recon[[0, 4]] = False  # darkest: one of each child's two faces of 0 lost
    right_orig[[8, 12]] = False  # middle: one of each child's faces of 0 misread, all won
    right_orig[[16, 17, 20, 21]] = False  # lightest: no face of 0 read
    lines = _bench().retention_by_tone(right_orig, right_recon, labels, ["a", "b"], [0, 1],
                                      grey, children)
    assert [line.split(":")[0].split()[0] for line in lines] == ["darkest", "middle", "lightest"]
    assert lines[0].endswith("a 0.50  b 1.00") and "grey  10- 20" in lines[0]
    assert lines[1].endswith("a 2.00  b 1.00")
    assert lines[2].endswith("a -  b 1.00")
