"""The real CellaVision WBC set through the loader, and its checksum-verified downloader (local URL)."""

from __future__ import annotations

import zipfile

import pytest
import torch
from conftest import compose_train

from bloodseg.data.datamodule import BloodSmearDataModule
from bloodseg.data.download import CELLAVISION_SHA256, download_cellavision, folder_digest
from bloodseg.data.loading import stray_summary
from bloodseg.errors import BloodsegError

# Stray mask values per file, as found by reading the PNGs (README: ~300 px with values 2..50).
STRAY = {"047.png": 179, "034.png": 97, "050.png": 22, "035.png": 3, "076.png": 3}


@pytest.fixture(scope="module")
def cellavision(cellavision_dir):
    cfg = compose_train(["data=cellavision", f"data.root={cellavision_dir}", "data.num_workers=0"])
    dm = BloodSmearDataModule(cfg.data)
    dm.setup()
    return dm


def test_loads_all_100_real_images_with_the_70_30_split(cellavision):
    assert cellavision.table.names == ("background", "cytoplasm", "nucleus")
    assert {k: len(v) for k, v in cellavision.split.items()} == {"train": 70, "val": 0, "test": 30}
    assert cellavision.splits["train"].images.shape[1:] == (3, 300, 300)


def test_stray_values_are_ignored_and_reported_per_file(cellavision, caplog):
    report = cellavision.label_report()
    assert report["stray_pixels_total"] == sum(STRAY.values())
    assert {k: v["pixels"] for k, v in report["stray_files"].items()} == STRAY
    masks = {i: m for s in cellavision.splits.values() for i, m in zip(s.ids, s.masks, strict=True)}
    for name, pixels in STRAY.items():
        assert (
            int((masks[name[:3]] == 255).sum()) == pixels
        )  # 255 (nucleus) is a class here, so only strays are ignore
    values = torch.cat([m.flatten() for m in masks.values()]).unique().tolist()
    assert values == [0, 1, 2, 255]


def test_each_split_reports_its_stray_share_for_the_result_tables(cellavision):
    """The share under the final tables: a split's stray pixels over its label pixels (300x300 each)."""
    for split in ("train", "test"):
        loaded = cellavision.splits[split]
        mine = {name: n for name, n in STRAY.items() if name[:3] in loaded.ids}
        summary = stray_summary(loaded.stray, loaded.label_pixels)
        assert loaded.label_pixels == len(loaded.ids) * 300 * 300
        assert summary["pixels"] == sum(mine.values()) and summary["files"] == len(mine)
        assert summary["share"] == sum(mine.values()) / (len(loaded.ids) * 300 * 300)
        assert summary["worst"] == (max(mine, key=mine.get) if mine else None)


def test_every_class_is_present_in_training(cellavision):
    counts, _ = cellavision.class_pixel_counts()
    assert (counts > 0).all()


def make_archive(source, path, prefix="segmentation_WBC-master/Dataset 2/"):
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(source.iterdir()):
            if file.suffix in (".bmp", ".png"):
                archive.write(file, prefix + file.name)
        archive.writestr("segmentation_WBC-master/README.md", "readme")


def test_downloader_verifies_and_installs_from_a_local_url(cellavision_dir, tmp_path, caplog):
    archive = tmp_path / "repo.zip"
    make_archive(cellavision_dir, archive)
    target = download_cellavision(tmp_path / "cache", url=archive.as_uri())
    assert target == tmp_path / "cache" / "cellavision_wbc"
    assert len(list(target.glob("*.bmp"))) == 100 and folder_digest(target) == CELLAVISION_SHA256
    cfg = compose_train(
        [
            "data=cellavision",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            "data.max_images=5",
        ]
    )
    dm = BloodSmearDataModule(cfg.data)
    dm.setup()
    assert sum(len(v) for v in dm.split.values()) == 5


def test_downloader_rejects_a_wrong_checksum_and_keeps_nothing(cellavision_dir, tmp_path):
    archive = tmp_path / "repo.zip"
    make_archive(cellavision_dir, archive)
    with pytest.raises(BloodsegError, match="checksum mismatch"):
        download_cellavision(tmp_path / "cache", url=archive.as_uri(), sha256="0" * 64)
    assert not (tmp_path / "cache" / "cellavision_wbc").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_downloader_errors_are_clear(tmp_path):
    with pytest.raises(BloodsegError, match="could not download"):
        download_cellavision(tmp_path, url=(tmp_path / "missing.zip").as_uri())
    not_zip = tmp_path / "x.zip"
    not_zip.write_text("hello")
    with pytest.raises(BloodsegError, match="not a zip"):
        download_cellavision(tmp_path, url=not_zip.as_uri())


def test_missing_cache_says_how_to_download(tmp_path):
    cfg = compose_train(["data=cellavision", f"data.cache_dir={tmp_path}"])
    with pytest.raises(BloodsegError, match="python -m bloodseg.data.download cellavision"):
        BloodSmearDataModule(cfg.data).setup()
