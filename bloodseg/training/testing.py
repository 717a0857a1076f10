"""Scoring a checkpoint on its run's split through Lightning's test loop, and the evaluate command's dispatch.

By default a checkpoint's evaluation goes to a new folder <run dir>/eval/<split>-<H>x<W>-<time>/, so
the training run's own results are never replaced; a folder already holding metrics.json is refused
unless overwrite=true. Folders of predicted index PNGs are scored by bloodseg.evaluation.folders.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bloodseg.cli import check_output_dir, exit_2_on_user_error, refuse_overwrite
from bloodseg.config import check_config
from bloodseg.data.datamodule import BloodSmearDataModule
from bloodseg.errors import BloodsegError
from bloodseg.evaluation.folders import evaluate_folders
from bloodseg.metrics.instances import settings_from_config
from bloodseg.metrics.suite import SegmentationMetrics
from bloodseg.metrics.tables import paper_tables
from bloodseg.training.callbacks import EvaluationArtifacts
from bloodseg.training.checkpoints import check_checkpoint_classes, load_module
from bloodseg.training.factory import build_trainer, progress_bar_on_stderr

log = logging.getLogger("bloodseg.evaluate")


FOLDER_MODE_OUTPUT = (
    "outputs/evaluate/%Y-%m-%d_%H-%M-%S"  # pred_dir mode without output_dir (created on success)
)


def default_output_dir(ckpt_path: Path, split: str, image_size) -> Path:
    """A new folder per evaluation, <run dir>/eval/<split>-<H>x<W>-<YYYYmmdd-HHMMSS>, beside the run's own
    results (never over them); the run dir of …/checkpoints/x.ckpt is …, of any other file its folder."""
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    height, width = image_size
    return run_dir / "eval" / f"{split}-{height}x{width}-{datetime.now():%Y%m%d-%H%M%S}"


def evaluate_checkpoint(cfg: DictConfig, output_dir: Path | None = None) -> dict:
    """Evaluate cfg.ckpt_path on cfg.split of its run (or of cfg.data) and write the artifacts."""
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    if output_dir or cfg.output_dir:  # checked before any work
        output_dir = check_output_dir(output_dir or cfg.output_dir)
        if not cfg.overwrite:
            refuse_overwrite(output_dir / "metrics.json")
    module = load_module(ckpt_path, cfg.evaluation.bf_tolerance, cfg.evaluation.semantics)
    meta = module.meta
    # cells are split as the run scored them unless evaluation.instances.* says otherwise
    trained_with = (meta["config"].get("evaluation") or {}).get("instances")
    module.test_metrics = SegmentationMetrics(
        len(meta["class_names"]),
        cfg.evaluation.bf_tolerance,
        cfg.evaluation.semantics,
        settings_from_config(cfg.evaluation, trained_with),
    )
    module.network_size = list(cfg.network_size or meta["image_size"])
    module.tta = str(cfg.evaluation.tta)
    data_cfg = cfg.data if cfg.data is not None else OmegaConf.create(meta["config"]["data"])
    data_cfg = OmegaConf.merge(
        data_cfg,
        {
            "eval_batch_size": cfg.batch_size,
            "image_size": list(cfg.data.image_size) if cfg.data else meta["image_size"],
        },
    )
    datamodule = BloodSmearDataModule(
        data_cfg, seed=meta["config"]["seed"], split=meta["split"], eval_split=cfg.split
    )
    check_checkpoint_classes(meta, list(datamodule.table.names), ckpt_path)
    out_dir = output_dir or check_output_dir(default_output_dir(ckpt_path, cfg.split, data_cfg.image_size))
    if not cfg.overwrite:  # two evaluations within the same second
        refuse_overwrite(out_dir / "metrics.json")
    artifacts = EvaluationArtifacts(
        out_dir,
        f"{cfg.split} split",
        cfg.evaluation.num_overlays,
        checkpoint=str(ckpt_path),
        test_time_augmentation=str(cfg.evaluation.tta),
    )
    run_cfg = OmegaConf.create(
        {"trainer": OmegaConf.to_container(cfg.trainer), "callbacks": {"progress_bar": "rich"}}
    )
    trainer = build_trainer(
        run_cfg, out_dir, loggers=[], callbacks=[artifacts, progress_bar_on_stderr()], logger=False
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    log.info("evaluation of %s written to %s", ckpt_path, out_dir)
    return artifacts.metrics


def evaluate(cfg: DictConfig, hydra_dir: Path) -> dict:
    """Dispatch on the mode: a checkpoint, or folders of predictions."""
    check_config(cfg)
    if cfg.ckpt_path and cfg.pred_dir:
        raise BloodsegError("give either ckpt_path=... or pred_dir=... gt_dir=..., not both")
    if cfg.ckpt_path:
        return evaluate_checkpoint(cfg)
    if cfg.pred_dir:
        output_dir = check_output_dir(cfg.output_dir or hydra_dir)
        if not cfg.overwrite:
            refuse_overwrite(output_dir / "metrics.json")
        return evaluate_folders(cfg, output_dir)
    raise BloodsegError("nothing to evaluate: give ckpt_path=CKPT, or pred_dir=P gt_dir=G data=NAME")


def data_override_without_data(argv: list[str]) -> str | None:
    """The first ``data.KEY=...`` argument when no ``data=NAME`` is given, else None.

    Without data=NAME evaluate reads the checkpoint's own data config, which does not exist yet
    when Hydra applies overrides, so Hydra would fail on such a key with an assertion traceback.
    """
    pairs = [(arg, arg.split("=", 1)[0].lstrip("+~")) for arg in argv if "=" in arg]
    if any(key == "data" for _, key in pairs):
        return None
    return next((arg for arg, key in pairs if key.startswith("data.")), None)


def check_evaluate_arguments(argv: list[str]) -> None:
    """Exit with status 2 and one line when argv has a ``data.KEY=...`` override without ``data=NAME``."""
    stray = data_override_without_data(argv)
    if stray:
        print(
            f"bloodseg.evaluate: error: {stray} needs data=NAME too (without it the checkpoint's own data "
            "config is used, unchanged); fix: add the data config the checkpoint was trained with, "
            "e.g. data=synthetic or data=cellavision",
            file=sys.stderr,
        )
        raise SystemExit(2)


def run_evaluation(cfg: DictConfig) -> float | None:
    """One ``python -m bloodseg.evaluate`` run: evaluate, print the paper's tables; returns the mean IoU.

    A BloodsegError ends the process with one log line and exit status 2.
    """
    with exit_2_on_user_error(log):
        metrics = evaluate(cfg, Path(time.strftime(FOLDER_MODE_OUTPUT)))
    print(paper_tables(metrics, f"{cfg.split} split" if cfg.ckpt_path else "predictions"), flush=True)
    return metrics["dataset"]["mean_iou"] if metrics else None
