"""vae.images' grey levels for aligned photographs: scaled to the white point, then each
child's tone curve (`match_tone`), which keeps the child's tone and its expressions."""

from __future__ import annotations

import numpy as np
import pytest

from vae.align import face_region
from vae.images import match_tone, scale_to_white, tone_reference
from vae.procedural.faces import generate_faces

SIZE = (64, 64)


@pytest.fixture(scope="module")
def faces():
    return generate_faces(n_identities=6, poses_per_emotion=1, size=SIZE, seed=4)


def test_each_child_gets_the_reference_spread_at_its_own_median(faces):
    region = face_region(SIZE)
    reference = tone_reference(faces.images, faces.identities, region)
    ids = np.asarray(faces.identities)
    # what a camera does to one child's photos: a flat, bright curve; to another's: a steep one
    flat = ids == "syn0001"
    steep = ids == "syn0002"
    seen = faces.images.astype(np.float64)
    seen[flat] = 70.0 + 0.55 * seen[flat]
    seen[steep] = 255.0 * (seen[steep] / 255.0) ** 1.6
    seen = np.round(seen).astype(np.uint8)
    out = match_tone(seen, ids, region, reference)
    for child in (flat, steep):
        before, after = seen[child][:, region], out[child][:, region]
        median = np.median(before)
        assert abs(np.median(after) - median) <= 3  # the child's tone, as photographed, kept
        got = np.percentile(after, [5, 25, 75, 95])
        want = reference.quantiles(median)[[4, 24, 74, 94]]
        assert np.abs(got - want).max() <= 4, (got, want)  # the spread: the reference's
        # one curve for all the child's photos: equal greys stay equal, order is kept, so an
        # expression (a difference between photos of the child) is not normalised away
        pairs = np.unique(np.stack([seen[child].ravel(), out[child].ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == pairs.shape[1]
        assert (np.diff(pairs[1][np.argsort(pairs[0])]) >= 0).all()
    untouched = ~(flat | steep)  # the reference's own children barely move
    assert np.abs(out[untouched].astype(int) - faces.images[untouched])[:, region].mean() < 6


def test_a_dark_child_stays_darker_than_a_light_one(faces):
    region = face_region(SIZE)
    reference = tone_reference(faces.images, faces.identities, region)
    ids = np.asarray(faces.identities)
    medians = {c: np.median(faces.images[ids == c][:, region]) for c in np.unique(ids)}
    out = match_tone(faces.images, ids, region, reference)
    after = {c: np.median(out[ids == c][:, region]) for c in medians}
    order = sorted(medians, key=medians.get)
    assert sorted(after, key=after.get) == order
    assert all(abs(after[c] - medians[c]) <= 3 for c in medians)


def test_scaling_to_the_white_point_keeps_black_and_the_ratio_of_greys():
    rng = np.random.default_rng(0)
    frame = rng.uniform(20.0, 120.0, SIZE)
    frame[:, :8] = 200.0  # a bright backdrop
    out = scale_to_white(frame).astype(np.float64)
    assert out.max() == 255 and np.percentile(out, 99) == 255
    inside = frame < 199
    # a percentile stretch would map the darkest grey to 0; this keeps every grey's ratio
    assert np.allclose(out[inside], 255.0 * frame[inside] / 200.0, atol=0.51)
    assert (scale_to_white(np.zeros(SIZE)) == 128).all()
    # the white point may be another frame's (the frame before its light was evened out)
    assert np.abs(scale_to_white(frame / 2, white_of=frame) - out / 2).max() <= 1


def test_a_reference_needs_children_of_different_tones(faces):
    one = np.asarray(faces.identities) == "syn0001"
    two = np.concatenate([faces.images[one], faces.images[one]])
    with pytest.raises(ValueError, match="different skin tones"):
        tone_reference(two, np.repeat(["a", "b"], one.sum()), face_region(SIZE))
