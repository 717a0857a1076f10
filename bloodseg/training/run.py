"""A training run: train on the configured data, evaluate the test split, write the run directory.

The run directory (Hydra's output dir) receives .hydra/config.yaml, split.json, data_report.json,
checkpoints/last.ckpt, csv/metrics.csv, metrics.json, metrics.md, confusion_matrix.csv/.png,
per_image_metrics.csv and the best/worst overlays. A run whose directory already holds
checkpoints/last.ckpt continues from it (``auto_resume``): that is how a preempted or timed-out
cluster job, resubmitted with the same config, picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from bloodseg.cli import check_command_line, check_output_dir
from bloodseg.config import CONF_DIR, check_config
from bloodseg.data.datamodule import BloodSmearDataModule
from bloodseg.errors import BloodsegError
from bloodseg.extras import check_hydra_plugins
from bloodseg.metrics.tables import DATASET_KEYS
from bloodseg.sweeps.end import running_sweep, summarise_stopped_sweep
from bloodseg.sweeps.gpus import assign_job_gpu
from bloodseg.termination import exit_status_of, stopped_by, termination_raises
from bloodseg.tracking.summary import run_summary
from bloodseg.tracking.wandb_run import finish as finish_tracking
from bloodseg.training.callbacks import EvaluationArtifacts, InterruptNotice, record_interruption
from bloodseg.training.checkpoints import (
    check_checkpoint_classes,
    check_checkpoint_model,
    read_resume_checkpoint,
    resume_checkpoint,
)
from bloodseg.training.factory import build_callbacks, build_loggers, build_module, build_trainer
from bloodseg.training.job_status import mark_unfinished_jobs, write_job_status
from bloodseg.training.losses import class_weights
from bloodseg.training.module import CHECKPOINT_KEY
from bloodseg.training.run_lock import RunDirectoryInUse, run_lock
from bloodseg.viz.paper import write_training_figures

log = logging.getLogger("bloodseg.train")


def check_validation_monitors(cfg: DictConfig, has_val_split: bool) -> None:
    """Fail clearly when checkpointing, early stopping or the objective watch val/* without a val split."""
    if has_val_split:
        return
    watched = {
        "callbacks.checkpoint.monitor": cfg.callbacks.checkpoint.monitor
        if cfg.callbacks.checkpoint.save_top_k
        else None,
        "callbacks.early_stopping.monitor": cfg.callbacks.early_stopping.monitor,
    }
    for key, value in watched.items():
        if value and str(value).startswith("val/"):
            raise BloodsegError(
                f"{key}={value} needs a validation split, but data.val_fraction={cfg.data.val_fraction} "
                "gives none; fix: add data.val_fraction=0.2 (or monitor a train/* value)"
            )


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train on the configured data and evaluate the test split.

    Returns {"metrics": metrics.json's content (None without a test split), "callback_metrics": the
    last logged values, "has_val_split": whether a validation split was scored every epoch}.
    """
    check_config(cfg)
    run_dir = check_output_dir(run_dir, "hydra.run.dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir, enabled=rank_zero_only.rank == 0):  # DDP/SLURM ranks > 0 share rank 0's run
        try:
            return _train(cfg, run_dir)
        except BaseException as error:  # Ctrl-C or SIGTERM before or after Lightning's loops
            stop = stopped_by(error)
            if stop is not None and rank_zero_only.rank == 0:
                record_interruption(run_dir, stop, "outside the training epochs", error)
            raise


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = BloodSmearDataModule(cfg.data, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup()
    log.info("classes (labelled pixels per split):\n%s", datamodule.class_table())
    datamodule.check_training_classes(cfg.data.allow_empty_classes)
    has_val = bool(datamodule.split["val"])
    check_validation_monitors(cfg, has_val)
    ckpt_path = resume_checkpoint(cfg, run_dir)
    resumed = read_resume_checkpoint(ckpt_path, own=not cfg.ckpt_path) if ckpt_path else None
    if resumed:
        check_checkpoint_classes(resumed[CHECKPOINT_KEY], list(datamodule.table.names), ckpt_path)
    if rank_zero_only.rank == 0:  # under SLURM every task runs this function: one writer
        datamodule.write_split(run_dir / "split.json")
        datamodule.write_label_report(run_dir / "data_report.json")

    pixel_count, image_pixel_count = datamodule.class_pixel_counts()
    weights = class_weights(cfg.loss.class_weighting, pixel_count, image_pixel_count)
    log.info(
        "class weights (%s): %s",
        cfg.loss.class_weighting.value,
        ", ".join(f"{n}={w:.4f}" for n, w in zip(datamodule.table.names, weights.tolist(), strict=True)),
    )
    if rank_zero_only.rank == 0:  # the paper's Figures 4 (ground truth) and 5 (class pixels, weights)
        write_training_figures(run_dir, datamodule, weights.tolist(), cfg.loss.class_weighting.value)
    module = build_module(cfg, datamodule, weights)
    resume_step = None
    if resumed:
        check_checkpoint_model(resumed, module, cfg.model.name, ckpt_path)
        resume_step = int(resumed["global_step"])
        del resumed  # Lightning reads the file again to restore the trainer state
    log.info("model %s, initialisation: %s", cfg.model.name, module.meta["init_source"])

    loggers = build_loggers(cfg, run_dir, resume_step)
    succeeded = False
    try:  # (tracking) every job ends its own W&B run, even when it fails: multirun jobs never merge
        artifacts = EvaluationArtifacts(
            run_dir,
            "test split",
            cfg.evaluation.num_overlays,
            checkpoint=str(run_dir / "checkpoints" / "last.ckpt"),
            test_time_augmentation=str(cfg.evaluation.tta),
        )
        callbacks = [
            *build_callbacks(cfg, run_dir, with_loggers=bool(loggers)),
            artifacts,
            InterruptNotice(run_dir),
        ]
        trainer = build_trainer(
            cfg,
            run_dir,
            loggers=loggers,
            callbacks=callbacks,
            limit_val_batches=None if has_val else 0,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        last_ckpt = run_dir / "checkpoints" / "last.ckpt"
        artifacts.extra["checkpoint"] = (
            str(last_ckpt) if last_ckpt.is_file() else None
        )  # never a missing file
        if trainer.global_step == 0:
            log.warning(
                "no training step ran (trainer.max_epochs=%s): the test scores are of the untrained model",
                cfg.trainer.max_epochs,
            )
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if has_val:  # the last epoch's validation values go into metrics.json: sweeps rank on them
            last = {k: fit_metrics[f"val/{k}"] for k in DATASET_KEYS if f"val/{k}" in fit_metrics}
            artifacts.extra["validation"] = {k: None if math.isnan(v) else v for k, v in last.items()}
        metrics = None
        if cfg.test_after_fit and datamodule.split["test"]:
            trainer.test(module, datamodule=datamodule, verbose=False)
            metrics_file = run_dir / "metrics.json"
            metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
        succeeded = True
    finally:
        wandb_run = finish_tracking(loggers, run_dir, succeeded)
    if rank_zero_only.rank == 0:  # (tracking) the one-screen end-of-run summary, on stdout
        print(run_summary(metrics, run_dir, wandb_run), flush=True)
    return {"metrics": metrics, "callback_metrics": fit_metrics, "has_val_split": has_val}


def objective(cfg: DictConfig, result: dict[str, Any]) -> float | None:
    """The value sweepers maximise (``optimized_metric``): a logged val/... value (last epoch) or test/<metric>.

    Returns None when nothing is to be returned: ``optimized_metric=null``, a val/* key in a run
    without a validation split, or a test/* key in a run without test evaluation. A test/* key is
    allowed but warned about: choosing hyperparameters on the test split leaks it into the score.
    """
    key = cfg.optimized_metric
    if key is None:
        return None
    stage, _, name = key.partition("/")
    if stage == "test":
        log.warning(
            "optimized_metric=%s selects on the test split: the chosen configuration's test score is then "
            "optimistic (test data leaked into the choice); fix: data.val_fraction=0.2 optimized_metric=val/mean_iou",
            key,
        )
        if result["metrics"] is None:
            log.info("optimized_metric=%s: no test evaluation in this run (test_after_fit=false)", key)
            return None
        if name not in result["metrics"]["dataset"]:
            raise BloodsegError(
                f"optimized_metric={key}: no such test metric; use one of "
                f"{', '.join('test/' + k for k in result['metrics']['dataset'])}"
            )
        return result["metrics"]["dataset"][name]
    if stage == "val" and not result.get("has_val_split", True):
        log.info("optimized_metric=%s: this run has no validation split (data.val_fraction=0)", key)
        return None
    if key not in result["callback_metrics"]:
        raise BloodsegError(
            f"optimized_metric={key} was not logged; known: {sorted(result['callback_metrics'])}"
        )
    return result["callback_metrics"][key]


def sweeper_needs_value() -> bool:
    """Whether this multirun's sweeper (e.g. Optuna) uses each job's return value (Hydra's basic one does not)."""
    target = str(HydraConfig.get().sweeper.get("_target_", ""))
    return not target.endswith("BasicSweeper")


def run_job(cfg: DictConfig) -> float | None:
    """One ``python -m bloodseg.train`` job (see :func:`train_job`), SIGTERM raising inside it: joblib runs
    jobs in fresh worker processes, where the train command's own handler is not installed."""
    with termination_raises():
        return train_job(cfg)


def train_job(cfg: DictConfig) -> float | None:
    """One ``python -m bloodseg.train`` job in Hydra's run dir: train, evaluate, return ``optimized_metric``.

    A BloodsegError is logged as one line; a single run records it in job_status.json and exits with
    status 2 (no traceback), a multirun job re-raises it so that Hydra records the failure and runs
    the other jobs.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if cfg.launcher_gpus and multirun:
            gpu = assign_job_gpu(
                list(cfg.launcher_gpus), Path(hydra_cfg.sweep.dir) / ".gpu_locks", hydra_cfg.job.num
            )
            log.info("sweep job %d runs on GPU %s", hydra_cfg.job.num, gpu)
        result = train(cfg, run_dir)
        value = objective(cfg, result)
        if value is None and multirun and cfg.optimized_metric and sweeper_needs_value():
            raise BloodsegError(
                f"optimized_metric={cfg.optimized_metric} has no value in this run, but the sweeper needs one; "
                "fix: add data.val_fraction=0.2 (val/* metrics need a validation split)"
            )
    except BloodsegError as error:
        log.error("%s", error)
        if multirun:  # let Hydra record the failure and run the other jobs
            raise
        if not isinstance(error, RunDirectoryInUse):  # the live holder's status is not ours to replace
            write_job_status(run_dir, "failed", error)
        raise SystemExit(getattr(error, "exit_code", 2)) from None
    except BaseException as error:
        status = exit_status_of(error)
        if status is None:
            raise
        raise SystemExit(status) from None  # a multirun stops too: the signal was meant for all of it
    log.info("run directory: %s", run_dir)
    return value


def run_command(hydra_main: Callable[[], Any], argv: list[str]) -> None:
    """Run the train command's Hydra app after checking that the Hydra plugins ``argv`` selects
    (launchers, sweepers: optional extras) are installed; a multirun stopped on a failed job still
    shows the table of what ran."""
    check_command_line(argv, "train")
    try:
        check_hydra_plugins(argv, CONF_DIR)
    except BloodsegError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        with termination_raises():
            hydra_main()
    except SystemExit as exit_:
        if exit_.code not in (0, None):  # 128 + n: a job stopped by signal n (Ctrl-C, SIGTERM)
            interrupted = isinstance(exit_.code, int) and exit_.code > 128
            summarise_stopped_sweep("interrupted" if interrupted else "a job failed")
        raise
    except BaseException as error:  # Ctrl-C or SIGTERM outside a job (Hydra, the launcher)
        status = exit_status_of(error)
        if status is None:
            raise
        stop = stopped_by(error)
        sweep = running_sweep()
        if sweep is not None:  # the jobs the launcher's workers ran when they were killed
            marked = mark_unfinished_jobs(sweep, stop)
            log.warning(
                "sweep interrupted (%s): %d running job(s) marked interrupted; each continues from its "
                "checkpoints/last.ckpt when the same command is run again with hydra.sweep.dir=%s",
                stop,
                len(marked),
                sweep,
            )
        summarise_stopped_sweep(f"interrupted by {stop}")
        raise SystemExit(status) from None
