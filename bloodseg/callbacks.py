"""Lightning callbacks of bloodseg: writing the evaluation artifacts of a test run."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from bloodseg.metrics.report import (
    build_metrics,
    paper_tables,
    paper_tables_markdown,
    write_confusion_csv,
    write_metrics_json,
)

log = logging.getLogger(__name__)


class EvaluationArtifacts(Callback):
    """After a test run, write metrics.json, metrics.md and confusion_matrix.csv to out_dir (rank 0 only)
    and print the paper's Tables 1 and 2."""

    def __init__(self, out_dir: Path, title: str = "test split", **extra):
        self.out_dir = Path(out_dir)
        self.title = title
        self.extra = extra
        self.metrics: dict | None = None

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        results = module.test_results
        if results is None or not trainer.is_global_zero:
            return
        num_images = int(results.get("num_images", len(module.meta["split"]["test"])))
        extra = {
            "model_init": module.meta.get("init_source"),
            "class_weighting": module.meta["config"]["loss"]["class_weighting"],
            "class_weights": dict(zip(module.meta["class_names"], module.meta["class_weights"], strict=True)),
            **self.extra,
        }
        self.metrics = build_metrics(results, module.meta["class_names"], num_images, **extra)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_metrics_json(self.out_dir / "metrics.json", self.metrics)
        write_confusion_csv(self.out_dir / "confusion_matrix.csv", self.metrics)
        (self.out_dir / "metrics.md").write_text(paper_tables_markdown(self.metrics, self.title))
        log.info("\n%s", paper_tables(self.metrics, self.title))
