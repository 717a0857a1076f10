"""A class without a single training pixel cannot be learned: an error unless explicitly allowed."""

from __future__ import annotations

import pytest
from conftest import ONE_BATCH, SMOKE, compose_train

from bloodseg.data.datamodule import BloodSmearDataModule
from bloodseg.errors import BloodsegError
from bloodseg.training.run import train

WBC_NEVER_MATCHES = "data.classes.2.value=9"  # the labels hold 2 for white cells: none decodes as wbc


def test_class_absent_from_the_training_split_is_one_clear_error(tmp_path):
    cfg = compose_train([*SMOKE, *ONE_BATCH, WBC_NEVER_MATCHES])
    with pytest.raises(
        BloodsegError, match=r"wbc \(id 2\) have no pixel in the training split.*allow_empty_classes"
    ):
        train(cfg, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_allowed_empty_class_and_the_class_table_with_pixel_counts_per_split():
    cfg = compose_train([*SMOKE, WBC_NEVER_MATCHES, "data.allow_empty_classes=true"])
    datamodule = BloodSmearDataModule(cfg.data, seed=cfg.seed)
    datamodule.setup()
    datamodule.check_training_classes(cfg.data.allow_empty_classes)  # allowed: no error
    counts = datamodule.split_pixel_counts()
    assert counts["train"][2] == 0 and counts["train"][0] > 0 and counts["test"][1] > 0
    lines = datamodule.class_table().splitlines()
    assert lines[0].split() == ["id", "class", "value", "color", "train", "test"]
    assert lines[3].split()[:3] == ["2", "wbc", "9"] and lines[3].split()[-2] == "0"
    assert int(lines[1].split()[-2]) == counts["train"][0]
