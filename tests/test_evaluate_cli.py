"""`python -m bloodseg.evaluate`: a checkpoint on its stored split, and folders of index PNGs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from bloodseg.data.synthetic import generate_smear

pytestmark = pytest.mark.slow


def test_checkpoint_evaluation_reproduces_the_training_numbers(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    result = run_cli(
        "bloodseg.evaluate",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        f"output_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluated["dataset"] == trained["dataset"] and evaluated["classes"] == trained["classes"]
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
    split = json.loads((run_dir / "split.json").read_text())
    with open(tmp_path / "per_image_metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["image"] for r in rows) == sorted(split["test"])
    for name in ("confusion_matrix.png", "confusion_matrix.csv", "metrics.md"):
        assert (tmp_path / name).is_file()


def test_checkpoint_evaluation_does_not_depend_on_the_batch_size(smoke_run, tmp_path):
    """Scored one image at a time, the test split gets the training run's classes (rounding-only ties aside)."""
    run_dir, _ = smoke_run
    result = run_cli(
        "bloodseg.evaluate",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        "batch_size=1",
        f"output_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = np.array(json.loads((run_dir / "metrics.json").read_text())["confusion_matrix"]["counts"])
    alone = np.array(json.loads((tmp_path / "metrics.json").read_text())["confusion_matrix"]["counts"])
    assert alone.sum() == trained.sum()
    assert np.abs(alone - trained).sum() <= 2 * 0.0005 * trained.sum()  # at most 0.05% of pixels change class


def test_checkpoint_evaluation_on_the_training_split(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    result = run_cli(
        "bloodseg.evaluate",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        "split=train",
        f"output_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["num_images"] == 29


def write_folders(root, n=4, shift=True):
    for sub in ("gt", "pred", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, truth, _ = generate_smear(100 + i, 60, 80)
        pred = np.where(truth == 255, 0, truth)
        if shift:
            pred = np.roll(pred, i, axis=1)
        Image.fromarray(truth).save(root / "gt" / f"s{i}.png")
        Image.fromarray(pred.astype(np.uint8)).save(root / "pred" / f"s{i}.png")
        Image.fromarray(image).save(root / "images" / f"s{i}.png")


def folder_args(root, *extra):
    return [
        "bloodseg.evaluate",
        f"pred_dir={root / 'pred'}",
        f"gt_dir={root / 'gt'}",
        "data=synthetic",
        f"output_dir={root / 'out'}",
        f"hydra.run.dir={root / 'hydra'}",
        *extra,
    ]


def test_folders_of_index_pngs(tmp_path):
    write_folders(tmp_path)
    result = run_cli(*folder_args(tmp_path, f"image_dir={tmp_path / 'images'}"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_images"] == 4
    with open(tmp_path / "out" / "per_image_metrics.csv") as handle:
        rows = {r["image"]: r for r in csv.DictReader(handle)}
    assert float(rows["s0"]["global_accuracy"]) == 1.0 and float(rows["s0"]["mean_iou"]) == 1.0  # unshifted
    assert float(rows["s3"]["mean_iou"]) < 1.0 and float(rows["s3"]["mean_bf_score"]) < float(
        rows["s0"]["mean_bf_score"]
    )
    assert len(list((tmp_path / "out").glob("overlay_best_s0.png"))) == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("class_id", "holds class ids [7]"),
        ("size", "must be the same size"),
        ("colour", "is a colour image"),
        ("missing", "have no partner"),
    ],
)
def test_folder_mode_bad_input(tmp_path, damage, message):
    write_folders(tmp_path, n=2, shift=False)
    pred = tmp_path / "pred" / "s1.png"
    if damage == "class_id":
        array = np.asarray(Image.open(pred)).copy()
        array[0, 0] = 7
        Image.fromarray(array).save(pred)
    elif damage == "size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(pred)
    elif damage == "colour":
        Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(pred)
    else:
        pred.unlink()
    result = run_cli(*folder_args(tmp_path))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_folder_mode_needs_a_class_table(tmp_path):
    write_folders(tmp_path, n=1)
    result = run_cli(
        "bloodseg.evaluate",
        f"pred_dir={tmp_path / 'pred'}",
        f"gt_dir={tmp_path / 'gt'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert result.returncode == 2 and "data=NAME" in result.stderr


def test_stray_ground_truth_values_are_ignored_and_counted(tmp_path):
    write_folders(tmp_path, n=2, shift=False)
    gt = tmp_path / "gt" / "s0.png"
    array = np.asarray(Image.open(gt)).copy()
    array[:2, :3] = 9
    Image.fromarray(array).save(gt)
    result = run_cli(*folder_args(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["stray_ground_truth_pixels"] == 6
    assert "s0.png" in result.stderr


def test_scoring_at_another_resolution_resizes_around_the_network(smoke_run, tmp_path):
    """The paper's resize-predict-resize: network at its training size (64x96), scores at 128x192."""
    run_dir, _ = smoke_run
    result = run_cli(
        "bloodseg.evaluate",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        "data=synthetic",
        "data.image_size=[128,192]",
        f"output_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    total = sum(map(sum, metrics["confusion_matrix"]["counts"]))
    assert metrics["num_images"] == 13 and total > 3.5 * sum(map(sum, trained["confusion_matrix"]["counts"]))
    overlay = next(tmp_path.glob("overlay_best_*.png"))
    assert Image.open(overlay).height >= 128
