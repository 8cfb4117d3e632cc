"""vae.align on real photographs that ship offline with the packages: scikit-image's astronaut
(Eileen Collins), matplotlib's Grace Hopper, scikit-image's LFW subset (100 faces, 100 non-faces).

The reference is independent of the code: eye centres marked by hand on the photographs (iris
centres, read off an enlarged pixel grid). Photos are turned, scaled and shifted by known
similarity transforms; the eyes found must be where the transform puts the marked ones.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from skimage import data

from vae import align
from vae.data import main
from vae.sources import read_cafe, read_folder, read_manifest
from vae.store import read_store

# (x, y) iris centres marked by hand: the image's left eye, then its right eye
PHOTOS = {
    "astronaut": (data.astronaut, ((203.0, 101.0), (247.0, 103.0))),
    "hopper": (
        lambda: np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data"
                                      / "grace_hopper.jpg")),
        ((223.0, 189.0), (305.0, 187.0)),
    ),
}


def grey(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def transformed(name: str, degrees: float, scale: float, shift=(17.0, -11.0)):
    """(grey photo turned counter-clockwise by `degrees` and scaled about the eyes' midpoint,
    then shifted; the marked eyes (2, 2) moved by the same map)."""
    load, eyes = PHOTOS[name]
    g, eyes = grey(load()), np.array(eyes)
    t = np.radians(degrees)
    linear = scale * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    centre = eyes.mean(axis=0)
    affine = np.column_stack([linear, centre - linear @ centre + np.array(shift)])
    return align.warp(g, affine, g.shape), eyes @ linear.T + affine[:, 2]


def eye_errors(found: align.Alignment, truth: np.ndarray) -> np.ndarray:
    """(2,) distances of the found eyes from the marked ones, in interocular distances."""
    got = np.array([found.left_eye, found.right_eye])
    return np.hypot(*(got - truth).T) / np.hypot(*(truth[1] - truth[0]))


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_eyes_found_where_marked_by_hand(name):
    photo, truth = transformed(name, 0.0, 1.0, shift=(0.0, 0.0))
    found = align.locate_face(photo)
    assert found.method == "eyes"
    got = np.array([found.left_eye, found.right_eye])
    assert np.abs(got - truth).max() < 2.5, got  # source pixels; interocular 44 and 82


@pytest.mark.parametrize("name", sorted(PHOTOS))
@pytest.mark.parametrize("degrees, scale", [(-35, 1.0), (-20, 0.6), (-8, 1.5), (12, 1.0),
                                            (25, 1.5), (35, 0.6)])
def test_turned_scaled_shifted_photos_are_aligned_within_a_pixel(name, degrees, scale):
    photo, truth = transformed(name, degrees, scale)
    found = align.locate_face(photo)
    assert found.method == "eyes"
    assert eye_errors(found, truth).max() < 0.05
    assert found.roll == pytest.approx(np.degrees(np.arctan2(*(truth[1] - truth[0])[::-1])),
                                       abs=2.0)
    # in the 64x64 frame the store keeps, the marked eyes land on the target eyes
    frame = align.similarity(np.array([found.left_eye, found.right_eye]),
                             align.target_eyes((64, 64)))
    landed = truth @ frame[:, :2].T + frame[:, 2]
    assert np.abs(landed - align.target_eyes((64, 64))).max() < 1.0


def test_the_same_face_in_any_pose_gives_the_same_crop():
    # the face: the frame's border shows the edges of the turned and scaled photos
    face = (slice(8, 56), slice(8, 56))
    crops = [align.align_face(transformed("astronaut", d, s)[0], (64, 64))[0].astype(float)
             for d, s in ((0, 1.0), (-20, 0.7), (30, 1.4))]
    for crop in crops[1:]:
        assert np.abs(crop - crops[0])[face].mean() < 8  # grey levels of 255
    shifted = np.roll(crops[0], 2, axis=1)
    assert np.abs(shifted - crops[0])[face].mean() > 20  # shifted by 2 px: 27


def test_a_lighting_gradient_is_divided_out():
    from vae.images import even_lighting

    photo, _ = transformed("hopper", 0.0, 1.0, shift=(0.0, 0.0))
    face = photo[100:356, 120:376] + 1.0
    rows, cols = np.mgrid[0:256, 0:256]
    lit = face * np.exp(0.004 * cols - 0.002 * rows)  # twice as bright on one side as the other
    ratio = even_lighting(lit) / even_lighting(face)
    # the same face, whatever the gradient (its std/mean without the correction: 0.2; the few
    # black pixels, floored, keep it from 0)
    assert ratio.std() / ratio.mean() < 1e-3


def test_each_childs_photos_get_the_childs_common_grey_levels():
    from vae.images import match_within_child

    ramp = np.tile(np.linspace(0, 255, 64), (64, 1))
    images = np.stack([ramp, 255 * (ramp / 255) ** 1.6, 60 + 0.5 * ramp,
                       255 * (ramp / 255) ** 0.5, 255 * (ramp / 255) ** 0.5]).round().astype(np.uint8)
    out = match_within_child(images, np.array(["a", "a", "a", "b", "b"]))
    # one child: one set of grey levels, its photos' pooled ones
    pooled = np.percentile(images[:3], [10, 50, 90])
    for k in range(3):
        assert np.abs(np.percentile(out[k], [10, 50, 90]) - pooled).max() <= 3
    assert (out[3:] == images[3:]).all()  # a child's photos alike are left alone
    assert (out[:, :, 0] == 0).all() and (out[:2, :, -1] == 255).all()  # black and white stay
    assert (np.diff(out.astype(int), axis=2) >= 0).all()  # monotone: no grey overtakes another


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_the_box_rule_puts_the_eyes_near_the_marked_ones(name):
    photo, truth = transformed(name, 0.0, 1.0, shift=(0.0, 0.0))
    largest = align.face_boxes(photo)[0]
    eyes = align.box_rule(largest)
    assert eyes[0, 1] == eyes[1, 1]  # upright
    errors = np.hypot(*(eyes - truth).T) / np.hypot(*(truth[1] - truth[0]))
    assert errors.max() < 0.25  # the documented rule: a loose frame


def lfw(indices) -> list[np.ndarray]:
    """LFW subset images (25x25, faces first), enlarged 4x and padded to 200x200."""
    images = data.lfw_subset()
    return [np.pad(ndi.zoom(images[i], 4, order=1), 50, mode="edge") * 255 for i in indices]


def test_lfw_non_faces_are_rejected_with_a_reason_and_faces_kept():
    for image in lfw(range(100, 130)):
        with pytest.raises(align.NoFace, match="no face found"):
            align.locate_face(image)
    kept = 0
    for image in lfw(range(30)):
        try:
            align.locate_face(image)
            kept += 1
        except align.NoFace:
            pass
    assert kept >= 27


@pytest.mark.parametrize("index", [7, 10, 13, 21, 33, 39, 41, 57, 62, 69, 91, 92, 98])
def test_a_wrong_eye_pair_falls_back_to_the_box_rule(index):
    """LFW faces (upright, eyes 30 to 45 pixels apart at this size) that the eye search framed
    turned by 25 to 48 degrees or with 'eyes' 17 or 78 to 86 pixels apart before the pair had
    to fit the cascade's box (`align.plausible`); five (7, 21, 33, 39, 98) framed zoomed
    in (eyes 9 to 27 pixels apart, the cascade's box in a turned copy too small) or turned by
    40 degrees until a pair had to be confirmed by the cascade in its own frame; and one (41)
    framed on the cheeks beside the nose (28 pixels apart) until the eyes had to be dark
    (`align.eye_darkness`)."""
    found = align.locate_face(lfw([index])[0])
    assert abs(found.roll) <= 25 and 30 <= found.eye_distance <= 55, (found.roll,
                                                                      found.eye_distance)


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_eyes_marked_by_hand_are_dark_and_the_cheeks_below_them_are_not(name):
    photo, truth = transformed(name, 0.0, 1.0, shift=(0.0, 0.0))
    assert align.eye_darkness(photo, truth) < 0.1
    spacing = truth[1, 0] - truth[0, 0]
    cheeks = truth + np.array([0.0, 0.5 * spacing])  # under the eyes
    assert align.eye_darkness(photo, cheeks) > align.EYE_DARKNESS


def test_a_spoons_highlights_are_not_taken_for_eyes():
    """scikit-image's coffee cup: the cascade takes the spoon for a face, and two dark spots in
    its highlights fit the box and are confirmed by the cascade in their own frame; they are
    not dark against the rest of that 'face' (`align.eye_darkness`), so the spoon is at most
    framed by the box rule, which the kept sheet marks for checking."""
    try:
        method = align.locate_face(grey(data.coffee())).method
    except align.NoFace:
        method = "rejected"
    assert method != "eyes"


def test_narrow_frames_zoom_out_to_show_the_face():
    wide, narrow = align.target_eyes((64, 64)), align.target_eyes((64, 40))
    assert narrow[1, 0] - narrow[0, 0] < wide[1, 0] - wide[0, 0]
    assert narrow[:, 0].mean() == pytest.approx(19.5)


def save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def photo_folder(root: Path) -> Path:
    """emotion/child_*.jpg: two people, each in two emotions and poses; hopper's neutral photo
    shows no face (an LFW non-face)."""
    for k, (degrees, scale) in enumerate(((0, 1.0), (20, 0.8))):
        emotion = ("happy", "sad")[k]
        for name in PHOTOS:
            save(transformed(name, degrees, scale)[0], root / emotion / f"{name}_{k}.jpg")
    save(transformed("astronaut", -10, 1.1)[0], root / "neutral" / "astronaut_2.jpg")
    save(lfw([120])[0], root / "neutral" / "hopper_2.jpg")  # not a face
    return root


def test_folder_of_photos_builds_an_aligned_store_with_sheets(tmp_path, capsys):
    root = photo_folder(tmp_path / "photos")
    out = tmp_path / "mine.h5"
    assert main(["build", "--source", "folder", "--root", str(root), "--align",
                 "--out", str(out)]) == 0
    faces = read_store(out)
    assert sorted(faces.ground_truth["file"]) == [
        "happy/astronaut_0.jpg", "happy/hopper_0.jpg", "neutral/astronaut_2.jpg",
        "sad/astronaut_1.jpg", "sad/hopper_1.jpg"]
    assert set(faces.ground_truth["align_method"]) == {"eyes"}
    assert faces.images.shape == (5, 64, 64)
    assert "aligned" in faces.attrs["preprocessing"]
    assert '"reason": "no face found' in faces.attrs["rejected"]
    assert "neutral/hopper_2.jpg" in faces.attrs["rejected"]
    printed = capsys.readouterr().out
    assert "aligned 5 faces (5 by the eyes, 0 by the box rule), rejected 1 photos" in printed
    assert "1 children have no neutral face left (hopper)" in printed
    kept = np.asarray(Image.open(tmp_path / "mine-kept.png"))
    rejected = np.asarray(Image.open(tmp_path / "mine-rejected.png"))
    assert kept.shape[0] >= 96 and kept.shape[1] >= 5 * 96
    assert rejected.shape[0] >= 160


def test_align_is_refused_for_sources_of_ready_faces(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["build", "--source", "synthetic", "--align", "--out", str(tmp_path / "s.h5")])
    assert "--align not used by --source synthetic" in capsys.readouterr().err


def test_cafe_layout_with_align_keeps_numbers_and_models(tmp_path):
    images = tmp_path / "CAFE"
    rows = []
    for number, (name, emotion) in enumerate((("astronaut", "happy_open"),
                                              ("hopper", "sad_closed")), start=1007):
        save(transformed(name, 10.0, 0.9)[0], images / f"{number}.jpg")
        rows.append(f"{number},{name[:4]},{emotion}")
    save(lfw([110])[0], images / "1009.jpg")
    rows.append("1009,none,neutral_closed")
    sheet = tmp_path / "cafe.csv"
    sheet.write_text("number,model,emotion\n" + "\n".join(rows) + "\n")
    faces = read_cafe(images, sheet, align=True)
    assert list(faces.ground_truth["file"]) == ["1007.jpg", "1008.jpg"]
    assert list(faces.identities) == ["astr", "hopp"]
    assert list(faces.ground_truth["mouth_open"]) == [True, False]
    assert faces.images.shape == (2, 64, 40)
    assert [r["file"].endswith("1009.jpg") for r in faces.attrs["rejected"]] == [True]


def test_a_folder_without_any_face_is_an_error_naming_a_photo(tmp_path):
    save(lfw([101])[0], tmp_path / "set" / "happy" / "a_1.jpg")
    with pytest.raises(ValueError, match=r"no face found in any of the 1 photos .*a_1.jpg"):
        read_folder(tmp_path / "set", align=True)


def test_manifest_with_align_keeps_rows_in_order_and_lists_rejects(tmp_path):
    save(transformed("hopper", -15.0, 1.2)[0], tmp_path / "img" / "h.jpg")
    save(lfw([105])[0], tmp_path / "img" / "x.jpg")
    save(transformed("astronaut", 5.0, 0.8)[0], tmp_path / "img" / "a.jpg")
    manifest = tmp_path / "faces.csv"
    manifest.write_text("path,emotion,identity\nimg/h.jpg,sad,hopper\nimg/x.jpg,sad,nobody\n"
                        "img/a.jpg,Happiness,astro\n")
    faces = read_manifest(manifest, align=True)
    assert list(faces.ground_truth["file"]) == ["img/h.jpg", "img/a.jpg"]
    assert list(faces.identities) == ["hopper", "astro"]
    assert [r["file"].endswith("x.jpg") for r in faces.attrs["rejected"]] == [True]
