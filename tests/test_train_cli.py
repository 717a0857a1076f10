"""End to end through the real CLI: a smoke run writes every artifact, resumes, and fails cleanly."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMOKE, compose_train, run_cli

from bloodseg.train import train

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
    ]:
        assert (run_dir / name).is_file(), name
    split = json.loads((run_dir / "split.json").read_text())
    assert (len(split["train"]), len(split["test"])) == (29, 13)
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
    assert "Table 1. Semantic segmentation metrics" in result.stderr + result.stdout


def test_resume_from_last_checkpoint_continues_training(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    before = torch.load(ckpt, map_location="cpu", weights_only=False)
    result = run_cli(
        "bloodseg.train", *SMOKE, f"ckpt_path={ckpt}", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert after["epoch"] == before["epoch"] + 1
    assert after["global_step"] == before["global_step"] + 3  # one more epoch of 3 batches, not a fresh start
    assert after["bloodseg"]["split"] == before["bloodseg"]["split"]


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
    result = run_cli("bloodseg.train", *SMOKE, "optimizer.lrr=0.1", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and "lrr" in result.stderr


def test_key_forced_in_with_plus_is_rejected(tmp_path):
    result = run_cli("bloodseg.train", *SMOKE, "+data.batchsize=3", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "data.batchsize" in result.stderr and "Traceback" not in result.stderr


def test_missing_data_folder_is_one_clear_line(tmp_path):
    result = run_cli(
        "bloodseg.train", *SMOKE, "data=folder", f"data.root={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "is not a folder" in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_with_other_classes_is_rejected(smoke_run, cellavision_dir, tmp_path):
    run_dir, _ = smoke_run
    result = run_cli(
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
