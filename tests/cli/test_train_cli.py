"""End to end through the real CLI: a smoke run writes every artifact, resumes, and fails cleanly."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import ONE_BATCH, SMOKE, compose_train, run_tool

from bloodseg.training.run import train

pytestmark = pytest.mark.slow


def test_smoke_run_writes_every_artifact(smoke_run):
    run_dir, result = smoke_run
    for name in [
        ".hydra/config.yaml",
        "split.json",
        "checkpoints/last.ckpt",
        "metrics.json",
        "metrics.md",
        "confusion_matrix.csv",
        "csv/metrics.csv",
        "data_report.json",
        "figure4_ground_truth.png",  # the paper's Figure 4: ground truth over a training image
        "figure5_class_pixels.png",  # Figure 5: pixels per class in the training split, with the weights
    ]:
        assert (run_dir / name).is_file(), name
    split = json.loads((run_dir / "split.json").read_text())
    assert (len(split["train"]), len(split["test"])) == (29, 13)
    assert "classes (labelled pixels per split)" in (run_dir / "train.log").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["dataset"]) == {
        "global_accuracy",
        "mean_accuracy",
        "mean_iou",
        "weighted_iou",
        "mean_bf_score",
        "mean_dice",
    }
    assert metrics["semantics"] == "matlab_current" and metrics["metrics_version"] == 2
    assert set(metrics["classes"]) == {"background", "rbc", "wbc"}
    assert "validation" not in metrics  # the paper's protocol has no validation split
    assert metrics["num_images"] == 13
    counts = metrics["confusion_matrix"]["counts"]
    assert len(counts) == 3 and sum(map(sum, counts)) > 0
    assert all(value is not None for value in metrics["dataset"].values())  # complete: no nulls
    assert all(v is not None for c in metrics["classes"].values() for v in c.values())
    assert 0.0 <= metrics["dataset"]["global_accuracy"] <= 1.0
    assert (
        len(list(run_dir.glob("overlay_best_*.png"))) == 1
        and len(list(run_dir.glob("overlay_worst_*.png"))) == 1
    )
    assert metrics["model_init"].startswith("random")
    # Dice from the written confusion counts: 2 C[c,c] / (row_c + column_c)
    for c, name in enumerate(["background", "rbc", "wbc"]):
        row, column = sum(counts[c]), sum(r[c] for r in counts)
        assert metrics["classes"][name]["dice"] == pytest.approx(2 * counts[c][c] / (row + column))
    dice = [metrics["classes"][n]["dice"] for n in ("background", "rbc", "wbc")]
    assert metrics["dataset"]["mean_dice"] == pytest.approx(sum(dice) / 3)
    header = (run_dir / "per_image_metrics.csv").read_text().splitlines()[0].split(",")
    assert {"mean_dice", "dice_background", "dice_rbc", "dice_wbc"} <= set(header)
    assert "Table 1. Semantic segmentation metrics" in result.stderr + result.stdout


def test_resume_from_last_checkpoint_continues_training(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    before = torch.load(ckpt, map_location="cpu", weights_only=False)
    result = run_tool(
        "bloodseg.train", *SMOKE, f"ckpt_path={ckpt}", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert after["epoch"] == before["epoch"] + 1
    assert after["global_step"] == before["global_step"] + 3  # one more epoch of 3 batches, not a fresh start
    assert after["bloodseg"]["split"] == before["bloodseg"]["split"]


@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_last_checkpoint_is_written_every_epoch_whatever_the_validation_interval(tmp_path, val_fraction):
    """Lightning saves only after validation once check_val_every_n_epoch > 1 (never without a val
    split): last.ckpt must hold the last finished epoch all the same."""
    overrides = [
        *ONE_BATCH,
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=3",
        f"data.val_fraction={val_fraction}",
        "test_after_fit=false",
    ]
    train(compose_train(overrides), tmp_path)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1 and saved["global_step"] == 2


def test_resumed_training_is_exactly_the_uninterrupted_one(tmp_path):
    common = [
        *SMOKE,
        "trainer.limit_train_batches=2",
        "trainer.deterministic=true",
        "test_after_fit=false",
        "callbacks.progress_bar=none",
        "logger=csv",
    ]
    train(compose_train([*common, "trainer.max_epochs=2"]), tmp_path / "straight")
    train(compose_train([*common, "trainer.max_epochs=1"]), tmp_path / "first")
    train(
        compose_train(
            [*common, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}"]
        ),
        tmp_path / "resumed",
    )
    straight = torch.load(tmp_path / "straight/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    resumed = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert straight["global_step"] == resumed["global_step"] == 4
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_misspelt_key_on_the_command_line_names_it(tmp_path):
    result = run_tool("bloodseg.train", *SMOKE, "optimizer.lrr=0.1", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and "lrr" in result.stderr


def test_key_forced_in_with_plus_is_rejected(tmp_path):
    result = run_tool("bloodseg.train", *SMOKE, "+data.batchsize=3", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "data.batchsize" in result.stderr and "Traceback" not in result.stderr


def test_missing_data_folder_is_one_clear_line(tmp_path):
    result = run_tool(
        "bloodseg.train", *SMOKE, "data=folder", f"data.root={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "is not a folder" in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_with_other_classes_is_rejected(smoke_run, cellavision_dir, tmp_path):
    run_dir, _ = smoke_run
    result = run_tool(
        "bloodseg.train",
        *SMOKE,
        "data=cellavision",
        f"data.root={cellavision_dir}",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 2
    assert (
        "trained for 3 classes ['background', 'rbc', 'wbc']" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_device_side_augmentation_trains_exactly_like_the_loader_path(tmp_path):
    """data.augment_on_device (default on CUDA) gives the same batches, so the same weights, as the v2 loader."""
    common = [
        *SMOKE,
        "trainer.limit_train_batches=3",
        "trainer.max_epochs=2",
        "test_after_fit=false",
        "callbacks.progress_bar=none",
        "logger=csv",
        "trainer.deterministic=true",
    ]
    train(compose_train([*common, "data.augment_on_device=false"]), tmp_path / "loader")
    train(compose_train([*common, "data.augment_on_device=true"]), tmp_path / "device")
    a = torch.load(tmp_path / "loader/checkpoints/last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    b = torch.load(tmp_path / "device/checkpoints/last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def epoch_values(run_dir, key):
    """{epoch: value} of one logged key in csv/metrics.csv."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return {int(r["epoch"]): float(r[key]) for r in csv.DictReader(handle) if r.get(key)}


def test_default_run_logs_training_quality_every_epoch(smoke_run):
    """The paper protocol (no validation split) still gives per-epoch accuracy / IoU / Dice curves."""
    run_dir, _ = smoke_run
    for key in ("train/mean_iou", "train/global_accuracy", "train/mean_dice", "train/iou/wbc"):
        assert sorted(epoch_values(run_dir, key)) == [0, 1], key
    iou = {c: epoch_values(run_dir, f"train/iou/{c}") for c in ("background", "rbc", "wbc")}
    for epoch, mean in epoch_values(run_dir, "train/mean_iou").items():
        assert mean == pytest.approx(sum(v[epoch] for v in iou.values()) / 3, abs=1e-6)
    assert epoch_values(run_dir, "val/mean_iou") == {}  # no validation split, no val values


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    """A smoke run with a validation split, best-checkpointing and early stopping on val/mean_iou."""
    run_dir = tmp_path_factory.mktemp("val_run")
    result = run_tool(
        "bloodseg.train",
        *SMOKE,
        "data.val_fraction=0.2",
        "trainer.max_epochs=3",
        "callbacks.checkpoint.save_top_k=1",
        "callbacks.checkpoint.monitor=val/mean_iou",
        "callbacks.early_stopping.monitor=val/mean_iou",
        "callbacks.early_stopping.patience=1",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_validation_split_is_scored_every_epoch(val_run):
    run_dir, result = val_run
    val = epoch_values(run_dir, "val/mean_iou")
    assert len(val) >= 2 and sorted(val) == list(range(len(val)))
    for key in ("val/global_accuracy", "val/mean_bf_score", "val/mean_dice"):
        assert sorted(epoch_values(run_dir, key)) == sorted(val), key
    for metric in ("accuracy", "iou", "bf_score", "dice"):
        assert sorted(epoch_values(run_dir, f"val/{metric}/wbc")) == sorted(val), metric
    split = json.loads((run_dir / "split.json").read_text())
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (23, 6, 13)
    assert "23 train / 6 val / 13 test images at 64x96" in result.stderr  # the start-up line
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation"]["mean_iou"] == pytest.approx(val[max(val)], abs=1e-6)


def test_early_stopping_and_best_checkpoint_follow_val_mean_iou(val_run):
    run_dir, _ = val_run
    val = epoch_values(run_dir, "val/mean_iou")
    # Lightning's rule with patience 1: stop after the first epoch that does not beat the best so far
    expected = next((e + 1 for e in range(1, 3) if val[e] <= max(val[k] for k in range(e))), 3)
    assert len(val) == expected
    best_epoch = max(val, key=lambda e: (val[e], -e))
    assert [p.name for p in (run_dir / "checkpoints").glob("best-*.ckpt")] == [
        f"best-epoch{best_epoch:03d}.ckpt"
    ]


def test_monitoring_val_without_a_validation_split_is_one_clear_line(tmp_path):
    result = run_tool(
        "bloodseg.train",
        *SMOKE,
        "callbacks.early_stopping.monitor=val/mean_iou",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "callbacks.early_stopping.monitor=val/mean_iou needs a validation split" in result.stderr
    assert "data.val_fraction=0.2" in result.stderr
