"""``python -m bloodseg.train experiment=NAME [overrides]``: train a model, then evaluate its test split.

The run directory (Hydra's output dir) receives .hydra/config.yaml, split.json, data_report.json,
checkpoints/last.ckpt, csv/metrics.csv, metrics.json, metrics.md and confusion_matrix.csv.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bloodseg.builders import (
    build_callbacks,
    build_loggers,
    build_module,
    build_trainer,
    check_checkpoint_classes,
    read_checkpoint_meta,
)
from bloodseg.callbacks import EvaluationArtifacts
from bloodseg.config import check_config
from bloodseg.data.datamodule import BloodSmearDataModule
from bloodseg.errors import BloodsegError
from bloodseg.losses import class_weights

log = logging.getLogger("bloodseg.train")


def train(cfg: DictConfig, run_dir: Path) -> dict | None:
    """Train on the configured data, evaluate the test split, and return metrics.json's content."""
    check_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = BloodSmearDataModule(cfg.data, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup()
    if cfg.ckpt_path:
        check_checkpoint_classes(
            read_checkpoint_meta(cfg.ckpt_path), list(datamodule.table.names), cfg.ckpt_path
        )
    datamodule.write_split(run_dir / "split.json")
    datamodule.write_label_report(run_dir / "data_report.json")

    pixel_count, image_pixel_count = datamodule.class_pixel_counts()
    weights = class_weights(cfg.loss.class_weighting, pixel_count, image_pixel_count)
    log.info(
        "class weights (%s): %s",
        cfg.loss.class_weighting.value,
        ", ".join(f"{n}={w:.4f}" for n, w in zip(datamodule.table.names, weights.tolist(), strict=True)),
    )
    module = build_module(cfg, datamodule, weights)
    log.info("model %s, initialisation: %s", cfg.model.name, module.meta["init_source"])

    loggers = build_loggers(cfg, run_dir)
    artifacts = EvaluationArtifacts(
        run_dir, title="test split", checkpoint=str(run_dir / "checkpoints" / "last.ckpt")
    )
    callbacks = [*build_callbacks(cfg, run_dir, with_loggers=bool(loggers)), artifacts]
    trainer = build_trainer(
        cfg,
        run_dir,
        loggers=loggers,
        callbacks=callbacks,
        limit_val_batches=None if datamodule.split["val"] else 0,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if not (cfg.test_after_fit and datamodule.split["test"]):
        return None
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics_file = run_dir / "metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.exists() else None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the test mean IoU (the objective of sweeps)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = train(cfg, run_dir)
    except BloodsegError as error:
        log.error("%s", error)
        raise SystemExit(2) from None
    if metrics is None:
        return None
    log.info("run directory: %s", run_dir)
    return metrics["dataset"]["mean_iou"]


if __name__ == "__main__":
    main()
