"""Multiruns, sweep reports, parallel jobs with one GPU each, DDP and resume after preemption (CPU)."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import ROOT, SMOKE, compose_train, run_cli, run_tool

from bloodseg.models.segnet import SegNet
from bloodseg.sweeps.results import collect_jobs, write_sweep_summary
from bloodseg.training.module import SegmentationModule
from bloodseg.training.run import objective

pytestmark = pytest.mark.slow
QUICK = [
    *SMOKE,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "callbacks.progress_bar=none",
    "logger=csv",
]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("grid")
    result = run_tool(
        "bloodseg.train",
        "-m",
        *QUICK,
        "loss.class_weighting=none,median_frequency",
        "optimizer.lr=0.01,0.001",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def test_two_by_two_grid_runs_four_jobs_and_the_report_lists_them(grid):
    paths = write_sweep_summary(grid)
    with open(paths["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {(r["loss.class_weighting"], r["optimizer.lr"]) for r in rows} == {
        ("none", "0.01"),
        ("none", "0.001"),
        ("median_frequency", "0.01"),
        ("median_frequency", "0.001"),
    }
    ious = [float(r["mean_iou"]) for r in rows]
    assert ious == sorted(ious, reverse=True)
    assert {"iou_background", "iou_rbc", "iou_wbc", "mean_bf_score", "weighted_iou"} <= set(rows[0])
    assert all(r["status"] == "completed" for r in rows)
    assert paths["heatmap"].is_file() and "median_frequency" in paths["md"].read_text()
    for job in collect_jobs(grid):  # each job has its own directory and config
        assert (job.path / "checkpoints" / "last.ckpt").is_file()


def test_sweep_report_cli(grid):
    result = run_cli("bloodseg.sweep_report", str(grid))  # a real process
    assert result.returncode == 0 and "sweep_summary.csv" in result.stdout


def test_failed_jobs_are_recorded_and_listed(tmp_path):
    result = run_tool(
        "bloodseg.train", "-m", *QUICK, "data.test_fraction=0.3,0.99", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode != 0  # Hydra reports the failure after running every job
    statuses = {j.overrides["data.test_fraction"]: j for j in collect_jobs(tmp_path)}
    assert statuses["0.3"].status == "completed"
    assert statuses["0.99"].status == "failed" and "train split" in statuses["0.99"].error
    text = write_sweep_summary(tmp_path)["md"].read_text()
    assert "Failed or incomplete jobs" in text and "train split" in text
    # Hydra skips its end-of-multirun callback after a failed job: the summary is printed all the same
    assert (
        "bloodseg: sweep stopped (a job failed" in result.stdout
        and "Failed or incomplete jobs" in result.stdout
    )


def test_parallel_jobs_each_get_their_own_gpu_id(tmp_path):
    result = run_tool(
        "bloodseg.train",
        "-m",
        *QUICK,
        "test_after_fit=false",
        "hydra/launcher=joblib_local",
        "hydra.launcher.n_jobs=2",
        "launcher_gpus=[7,9]",
        "seed=1,2",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    gpus = []
    for job in collect_jobs(tmp_path):
        log = (job.path / "train.log").read_text()
        gpus.append(log.split("runs on GPU ")[1].split()[0])
    assert sorted(gpus) == ["7", "9"]


def test_optuna_preset_runs_a_budgeted_search(tmp_path):
    result = run_tool(
        "bloodseg.train",
        "-m",
        *QUICK,
        "+sweep=optuna_lr",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert "optimizer.lr" in best["best_params"]
    jobs = collect_jobs(tmp_path)
    assert len(jobs) == 2
    # the search chose on the validation split carved from the training images, never on test
    for job in jobs:
        split = json.loads((job.path / "split.json").read_text())
        assert (len(split["train"]), len(split["val"]), len(split["test"])) == (23, 6, 13)
    assert best["best_value"] == pytest.approx(max(job.val_mean_iou for job in jobs), abs=1e-6)
    assert "selects on the test split" not in result.stderr


def test_optimising_a_test_metric_warns_about_the_leak(caplog):
    metrics = {"dataset": {"mean_iou": 0.5}}
    result = {"metrics": metrics, "callback_metrics": {"val/mean_iou": 0.4}, "has_val_split": True}
    with caplog.at_level(logging.WARNING, logger="bloodseg.train"):
        assert objective(compose_train([*SMOKE, "optimized_metric=test/mean_iou"]), result) == 0.5
    assert "optimized_metric=test/mean_iou selects on the test split" in caplog.text
    assert "data.val_fraction=0.2 optimized_metric=val/mean_iou" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bloodseg.train"):  # the default: validation, no warning
        assert objective(compose_train(SMOKE), result) == 0.4
    assert caplog.text == ""
    without_val = {**result, "callback_metrics": {}, "has_val_split": False}
    assert objective(compose_train(SMOKE), without_val) is None  # nothing to return, single runs go on


def test_optuna_without_a_validation_split_is_one_clear_error(tmp_path):
    result = run_tool(
        "bloodseg.train",
        "-m",
        *QUICK,
        "+sweep=optuna_lr",
        "hydra.sweeper.n_trials=1",
        "data.val_fraction=0",
        "test_after_fit=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode != 0
    assert "optimized_metric=val/mean_iou has no value in this run" in result.stderr
    assert "data.val_fraction=0.2" in result.stderr


def test_ddp_on_two_cpu_processes_matches_single_process_evaluation(tmp_path):
    run_dir = tmp_path / "ddp"
    result = run_tool(
        "bloodseg.train",
        *QUICK,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in run_dir.glob("checkpoints/*.ckpt")) == [
        "last.ckpt"
    ]  # one run dir, one writer
    evaluated = run_tool(
        "bloodseg.evaluate",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        f"output_dir={tmp_path / 'single'}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    ddp = json.loads((run_dir / "metrics.json").read_text())
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert ddp["confusion_matrix"] == single["confusion_matrix"]
    assert ddp["dataset"] == single["dataset"] and ddp["classes"] == single["classes"]


def test_spawned_workers_get_their_own_weights_and_metric_states():
    module = SegmentationModule(
        SegNet(3, pretrained=False),
        torch.ones(3),
        {"class_names": ["a", "b", "c"], "mean": [0.5] * 3, "std": [0.2] * 3},
    )
    module.share_memory()  # what torch.multiprocessing does to CPU tensors sent to ddp_spawn workers
    module.test_metrics.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long))
    module.setup("fit")
    assert not any(t.is_shared() for t in [*module.parameters(), *module.buffers()])
    # metric states are per-process lists of per-image statistics (no shared tensor to add into),
    # emptied by setup
    states = module.test_metrics.images.metric_state
    assert states and all(isinstance(v, list) and not v for v in states.values())


def epoch_rows(metrics_csv) -> list[int]:
    """The epochs of metrics.csv's end-of-training-epoch rows (one per completed epoch)."""
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv) as handle:
        return [int(r["epoch"]) for r in csv.DictReader(handle) if r.get("train/mean_iou")]


def test_killed_job_restarted_with_the_same_config_resumes(tmp_path):
    """A preempted cluster job is resubmitted with the same config and run dir: it must continue,
    with its whole metrics history (each step and epoch once)."""
    args = [
        *SMOKE,
        "trainer.max_epochs=4",
        "callbacks.progress_bar=none",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    process = subprocess.Popen(
        [sys.executable, "-m", "bloodseg.train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpt, metrics_csv = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "csv" / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if ckpt.is_file() and epoch_rows(metrics_csv):  # epoch 1 saved and logged: kill during epoch 2
            size = ckpt.stat().st_size
            time.sleep(0.3)
            if ckpt.stat().st_size == size:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the job finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert interrupted["epoch"] < 3
    assert (tmp_path / "run.lock").is_file()  # the killed run's lock: stale, it must not block the rerun
    result = run_tool("bloodseg.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from this run directory's own checkpoint" in (tmp_path / "train.log").read_text()
    final = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert final["global_step"] == 4 * 3  # 4 epochs of 3 batches in total, not 4 more
    assert (tmp_path / "metrics.json").is_file() and not (tmp_path / "run.lock").exists()
    assert epoch_rows(metrics_csv) == [0, 1, 2, 3]  # the rows from before the kill are kept, none twice
    with open(metrics_csv) as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle) if r.get("train/loss_step")]
    assert steps == list(range(12))
