"""W&B tracking: offline runs read back with W&B's own reader, sweeps, resume, and failures that never stop training.

The offline runs are read with ``wandb leet inspect --json``, the reader that ships with wandb (0.31 has
no ``wandb.sdk.internal.datastore`` any more): one JSON object per record of the run's ``.wandb`` log.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMOKE, compose_train, run_cli

from bloodseg.tracking import wandb_naming as naming
from bloodseg.tracking import wandb_run as tracking

slow = pytest.mark.slow


# ---- reading an offline run back ------------------------------------------------------------------
def read_offline_run(run_dir: Path) -> dict:
    """The records of the single offline W&B run under run_dir/wandb, through W&B's reader.

    Returns {"dir", "records", "run" (the run record), "config" (merged updates), "history" (list of
    flat items), "artifacts" (name -> type), "exit_code"}.
    """
    found = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
    assert len(found) == 1, f"expected one offline run under {run_dir}/wandb, found {found}"
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(found[0])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=found[0].parent,  # the CLI keeps its own log in ./wandb
    )
    assert result.returncode == 0, f"wandb leet inspect failed (wandb too old?): {result.stderr[-2000:]}"
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    out = {"dir": found[0], "records": records, "run": None, "config": {}, "history": [], "artifacts": {}}
    out["exit_code"] = None
    for record in records:
        kind = record["type"]
        if kind == "run":
            out["run"] = record["run"]
            out["config"].update(record["run"].get("config", {}).get("update", {}))
        elif kind == "config":
            out["config"].update(record["config"].get("update", {}))
        elif kind == "history":
            out["history"].append(record["history"]["item"])
        elif kind == "artifact":
            out["artifacts"][record["artifact"]["name"]] = record["artifact"]["type"]
        elif kind == "exit":
            out["exit_code"] = record["exit"].get("exit_code", 0)
    assert out["run"] is not None, "no run record"
    return out


def logged_keys(run: dict) -> set[str]:
    return {key for item in run["history"] for key in item}


# ---- shared CLI runs (module scope) ------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def wandb_sandbox(tmp_path_factory):
    """W&B's own caches and staging area in a temporary folder; offline; no key."""
    base = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(base / var.lower()))
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        yield base


def run_smoke_sweep(tmp_path_factory) -> Path:
    """A 2-job smoke multirun (seed=1,2) with W&B, run once per pytest session and shared with test_report."""
    sweep_dir = tmp_path_factory.getbasetemp() / "shared_smoke_sweep"
    if (sweep_dir / "1" / "metrics.json").is_file() and (sweep_dir / "0" / "metrics.json").is_file():
        return sweep_dir
    result = run_cli(
        "bloodseg.train", "-m", *SMOKE, "logger=wandb", "seed=1,2", f"hydra.sweep.dir={sweep_dir}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir.parent / "shared_smoke_sweep.stdout").write_text(result.stdout)  # what the user saw
    return sweep_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, wandb_sandbox):
    return run_smoke_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def resumed(smoke_run, tmp_path_factory, wandb_sandbox):
    """The shared smoke run continued for one more epoch from its last.ckpt, artifacts on."""
    run_dir, _ = smoke_run
    out = tmp_path_factory.mktemp("resumed")
    result = run_cli(
        "bloodseg.train",
        *SMOKE,
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "trainer.max_epochs=3",
        "logger.wandb.log_artifacts=true",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


# ---- a single smoke run (W&B is on by default) -----------------------------------------------------
@slow
def test_default_smoke_run_keeps_an_offline_wandb_run_in_its_run_dir(smoke_run):
    run_dir, result = smoke_run
    run = read_offline_run(run_dir)
    run_id = (run_dir / tracking.RUN_ID_FILE).read_text().strip()
    assert run["run"]["run_id"] == run_id and run["dir"].name.endswith(run_id)
    assert run["exit_code"] == 0  # finished cleanly at the end of the job
    offline_dir = f"{run_dir.resolve()}/wandb/{run['dir'].name}"
    assert f"wandb sync {offline_dir}" in result.stdout  # how to upload it later
    assert f"wandb leet {offline_dir}" in result.stdout  # and how to look at it offline
    assert "Table 1. Semantic segmentation metrics" in result.stdout and str(run_dir) in result.stdout


@slow
def test_offline_run_holds_names_config_and_every_metric(smoke_run):
    run_dir, _ = smoke_run
    run = read_offline_run(run_dir)
    meta = run["run"]
    assert (
        meta["project"] == "bloodseg" and meta["run_group"] == "segnet_vgg16" and meta["job_type"] == "train"
    )
    assert meta["display_name"].startswith("segnet_vgg16") and "debug=smoke" in meta["display_name"]
    assert {"segnet_vgg16", "weighting:median_frequency", "debug:smoke"} <= set(meta["tags"])

    # the full resolved config under flat keys, enums as strings, plus the class weights
    config = run["config"]
    assert config["name"] == "segnet_vgg16" and config["model.name"] == "segnet_vgg16"
    assert config["loss.class_weighting"] == "median_frequency"  # group-by / parallel coordinates keys
    assert config["data.image_size"] == [64, 96] and config["trainer.max_epochs"] == 2
    assert "optimizer.lr" in config and "optimizer" not in config  # flat, not nested
    assert config["run_dir"] == str(run_dir.resolve())
    assert set(config["class_weights"]) == {"background", "rbc", "wbc"}

    records = [r["metric"] for r in run["records"] if r["type"] == "metric"]
    metrics = {r.get("name"): json.dumps(r) for r in records}
    assert "val/mean_iou" in metrics and '"max"' in metrics["val/mean_iou"]  # summary: the best, not the last

    keys = logged_keys(run)
    expected = {"train/loss_step", "train/loss_epoch", "test/loss", "lr-SGD", "trainer/global_step"}
    expected |= {
        f"test/{k}" for k in ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score")
    }
    expected |= {
        f"test/{m}/{c}" for m in ("accuracy", "iou", "bf_score") for c in ("background", "rbc", "wbc")
    }
    expected |= {"train/mean_iou", "train/global_accuracy", "train/mean_dice", "test/mean_dice"}
    expected |= {f"train/{m}/{c}" for m in ("accuracy", "iou", "dice") for c in ("background", "rbc", "wbc")}
    assert expected <= keys, expected - keys
    train_epochs = [item["epoch"] for item in run["history"] if "train/mean_iou" in item]
    assert sorted(train_epochs) == [0, 1]  # a quality curve per epoch, without a validation split
    assert {"test/confusion_matrix_table._type", "test/per_class_metrics._type"} <= keys
    image = next(item for item in run["history"] if "test/confusion_matrix_image._type" in item)
    assert image["test/confusion_matrix_image._type"] == "image-file"
    assert any(
        k.endswith("visualize.test/confusion_matrix") for k in config
    ) or "test/confusion_matrix" in str(
        config["_wandb"].get("visualize", {})
    )  # the confusion matrix as a W&B plot (Vega panel over the table)


@slow
def test_overlays_carry_prediction_and_ground_truth_masks_every_epoch(smoke_run):
    run_dir, _ = smoke_run
    run = read_offline_run(run_dir)
    overlays = [item for item in run["history"] if "overlays/test._type" in item]
    assert len(overlays) == 2  # debug=smoke: images every epoch, 2 epochs
    assert len({item["trainer/global_step"] for item in overlays}) == 2
    for item in overlays:
        assert item["overlays/test.count"] == 2  # debug=smoke: two fixed test images
        for masks in item["overlays/test.all_masks"]:
            assert masks["predictions"]["_type"] == "mask" and masks["ground_truth"]["_type"] == "mask"
            assert (run["dir"] / "files" / masks["predictions"]["path"]).is_file()
    assert overlays[0]["overlays/test.captions"] == overlays[1]["overlays/test.captions"]  # the same images
    labels = json.dumps(run["config"]["_wandb"].get("mask/class_labels", {}))
    assert '"wbc"' in labels and '"unlabelled"' in labels


# ---- resume ---------------------------------------------------------------------------------------------
@slow
def test_run_resumed_from_a_checkpoint_continues_the_same_wandb_run(smoke_run, resumed):
    run_dir, _ = smoke_run
    out, _ = resumed
    original = (run_dir / tracking.RUN_ID_FILE).read_text().strip()
    assert (out / tracking.RUN_ID_FILE).read_text().strip() == original
    run = read_offline_run(out)
    assert run["run"]["run_id"] == original
    steps = [item["trainer/global_step"] for item in run["history"] if "train/loss_step" in item]
    assert min(steps) >= 6  # continues after the first run's 6 steps instead of starting over


@slow
def test_artifacts_hold_metrics_and_the_checkpoint(resumed):
    out, _ = resumed
    run = read_offline_run(out)
    run_id = run["run"]["run_id"]
    assert run["artifacts"].get(f"metrics-{run_id}") == "evaluation"
    assert run["artifacts"].get(f"model-{run_id}") == "model"


# ---- multirun ---------------------------------------------------------------------------------------
@slow
def test_multirun_jobs_are_distinct_runs_in_one_group(sweep):
    runs = [read_offline_run(sweep / job) for job in ("0", "1")]
    ids = {r["run"]["run_id"] for r in runs}
    assert len(ids) == 2
    groups = {r["run"]["run_group"] for r in runs}
    assert groups == {f"segnet_vgg16-{sweep.name}"}
    names = sorted(r["run"]["display_name"] for r in runs)
    assert "seed=1" in names[0] and "seed=2" in names[1]
    assert all("multirun" in r["run"]["tags"] for r in runs)
    assert all(r["exit_code"] == 0 for r in runs)
    assert [r["config"]["seed"] for r in runs] == [1, 2]  # each run holds its own job's config only


@slow
def test_multirun_ends_with_the_sweep_summary_and_how_to_view_it(sweep):
    stdout = (sweep.parent / "shared_smoke_sweep.stdout").read_text()
    end = stdout[stdout.index("bloodseg: sweep finished") :]
    assert "| seed |" in end and "| 1 |" in end and "| 2 |" in end  # the sweep table, one row per job
    assert f"python -m bloodseg.sweep_report {sweep.resolve()}" in end
    assert f"wandb leet {sweep.resolve() / 'wandb'}" in end and "wandb sync" in end
    assert (sweep / "sweep_summary.md").is_file()


@slow
def test_wandb_leet_lists_every_job_of_the_sweep_by_a_readable_name(sweep):
    """<sweep>/wandb holds one link per job named after its overrides, in the form `wandb leet` discovers."""
    links = sorted((sweep / "wandb").iterdir())
    names = [link.name for link in links]
    assert len(links) == 2 and all(link.is_symlink() for link in links), names
    assert names[0].endswith("-job0-seed=1") and names[1].endswith("-job1-seed=2"), names
    assert all(re.match(r"run-\d{8}_\d{6}-", name) for name in names)  # leet's pattern for a run folder
    for job, link in zip(("0", "1"), links, strict=True):
        result = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(link)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=link.parent,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        summary = json.loads(result.stdout)
        assert summary["run_id"] == (sweep / job / tracking.RUN_ID_FILE).read_text().strip()
        assert f"seed={int(job) + 1}" in summary["name"]


# ---- failures ----------------------------------------------------------------------------------------
@slow
def test_wandb_that_cannot_start_leaves_a_csv_run_and_one_warning(tmp_path, monkeypatch):
    """A real failure: online mode, no key, and a W&B server address where nothing listens."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    result = run_cli(
        "bloodseg.train",
        *SMOKE,
        "logger.wandb.mode=online",
        "logger.wandb.init_timeout=5",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "W&B could not start" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert "CSV logger" in warnings[0]
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert any(row.get("train/loss_epoch") for row in rows) and any(row.get("test/mean_iou") for row in rows)
    assert (tmp_path / "metrics.json").is_file()
    assert not list(tmp_path.glob("wandb/*run-*"))
    assert any(line.startswith("W&B") and "not used" in line for line in result.stdout.splitlines())


class _BrokenRun:
    """Stands in for a W&B run whose every call fails (as a full disk or a dead service would make it)."""

    id = "broken"

    def log(self, *args, **kwargs):
        raise OSError("No space left on device")

    def __getattr__(self, name):
        raise OSError("No space left on device")


def test_a_wandb_error_while_logging_warns_once_and_training_calls_go_on(tmp_path, caplog):
    logger = tracking.SafeWandbLogger(save_dir=str(tmp_path), project="p", mode="offline")
    logger._experiment = _BrokenRun()
    with caplog.at_level(logging.WARNING, logger="bloodseg.tracking"):
        for step in range(3):
            logger.log_metrics({"train/loss": 1.0}, step=step)  # must not raise
        logger.log_hyperparams({"a": 1})
        logger.log_now({"x": 1}, 3)
        assert tracking.finish([logger], tmp_path) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left on device" in warnings[0].getMessage()
    assert logger.failed and not logger.active


# ---- mode, names, ids (no W&B run) ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "netrc_text", "requested", "expected"),
    [
        ({}, None, "auto", "offline"),
        ({"WANDB_API_KEY": "k" * 40}, None, "auto", "online"),
        ({}, "machine api.wandb.ai\n  login user\n  password " + "p" * 40 + "\n", "auto", "online"),
        ({"WANDB_API_KEY": "k" * 40, "WANDB_MODE": "offline"}, None, "auto", "offline"),
        ({"WANDB_MODE": "disabled"}, None, "auto", "disabled"),
        ({}, None, "online", "online"),
        ({"WANDB_API_KEY": "k" * 40}, None, "offline", "offline"),
    ],
)
def test_mode_is_offline_unless_wandb_is_configured(
    monkeypatch, tmp_path, env, netrc_text, requested, expected
):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    netrc_file = tmp_path / "netrc"
    if netrc_text:
        netrc_file.write_text(netrc_text)
        netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert tracking.resolve_mode(requested) == expected


def test_unknown_mode_is_a_config_error():
    from bloodseg.errors import BloodsegError

    with pytest.raises(BloodsegError, match="logger.wandb.mode"):
        tracking.resolve_mode("sometimes")


def test_names_groups_and_tags_come_from_the_hydra_config():
    cfg = compose_train(["experiment=segnet_vgg16", "loss.class_weighting=none", "optimizer.lr=0.01"])
    context = naming.HydraContext(
        multirun=True,
        sweep_dir="/x/multirun/segnet_vgg16/2026-01-01_10-00-00",
        job_num=3,
        overrides=(
            "experiment=segnet_vgg16",
            "optimizer.lr=0.01",
            "loss.class_weighting=none",
            "logger=wandb",
        ),
        choices={"debug": None},
    )
    assert naming.run_name(cfg, context) == "segnet_vgg16 loss.class_weighting=none optimizer.lr=0.01"
    assert naming.run_group(cfg, context) == "segnet_vgg16-2026-01-01_10-00-00"
    assert naming.run_tags(cfg, context) == ["segnet_vgg16", "weighting:none", "multirun"]
    single = naming.HydraContext()
    assert naming.run_group(cfg, single) == "segnet_vgg16" and naming.run_name(cfg, single) == "segnet_vgg16"
    named = compose_train(["experiment=segnet_vgg16", "logger.wandb.name=mine", "logger.wandb.group=g"])
    assert naming.run_name(named, context) == "mine" and naming.run_group(named, context) == "g"


def test_resume_id_comes_from_the_checkpoints_run_dir(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "checkpoints").mkdir(parents=True)
    new.mkdir()
    (old / tracking.RUN_ID_FILE).write_text("abc123\n")
    cfg = compose_train(["experiment=segnet_vgg16", f"ckpt_path={old / 'checkpoints' / 'last.ckpt'}"])
    assert tracking.previous_run_id(cfg, new) == "abc123"
    assert tracking.previous_run_id(compose_train(["experiment=segnet_vgg16"]), new) is None
    (new / tracking.RUN_ID_FILE).write_text("own456\n")  # a resubmitted job's own run dir
    assert tracking.previous_run_id(compose_train(["experiment=segnet_vgg16"]), new) == "own456"


def test_wandb_is_on_by_default_and_smoke_turns_artifacts_off():
    cfg = compose_train([])
    assert cfg.logger.wandb is not None and cfg.logger.csv is not None
    assert cfg.logger.wandb.log_artifacts and cfg.logger.wandb.mode == "auto"
    smoke = compose_train(SMOKE)
    assert not smoke.logger.wandb.log_artifacts and smoke.logger.wandb.log_images_every_n_epochs == 1
    assert compose_train([*SMOKE, "logger=csv"]).logger.wandb is None


def test_best_epoch_comes_from_the_csv_history(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,step,val/mean_iou,train/loss_epoch\n0,2,0.40,\n0,2,,3.0\n1,5,0.62,\n2,8,0.55,\n"
    )
    assert tracking.best_epoch_summary(tmp_path) == {"best/val_mean_iou": 0.62, "best/epoch": 1}
    assert tracking.best_epoch_summary(tmp_path / "elsewhere") == {}  # no history, no summary


def test_the_wandb_config_is_flat():
    from bloodseg.tracking.wandb_naming import flat_config

    nested = {"optimizer": {"lr": 0.01, "betas": [0.9, 0.99]}, "loss": {"class_weighting": "none"}, "seed": 1}
    assert flat_config(nested) == {
        "optimizer.lr": 0.01,
        "optimizer.betas": [0.9, 0.99],
        "loss.class_weighting": "none",
        "seed": 1,
    }
