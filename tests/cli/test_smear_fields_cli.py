"""The real-smear-field workflow as a user runs it: train, evaluate (checkpoint and folders), predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ONE_BATCH, compose_train, run_tool
from PIL import Image
from test_real_fields import small_smear_copy

from bloodseg.training.run import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smear_run(smear_fields_dir, tmp_path_factory):
    """A smoke-sized run on three real fields (two train, one val): whole-field val and test at 128x160."""
    base = tmp_path_factory.mktemp("smear")
    root = small_smear_copy(smear_fields_dir, base / "fields")
    run_dir = base / "run"
    overrides = [
        "experiment=unet_resnet34",
        "model.encoder=resnet18",
        "model.encoder_weights=null",
        "data=smear_fields",
        f"data.root={root}",
        *ONE_BATCH,
        "data.image_size=[128,160]",
        "data.crop_size=[64,64]",
        "trainer.max_epochs=1",
        "evaluation.instances.min_true_area=5",
    ]
    train(compose_train(overrides), run_dir)
    return root, run_dir


def test_training_on_smear_fields_scores_cells_as_objects(smear_run):
    root, run_dir = smear_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    assert split["published"] is True and split["val"] == split["test"] and len(split["train"]) == 2
    assert metrics["num_images"] == 1 and list(metrics["classes"]) == ["background", "cell"]
    cells = metrics["instances"]["classes"]["cell"]
    assert set(cells) == {"edge_excluded", "edge_included"}
    included, excluded = cells["edge_included"], cells["edge_excluded"]
    assert included["true_cells"] > excluded["true_cells"] > 0  # the 128x160 val field has edge cells
    assert metrics["instances"]["settings"]["min_true_area"] == 5
    header = (run_dir / "per_image_metrics.csv").read_text().splitlines()[0].split(",")
    assert {"cells_true_cell", "cells_predicted_cell", "f1_50_cell", "interior_f1_50_cell"} <= set(header)
    assert "Table 3. Cells as objects" in (run_dir / "metrics.md").read_text()


def test_evaluate_scores_predicted_folders_against_binary_masks(smear_fields_dir, tmp_path):
    """Perfect predictions (the masks themselves as class ids) score 1 everywhere, cells included."""
    gt = smear_fields_dir / "val" / "masks"
    stem = sorted(gt.iterdir())[0].stem
    pred, truth = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    truth.mkdir()
    mask = np.asarray(Image.open(gt / f"{stem}.png").convert("L"))[:400, :600]
    Image.fromarray(mask).save(truth / f"{stem}.png")
    Image.fromarray((mask == 255).astype(np.uint8)).save(pred / f"{stem}.png")
    out = tmp_path / "out"
    result = run_tool(
        "bloodseg.evaluate", f"pred_dir={pred}", f"gt_dir={truth}", "data=smear_fields", f"output_dir={out}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["mean_iou"] == 1.0 and metrics["dataset"]["mean_bf_score"] == 1.0
    scores = metrics["instances"]["classes"]["cell"]["edge_excluded"]
    # the default cell splitting may cut an odd true cell in two, so F1 is high but need not be 1
    assert scores["true_cells"] > 5 and scores["f1_50"] > 0.8


def test_evaluate_folders_refuse_a_mask_with_other_values(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    truth.mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(pred / "a.png")
    bad = np.zeros((40, 40), np.uint8)
    bad[5:10, 5:10] = 7
    Image.fromarray(bad).save(truth / "a.png")
    result = run_tool(
        "bloodseg.evaluate",
        f"pred_dir={pred}",
        f"gt_dir={truth}",
        "data=smear_fields",
        f"output_dir={tmp_path / 'o'}",
    )
    assert result.returncode != 0
    assert "holds the values 0, 7, not only 0 and 255" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_folders_refuse_allidb1_masks_in_one_line(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    result = run_tool(
        "bloodseg.evaluate",
        f"pred_dir={tmp_path / 'p'}",
        f"gt_dir={tmp_path / 'g'}",
        "data=allidb1_masks",
        "data.root=/tmp/x",
        "data.mask_root=/tmp/y",
        f"output_dir={tmp_path / 'o'}",
    )
    assert result.returncode != 0 and "gt_dir= takes one label per image" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_download_command_says_where_the_real_sets_live():
    for dataset, needle in (("smear_fields", "BBBC041"), ("allidb1_masks", "andrealoddo/ALL-IDB1-masks")):
        result = run_tool("bloodseg.data.download", dataset)
        assert result.returncode == 0 and needle in result.stdout and "not fetched" in result.stdout
