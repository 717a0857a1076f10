"""The W&B media callback: class weights, mask overlays every N epochs, the test confusion matrix and tables."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from bloodseg.constants import IGNORE_INDEX
from bloodseg.tracking.wandb_run import SafeWandbLogger, wandb_logger_of


class WandbMedia(Callback):
    """Class weights at the start; mask overlays of a fixed set of images every ``every_n_epochs`` epochs
    and at the end of training; after testing, the confusion matrix and per-class metric table.

    Rank 0 only, a handful of single-image forward passes every N epochs: W&B stays off the hot path.
    The images are ``num_images`` test images spread evenly over the split (val, then train, when the test
    split is empty), the same ones every time.
    """

    def __init__(self, every_n_epochs: int = 10, num_images: int = 4):
        self.every_n_epochs = int(every_n_epochs)
        self.num_images = int(num_images)

    # which images
    def _fixed_images(self, trainer: L.Trainer) -> tuple[str, Any, list[int]] | None:
        splits = getattr(trainer.datamodule, "splits", None) or {}
        for split in ("test", "val", "train"):
            loaded = splits.get(split)
            if loaded is not None and len(loaded.ids) > 0:
                n = len(loaded.ids)
                count = min(self.num_images, n)
                rows = sorted({int(round(i)) for i in np.linspace(0, n - 1, count)}) if count > 0 else []
                return split, loaded, rows
        return None

    def _class_labels(self, module: L.LightningModule) -> dict[int, str]:
        labels = {i: str(n) for i, n in enumerate(module.class_names)}
        labels[IGNORE_INDEX] = "unlabelled"
        return labels

    def _overlays(self, trainer: L.Trainer, module: L.LightningModule) -> tuple[str, list] | None:
        import wandb

        found = self._fixed_images(trainer)
        if found is None or not found[2]:
            return None
        split, loaded, rows = found
        labels = self._class_labels(module)
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                batch = loaded.images[rows].to(module.device)
                eager = hasattr(module, "net") and hasattr(module, "normalize")  # no torch.compile recompiles
                if eager:
                    logits = module.net(module.normalize(batch))
                else:
                    logits = module(batch)
                preds = logits.argmax(1).to(torch.uint8).cpu().numpy()
        finally:
            module.train(was_training)
        images = []
        for row, pred in zip(rows, preds, strict=True):
            truth = loaded.masks[row].numpy().astype(np.uint8)
            images.append(
                wandb.Image(
                    loaded.images[row].permute(1, 2, 0).numpy(),
                    masks={
                        "predictions": {"mask_data": pred, "class_labels": labels},
                        "ground_truth": {"mask_data": truth, "class_labels": labels},
                    },
                    caption=loaded.ids[row],
                )
            )
        return f"overlays/{split}", images

    def _log_overlays(self, trainer: L.Trainer, module: L.LightningModule, logger: SafeWandbLogger) -> None:
        made = logger.guarded("rendering overlays", self._overlays, trainer, module)
        if made:
            logger.log_now({made[0]: made[1]}, trainer.global_step)

    # hooks
    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logger = wandb_logger_of(trainer)
        meta = getattr(module, "meta", None)
        if logger is None or not meta or "class_weights" not in meta:
            return
        weights = dict(zip(meta["class_names"], meta["class_weights"], strict=True))
        logger.guarded(
            "logging class weights",
            logger.experiment.config.update,
            {"class_weights": weights, "model_init": meta.get("init_source")},
            allow_val_change=True,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logger = wandb_logger_of(trainer)
        if logger is None or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        due = self.every_n_epochs > 0 and epoch % self.every_n_epochs == 0
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        if due or last:
            self._log_overlays(trainer, module, logger)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logger = wandb_logger_of(trainer)
        callback = trainer.checkpoint_callback
        if logger is None or callback is None:
            return
        best = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        logger.best_checkpoint = best or None
        # stopped early or by max_steps: the final state still gets its overlays
        if trainer.max_epochs is None or trainer.current_epoch < trainer.max_epochs:
            self._log_overlays(trainer, module, logger)

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logger = wandb_logger_of(trainer)
        results = getattr(module, "test_results", None)
        if logger is None or results is None:
            return
        logger.guarded("logging test results", self._log_test_results, trainer, module, logger, results)

    def _log_test_results(self, trainer, module, logger: SafeWandbLogger, results: dict[str, Any]) -> None:
        import wandb

        from bloodseg.viz.figures import confusion_matrix_figure

        names = [str(n) for n in module.class_names]
        counts = results["counts"].double().numpy()
        cm_rows = [[a, p, int(counts[i, j])] for i, a in enumerate(names) for j, p in enumerate(names)]
        cm_table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cm_rows)

        def value(key, i):
            x = float(results[key][i]) if key in results else float("nan")
            return None if np.isnan(x) else x

        per_class = wandb.Table(
            columns=["class", "accuracy", "iou", "mean_bf_score", "dice"],
            data=[
                [
                    n,
                    value("class_accuracy", i),
                    value("class_iou", i),
                    value("class_bf_score", i),
                    value("class_dice", i),
                ]
                for i, n in enumerate(names)
            ],
        )
        data = {
            "test/confusion_matrix": wandb.plot_table(
                "wandb/confusion_matrix/v1",
                cm_table,
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": "Confusion matrix (test, pixels)"},
            ),
            "test/per_class_metrics": per_class,
        }
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "confusion_matrix.png"
            confusion_matrix_figure(counts, names, png, "Normalized confusion matrix (%), test split")
            data["test/confusion_matrix_image"] = wandb.Image(str(png))
            logger.log_now(data, trainer.global_step)
