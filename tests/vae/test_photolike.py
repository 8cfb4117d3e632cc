"""vae.photolike: the default children as photographs, and the aligner finding them again."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vae import align, photolike
from vae.labels import EMOTIONS


def test_a_photo_is_a_jpeg_of_the_drawing_moved_where_the_truth_says(tmp_path):
    assert photolike.main(["--out", str(tmp_path / "p"), "--n-identities", "2",
                           "--seed", "3"]) == 0
    truth = pd.read_csv(tmp_path / "p/truth.csv")
    assert len(truth) == 2 * 7 * 2 and set(truth["emotion"]) == set(EMOTIONS)
    assert truth["file"].str.fullmatch(r"\w+/syn000[12]_[12]\.jpg").all()
    with Image.open(tmp_path / "p" / truth["file"][0]) as photo:
        assert photo.format == "JPEG" and photo.size == photolike.PHOTO[::-1]
    for name, (lo, hi) in (("scale", photolike.SCALE), ("angle", photolike.ANGLE),
                           ("blur", photolike.BLUR), ("quality", photolike.QUALITY)):
        assert truth[name].between(lo, hi).all(), name
    # the differences are drawn: not two photos alike
    assert truth["angle"].nunique() == len(truth) and truth["quality"].nunique() > 5
    # the same seed gives the same photo
    drawing = np.linspace(0.0, 1.0, photolike.RENDER**2).reshape((photolike.RENDER,) * 2)
    photos = [photolike.photograph(drawing, photolike.sample_degradation(rng), rng)
              for rng in (np.random.default_rng(5), np.random.default_rng(5))]
    assert photos[0] == photos[1]


def test_the_aligner_finds_the_eyes_of_tilted_scaled_lit_blurred_compressed_faces():
    from vae.procedural.faces import generate_faces

    faces = generate_faces(n_identities=2, poses_per_emotion=1,
                           size=(photolike.RENDER, photolike.RENDER), seed=7)
    neutral = [i for i, label in enumerate(faces.labels) if faces.label_names[label] in
               ("neutral", "sad", "surprised")]
    rng = np.random.default_rng(0)
    errors = []
    for i in neutral:
        d = photolike.sample_degradation(rng)
        photo = np.asarray(Image.open(io.BytesIO(photolike.photograph(faces.images[i] / 255.0,
                                                                      d, rng))))
        true = photolike.eyes_in_photo(d, align.target_eyes((photolike.RENDER,) * 2))
        found = align.locate_face(photo / 255.0)
        eyes = np.array([found.left_eye, found.right_eye])
        errors.append(np.linalg.norm(eyes - true, axis=1).max()
                      / np.linalg.norm(true[1] - true[0]))
    # within a few photo pixels: an eye distance is 25 to 40 of them
    assert np.median(errors) < 0.12 and max(errors) < 0.3, np.round(errors, 3)


def test_an_existing_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p/keep.txt").write_text("a lab's file")
    assert photolike.main(["--out", str(tmp_path / "p"), "--n-identities", "2"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["keep.txt"]


def test_too_few_children_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        photolike.main(["--out", str(tmp_path / "p"), "--n-identities", "1"])
    assert stop.value.code == 2 and "at least 2" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
