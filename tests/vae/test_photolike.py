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


def eye_errors_in_photos(draw_child, emotions, rng) -> np.ndarray:
    """(n,) worse eye's distance from the truth (eye distances; inf: rejected) in one photo per
    emotion, each of a new child draw_child(rng) -> `Identity`, differences drawn with `rng`."""
    from vae.procedural.faces import EMOTION_AUS, render_face

    errors = []
    for emotion in emotions:
        drawing = render_face(draw_child(rng), EMOTION_AUS[emotion], (photolike.RENDER,) * 2)
        d = photolike.sample_degradation(rng)
        photo = np.asarray(Image.open(io.BytesIO(photolike.photograph(drawing, d, rng))))
        true = photolike.eyes_in_photo(d, align.target_eyes((photolike.RENDER,) * 2))
        try:
            found = align.locate_face(photo / 255.0)
        except align.NoFace:
            errors.append(np.inf)
            continue
        eyes = np.array([found.left_eye, found.right_eye])
        errors.append(np.linalg.norm(eyes - true, axis=1).max()
                      / np.linalg.norm(true[1] - true[0]))
    return np.array(errors)


def test_dark_skinned_faces_are_found_and_framed_as_light_ones_are():
    """The darkest skin the generator draws, in photos: on main before issue 23's fairness work
    2 of these 8 were rejected and the median eye error was 0.26 eye distances (the eyes'
    whites are brighter than dark skin, so the old eye finder took the brows for eyes)."""
    import dataclasses

    from vae.procedural.faces import sample_identity

    def dark_child(rng):
        return dataclasses.replace(sample_identity(rng), skin_tone=rng.uniform(0.36, 0.42))

    emotions = ["neutral", "angry", "happy", "surprised", "sad", "fearful", "neutral", "angry"]
    errors = eye_errors_in_photos(dark_child, emotions, np.random.default_rng(0))
    assert np.median(errors) < 0.12 and (errors < 0.2).sum() >= 6, np.round(errors, 3)


def test_smiling_faces_are_framed_on_the_eyes_not_the_brows():
    """Smiling children squint and no iris shows: without the eye line's prior
    (`align._HEIGHT_WEIGHT` 0) one of these 8 was framed on the brows (0.5 eye distances off)."""
    from vae.procedural.faces import sample_identity

    errors = eye_errors_in_photos(sample_identity, ["happy"] * 8, np.random.default_rng(0))
    assert errors.max() < 0.25, np.round(errors, 3)


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



def test_aligned_photos_keep_the_grey_levels_and_tone_of_the_clean_faces(tmp_path):
    """Photos of a dark and a light child through `read_folder(align=True)`: each frame's
    face greys (their percentiles) near the clean frame's of the same face, and the dark child
    nearly as much darker than the light one as in the clean frames (here: 18 grey levels off
    on average, the dark child's face 0.85 as dark against the light one's as drawn). With the
    per-image percentile stretch before issue 23's white point and tone curve: 42 grey levels
    off, 0.54 (the dark face's contrast with the light one exaggerated)."""
    import dataclasses

    from vae.procedural.faces import EMOTION_AUS, render_face, sample_identity
    from vae.sources import read_folder

    rng = np.random.default_rng(2)
    region = align.face_region((64, 64))
    clean = {}
    for child, tone in (("dark", 0.40), ("light", 0.80)):
        identity = dataclasses.replace(sample_identity(rng), skin_tone=tone)
        for emotion in ("neutral", "angry", "happy", "sad", "surprised"):
            drawing = render_face(identity, EMOTION_AUS[emotion], (photolike.RENDER,) * 2)
            path = tmp_path / emotion / f"{child}_1.jpg"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(photolike.photograph(drawing, photolike.sample_degradation(rng), rng))
            clean[path.relative_to(tmp_path).as_posix()] = 255.0 * render_face(
                identity, EMOTION_AUS[emotion], (64, 64))[region]
    faces = read_folder(tmp_path, align=True)
    assert len(faces.images) >= 8  # the cascade may miss a dark child's open mouth
    percentiles = np.linspace(5, 95, 19)
    off, medians = [], {"dark": [], "light": []}
    for image, file in zip(faces.images, faces.ground_truth["file"], strict=True):
        got, want = image[region].astype(np.float64), clean[str(file)]
        off.append(np.abs(np.percentile(got, percentiles) - np.percentile(want, percentiles)).mean())
        medians[str(file).split("/")[1].split("_")[0]].append((np.median(got), np.median(want)))
    dark, light = np.mean(medians["dark"], axis=0), np.mean(medians["light"], axis=0)
    ratio = (dark[0] / light[0]) / (dark[1] / light[1])  # 1: the tones' contrast as drawn
    assert np.mean(off) < 28 and 0.7 < ratio < 1.3, (np.round(off, 1), ratio)
    # outside the face (backdrop, hair) a child's frames are alike, the child's mean frame: the
    # photos' differences there are not expression (before issue 23's third round: 15 grey
    # levels apart on average); inside, the expressions differ
    surround = align.face_radius((64, 64)) >= 1.5
    for child in ("dark", "light"):
        own = faces.images[np.char.find(faces.ground_truth["file"].astype(str), child) >= 0]
        assert np.abs(own - own.mean(axis=0))[:, surround].max() <= 1
        assert np.abs(own - own.mean(axis=0))[:, region].mean() > 3
