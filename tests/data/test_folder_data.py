"""User folders: colour (GIMP) and index labels, stray values, and every kind of bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from bloodseg.config import DataConfig
from bloodseg.data.datamodule import BloodSmearDataModule
from bloodseg.data.imageio import read_rgb
from bloodseg.data.labels import ClassTable, encode_label, palette_label
from bloodseg.errors import BloodsegError

PAPER = [
    {"name": "background", "color": [255, 255, 0]},
    {"name": "rbc", "color": [0, 0, 255]},
    {"name": "wbc", "color": [0, 255, 0]},
]
INDEXED = [{"name": "background", "value": 0}, {"name": "rbc", "value": 1}, {"name": "wbc", "value": 2}]
COLOURS = np.array([[255, 255, 0], [0, 0, 255], [0, 255, 0]], np.uint8)


def data_cfg(root, classes=PAPER, **overrides):
    cfg = OmegaConf.merge(
        OmegaConf.structured(DataConfig),
        {
            "source": "folder",
            "root": str(root),
            "classes": classes,
            "image_size": [40, 48],
            "num_workers": 0,
            **overrides,
        },
    )
    return cfg


def make_folder(root, n=6, size=(40, 48), colour=True, ext_image=".png", ext_label=".png", seed=0):
    """n random images with labels whose ids are known; returns the ids per stem."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        ids = rng.integers(0, 3, size).astype(np.uint8)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / "images" / f"s{i}{ext_image}"
        )
        label = COLOURS[ids] if colour else ids
        Image.fromarray(label).save(root / "labels" / f"s{i}{ext_label}")
        truth[f"s{i}"] = ids
    return truth


def loaded(root, **kw):
    dm = BloodSmearDataModule(data_cfg(root, **kw))
    dm.setup()
    return dm


def all_masks(dm):
    return {i: m for s in dm.splits.values() for i, m in zip(s.ids, s.masks, strict=True)}


def test_gimp_colour_labels_map_to_class_ids(tmp_path):
    truth = make_folder(tmp_path, colour=True)
    dm = loaded(tmp_path)
    for stem, mask in all_masks(dm).items():
        assert np.array_equal(mask.numpy(), truth[stem])
    assert sum(len(v) for v in dm.split.values()) == 6


def test_index_labels_map_by_value(tmp_path):
    truth = make_folder(tmp_path, colour=False)
    dm = loaded(tmp_path, classes=INDEXED)
    assert all(np.array_equal(m.numpy(), truth[s]) for s, m in all_masks(dm).items())


def test_images_are_resized_to_image_size_and_labels_stay_ids(tmp_path):
    """Labels are resized by taking, for each output pixel, the label under its centre (nearest, pixel
    centres aligned): the exact ids of the file, never a blend of two (a bilinear resize would fail)."""
    truth = make_folder(tmp_path, size=(61, 83))
    dm = loaded(tmp_path)
    train = dm.splits["train"]
    assert train.images.shape[1:] == (3, 40, 48) and train.masks.shape[1:] == (40, 48)
    rows = np.floor((np.arange(40) + 0.5) * 61 / 40).astype(int)
    cols = np.floor((np.arange(48) + 0.5) * 83 / 48).astype(int)
    for stem, mask in all_masks(dm).items():
        np.testing.assert_array_equal(mask.numpy(), truth[stem][np.ix_(rows, cols)], err_msg=stem)


def test_stray_colours_become_ignore_and_are_reported_once(tmp_path, caplog):
    make_folder(tmp_path)
    label = np.asarray(Image.open(tmp_path / "labels" / "s1.png")).copy()
    label[:2, :5] = [255, 0, 0]  # 10 px of a colour no class has
    Image.fromarray(label).save(tmp_path / "labels" / "s1.png")
    with caplog.at_level(logging.WARNING):
        dm = loaded(tmp_path)
    assert (all_masks(dm)["s1"][:2, :5] == 255).all()
    report = dm.label_report()
    assert report["stray_pixels_total"] == 10 and report["stray_files"]["s1.png"]["values"] == [[255, 0, 0]]
    warnings = [r for r in caplog.records if "match no class" in r.getMessage()]
    assert len(warnings) == 1 and "s1.png" in warnings[0].getMessage()


def test_transparent_and_255_pixels_are_unlabelled_not_stray(tmp_path):
    make_folder(tmp_path, n=4)
    rgba = np.dstack(
        [np.asarray(Image.open(tmp_path / "labels" / "s0.png")), np.full((40, 48), 255, np.uint8)]
    )
    rgba[5:10, 5:10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "labels" / "s0.png")
    dm = loaded(tmp_path)
    assert (all_masks(dm)["s0"][5:10, 5:10] == 255).all()
    assert dm.label_report()["stray_pixels_total"] == 0 and dm.label_report()["unlabelled_pixels_total"] == 25
    table = ClassTable.from_config(INDEXED)
    encoded = encode_label(np.array([[0, 1, 255], [2, 7, 255]], np.uint8), table, "x.png")
    assert encoded.ids.tolist() == [[0, 1, 255], [2, 255, 255]]
    assert (encoded.stray_pixels, encoded.unlabelled_pixels, encoded.stray_examples) == (1, 2, [7])


def test_a_class_may_use_value_255(tmp_path):
    table = ClassTable.from_config([{"name": "bg", "value": 0}, {"name": "nucleus", "value": 255}])
    encoded = encode_label(np.array([[0, 255, 3]], np.uint8), table, "x.png")
    assert encoded.ids.tolist() == [[0, 1, 255]] and encoded.stray_pixels == 1


def test_palette_labels_and_jpeg_images(tmp_path):
    truth = make_folder(tmp_path, ext_image=".jpg")
    for stem in truth:
        path = tmp_path / "labels" / f"{stem}.png"
        Image.open(path).convert("P", palette=Image.Palette.ADAPTIVE, colors=3).save(path)
    dm = loaded(tmp_path)
    assert all(np.array_equal(m.numpy(), truth[s]) for s, m in all_masks(dm).items())


def test_palette_labels_written_by_predict_read_back_as_the_same_ids(tmp_path):
    """predict's <stem>_labels.png: shown in the class colours, decoded by colour to the same ids (255 too)."""
    truth = make_folder(tmp_path, n=4)
    for stem, ids in truth.items():
        ids = ids.copy()
        ids[:3, :3] = 255  # unlabelled: the palette's transparent index
        truth[stem] = ids
        palette_label(ids, COLOURS.tolist()).save(tmp_path / "labels" / f"{stem}.png")
    opened = Image.open(tmp_path / "labels" / "s0.png")
    assert opened.mode == "P" and np.array_equal(np.asarray(opened), truth["s0"])
    rgb = np.asarray(opened.convert("RGB"))
    assert np.array_equal(rgb[3:, 3:], COLOURS[truth["s0"][3:, 3:]])  # what an image editor shows
    for classes in (PAPER, [{**c, "value": i} for i, c in enumerate(PAPER)]):  # allidb1 and a folder table
        masks = all_masks(loaded(tmp_path, classes=classes, image_size=[40, 48]))
        assert all(np.array_equal(m.numpy(), truth[s]) for s, m in masks.items())


def test_rgba_grey_and_16_bit_images_are_normalised_with_a_note(tmp_path):
    rgba = tmp_path / "a.png"
    Image.fromarray(np.full((4, 5, 4), 100, np.uint8), "RGBA").save(rgba)
    grey16 = tmp_path / "b.png"
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(grey16)
    image, note = read_rgb(rgba)
    assert image.shape == (4, 5, 3) and "alpha" in note
    image, note = read_rgb(grey16)
    assert image.shape == (4, 5, 3) and image.max() == 255 and "8-bit" in note


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(BloodsegError, match="data.root=.* is not a folder"):
        loaded(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    with pytest.raises(BloodsegError, match="labels"):
        loaded(tmp_path)


def test_image_without_label_and_label_without_image(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "labels" / "s2.png").unlink()
    with pytest.raises(BloodsegError, match=r"1 images in .*images have no partner.*\(s2\).*allow_unpaired"):
        loaded(tmp_path)
    dm = loaded(tmp_path, allow_unpaired=True)
    assert "s2" not in sum(dm.split.values(), [])
    (tmp_path / "images" / "s2.png").unlink()
    (tmp_path / "images" / "s3.png").unlink()
    with pytest.raises(BloodsegError, match=r"1 labels in .*labels have no partner.*\(s3\)"):
        loaded(tmp_path)


def test_size_mismatch_names_both_files(tmp_path):
    make_folder(tmp_path)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "labels" / "s4.png")
    with pytest.raises(BloodsegError, match=r"label .*s4.png is 12x10 .* image .*s4.png is 48x40"):
        loaded(tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "images" / "s5.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(BloodsegError, match=r"cannot read .*s5.png"):
        loaded(tmp_path)


def test_truncated_jpeg_names_the_file(tmp_path):
    make_folder(tmp_path, ext_image=".jpg")
    path = tmp_path / "images" / "s0.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(BloodsegError, match=r"cannot read .*s0.jpg"):
        loaded(tmp_path)


def test_duplicate_stems_are_rejected(tmp_path):
    make_folder(tmp_path)
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / "images" / "s0.jpg")
    with pytest.raises(BloodsegError, match="two files with the stem 's0'"):
        loaded(tmp_path)


def test_rgb_labels_need_colours_in_the_class_table(tmp_path):
    make_folder(tmp_path, colour=True)
    with pytest.raises(BloodsegError, match="have no color"):
        loaded(tmp_path, classes=INDEXED)


def test_grey_labels_saved_as_rgb_match_on_value(tmp_path):
    truth = make_folder(tmp_path, colour=False)
    for stem in truth:
        path = tmp_path / "labels" / f"{stem}.png"
        Image.open(path).convert("RGB").save(path)
    dm = loaded(tmp_path, classes=INDEXED)
    assert all(np.array_equal(m.numpy(), truth[s]) for s, m in all_masks(dm).items())


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ([], "empty"),
        ([{"name": "a", "value": 0}, {"name": "a", "value": 1}], "share the name"),
        ([{"name": "a", "color": [0, 0, 0]}, {"name": "b", "color": [0, 0, 0]}], "share the color"),
        ([{"name": "a", "color": [0, 0, 300]}], "0..255"),
        ([{"name": "a", "value": 0}, {"name": "b", "value": 0}], "share the value 0"),
        (
            [{"name": "a", "value": 0}, {"name": "b", "value": 256}],
            r"\(b\): value must be a label pixel value 0..255, got 256",
        ),
        ([{"name": "a", "value": -1}], "value must be a label pixel value 0..255, got -1"),
    ],
)
def test_bad_class_tables(classes, message):
    with pytest.raises(BloodsegError, match=message):
        ClassTable.from_config(classes)


def test_split_file_reuses_a_split(tmp_path):
    make_folder(tmp_path, n=10)
    first = loaded(tmp_path)
    first.write_split(tmp_path / "split.json")
    second = loaded(tmp_path, split_file=str(tmp_path / "split.json"), split_seed=999)
    assert second.split == first.split


def test_an_image_beyond_pils_pixel_limit_is_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "scan.png"
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 900)  # 2000 px is beyond twice this: PIL refuses it
    with pytest.raises(
        BloodsegError, match=r"scan.png has more pixels than this tool reads whole.*bloodseg.predict"
    ):
        read_rgb(path)


@pytest.mark.parametrize(
    ("orientation", "turn"), [(3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)), (8, np.rot90)]
)
def test_an_exif_turned_image_is_read_upright_as_viewers_show_it(tmp_path, orientation, turn):
    """Cameras store pixels sideways with an EXIF orientation; masks are drawn on what viewers show.
    Orientation 3 = turned 180 degrees, 6 = turn 90 degrees clockwise to view, 8 = counter-clockwise."""
    from bloodseg.data.fieldio import probe_size
    from bloodseg.data.imageio import read_rgb

    raw = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.png"  # PNG keeps the pixels exact
    Image.fromarray(raw).save(path, exif=exif)
    image, note = read_rgb(path)
    np.testing.assert_array_equal(image, turn(raw))
    assert note == "turned upright as its EXIF orientation says"
    assert probe_size(path) == image.shape[:2]
