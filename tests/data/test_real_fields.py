"""data=smear_fields and data=allidb1_masks: the published layouts, binary masks, clear errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from test_config import compose_train

from bloodseg.data.datamodule import BloodSmearDataModule
from bloodseg.data.labels import ClassTable, encode_binary_masks
from bloodseg.data.sources import allidb1_mask_pairs, resolve_pairs, smear_field_pairs
from bloodseg.data.split import published_split
from bloodseg.errors import BloodsegError


def data_cfg(*overrides: str):
    return compose_train(list(overrides)).data


def small_smear_copy(real: Path, tmp: Path, train: int = 2, val: int = 1) -> Path:
    """A smear-fields folder holding links to the first few real fields of each group."""
    for group, n in (("train", train), ("val", val)):
        for kind in ("images", "masks"):
            (tmp / group / kind).mkdir(parents=True, exist_ok=True)
        masks = sorted((real / group / "masks").iterdir())[:n]
        for mask in masks:
            image = next((real / group / "images").glob(mask.stem + ".*"))
            os.symlink(image, tmp / group / "images" / image.name)
            os.symlink(mask, tmp / group / "masks" / mask.name)
    return tmp


# ---- smear fields -------------------------------------------------------------------------------------
def test_the_shared_smear_fields_pair_into_their_published_split(smear_fields_dir):
    pairs = smear_field_pairs(smear_fields_dir)
    assert sum(p.group == "train" for p in pairs) == 50 and sum(p.group == "val" for p in pairs) == 10
    assert all(p.binary and p.image.stem == p.label.stem for p in pairs)
    split = published_split(pairs)
    assert len(split["train"]) == 50 and split["val"] == split["test"] and len(split["val"]) == 10
    assert not set(split["train"]) & set(split["val"])


def test_smear_fields_load_as_cell_ids_equal_to_the_white_mask_pixels(smear_fields_dir, tmp_path):
    root = small_smear_copy(smear_fields_dir, tmp_path)
    module = BloodSmearDataModule(data_cfg("data=smear_fields", f"data.root={root}"))
    module.setup()
    assert {k: len(v) for k, v in module.split.items()} == {"train": 2, "val": 1, "test": 1}
    assert module.table.names == ("background", "cell")
    val = module.splits["val"]
    raw = np.asarray(Image.open(next((root / "val" / "masks").iterdir())).convert("L"))
    assert val.masks.shape[-2:] == raw.shape  # native size, no resizing
    np.testing.assert_array_equal(val.masks[0].numpy(), (raw == 255).astype(np.uint8))
    assert module.label_report()["stray_pixels_total"] == 0


def write_field(root: Path, group: str, stem: str, size=(64, 48), mask_values=(0, 255)):
    (root / group / "images").mkdir(parents=True, exist_ok=True)
    (root / group / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
        root / group / "images" / f"{stem}.png"
    )
    mask = np.full(size, mask_values[0], np.uint8)
    mask[10:30, 10:30] = mask_values[1]
    Image.fromarray(mask).save(root / group / "masks" / f"{stem}.png")


def load(root: Path, *overrides):
    module = BloodSmearDataModule(data_cfg("data=smear_fields", f"data.root={root}", *overrides))
    module.setup()
    return module


def test_a_mask_with_other_values_fails_naming_the_file(tmp_path):
    write_field(tmp_path, "train", "a")
    write_field(tmp_path, "val", "b", mask_values=(0, 128))
    with pytest.raises(
        BloodsegError, match=r"mask .*val/masks/b.png holds the values 0, 128, not only 0 and 255; fix"
    ):
        load(tmp_path)


def test_a_field_without_a_mask_fails_naming_it(tmp_path):
    write_field(tmp_path, "train", "a")
    write_field(tmp_path, "val", "b")
    (tmp_path / "val" / "masks" / "b.png").unlink()
    write_field(tmp_path, "val", "c")
    with pytest.raises(BloodsegError, match=r"1 images in .*val/images have no partner .* \(b\); fix"):
        load(tmp_path)


def test_a_mask_of_another_size_fails_naming_both_files(tmp_path):
    write_field(tmp_path, "train", "a")
    write_field(tmp_path, "val", "b")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "val" / "masks" / "b.png")
    with pytest.raises(BloodsegError, match=r"label .*b.png is 40x40 \(WxH\) but its image .*b.png is 48x64"):
        load(tmp_path)


def test_a_missing_group_folder_names_the_layout(tmp_path):
    write_field(tmp_path, "train", "a")
    with pytest.raises(
        BloodsegError, match=r"data.root/val/images=.* is not a folder; fix: .*train/ and val/"
    ):
        load(tmp_path)


def test_smear_fields_without_a_root_names_data_root():
    with pytest.raises(
        BloodsegError, match=r"data.root is not set, but data=smear_fields .* fix: add data.root="
    ):
        resolve_pairs(data_cfg("data=smear_fields"))


# ---- binary masks ---------------------------------------------------------------------------------------
TABLE = ClassTable.from_config(OmegaConf.create([{"name": "background"}, {"name": "rbc"}, {"name": "wbc"}]))


def test_later_masks_win_where_masks_overlap_and_the_overlap_is_counted():
    rbc = np.zeros((8, 8), np.uint8)
    rbc[0:5, 0:5] = 255
    wbc = np.zeros((8, 8), bool)
    wbc[3:8, 3:8] = True  # a 1-bit mask as PIL reads it (0/1)
    encoded = encode_binary_masks([rbc, wbc.astype(np.uint8)], TABLE, ["rbc.tif", "wbc.tif"])
    expected = np.zeros((8, 8), np.uint8)
    expected[0:5, 0:5] = 1
    expected[3:8, 3:8] = 2
    np.testing.assert_array_equal(encoded.ids, expected)
    assert encoded.overlap_pixels == 4


def test_binary_masks_reject_colour_and_a_wrong_mask_count():
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    with pytest.raises(BloodsegError, match=r"mask c.png has colour"):
        encode_binary_masks([colour, colour], TABLE, ["c.png", "d.png"])
    with pytest.raises(BloodsegError, match=r"1 binary mask\(s\) \(x.png\) for 3 classes"):
        encode_binary_masks([np.zeros((4, 4), np.uint8)], TABLE, ["x.png"])


# ---- ALL-IDB1 masks -------------------------------------------------------------------------------------
def made_up_images(mask_dir: Path, image_dir: Path, stems: list[str]) -> None:
    """JPEGs of noise at each field's mask size (the real images are the user's)."""
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for stem in stems:
        width, height = Image.open(mask_dir / f"{stem}_RBC.tif").size
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
            image_dir / f"{stem}.jpg"
        )


def three_fields(allidb1_masks_dir: Path, tmp_path: Path) -> Path:
    masks = tmp_path / "masks"
    masks.mkdir()
    for stem in ("Im001_1", "Im002_1", "Im003_1"):
        for kind in ("RBC", "WBCs"):
            shutil.copy(allidb1_masks_dir / f"{stem}_{kind}.tif", masks)
    return masks


def test_allidb1_masks_merge_into_background_rbc_wbc(allidb1_masks_dir, tmp_path):
    masks = three_fields(allidb1_masks_dir, tmp_path)
    made_up_images(masks, tmp_path / "images", ["Im001_1", "Im002_1", "Im003_1"])
    module = BloodSmearDataModule(
        data_cfg("data=allidb1_masks", f"data.root={tmp_path / 'images'}", f"data.mask_root={masks}")
    )
    module.setup()
    by_id = {}
    for loaded in module.splits.values():
        by_id.update({i: m for i, m in zip(loaded.ids, loaded.masks, strict=True)})
    assert sorted(by_id) == ["Im001_1", "Im002_1", "Im003_1"]
    rbc = np.asarray(Image.open(masks / "Im002_1_RBC.tif")).astype(bool)
    wbc = np.asarray(Image.open(masks / "Im002_1_WBCs.tif")).astype(bool)
    expected = np.where(wbc, 2, np.where(rbc, 1, 0))
    assert by_id["Im002_1"].shape == rbc.shape  # native 1368x1712
    np.testing.assert_array_equal(by_id["Im002_1"].numpy(), expected)
    assert module.table.names == ("background", "rbc", "wbc")


def test_allidb1_masks_without_images_fail_in_one_line_naming_them(allidb1_masks_dir, tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(BloodsegError) as error:
        allidb1_mask_pairs(tmp_path / "images", allidb1_masks_dir)
    message = str(error.value)
    assert "\n" not in message
    assert (
        "lacks 10 of the 10 ALL-IDB1 images" in message
        and "Im001_1.jpg" in message
        and "Im010_1.jpg" in message
    )
    assert "University of Milan" in message


def test_allidb1_masks_with_some_images_missing_name_those_or_skip_them(allidb1_masks_dir, tmp_path):
    masks = three_fields(allidb1_masks_dir, tmp_path)
    made_up_images(masks, tmp_path / "images", ["Im001_1", "Im003_1"])
    with pytest.raises(
        BloodsegError,
        match=r"lacks 1 of the 3 ALL-IDB1 images the masks are for \(Im002_1.jpg\).*allow_unpaired=true",
    ):
        allidb1_mask_pairs(tmp_path / "images", masks)
    kept = allidb1_mask_pairs(tmp_path / "images", masks, allow_unpaired=True)
    assert [p.id for p in kept] == ["Im001_1", "Im003_1"]
    assert kept[0].label.name == "Im001_1_RBC.tif" and kept[0].extra_masks[0].name == "Im001_1_WBCs.tif"


def test_allidb1_masks_without_mask_root_names_the_key():
    with pytest.raises(BloodsegError, match=r"data.mask_root is not set; fix: add data.mask_root="):
        resolve_pairs(data_cfg("data=allidb1_masks", "data.root=/tmp/x", "data.mask_root=null"))
