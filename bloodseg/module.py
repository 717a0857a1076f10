"""The LightningModule: normalisation, weighted loss, optimisation and segmentation metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from bloodseg.losses import WeightedCrossEntropy
from bloodseg.metrics.confusion import SegmentationConfusion

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "bloodseg"


class SegmentationModule(L.LightningModule):
    """Trains a segmentation network on uint8 batches {"image", "mask", "index"} and scores val/test.

    ``meta`` (class names and colours, image size, normalisation, the resolved run config, ...)
    is stored in every checkpoint under ``"bloodseg"``, so a checkpoint alone can rebuild the model.
    """

    def __init__(
        self,
        net: nn.Module,
        class_weights: torch.Tensor,
        meta: dict[str, Any],
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.net = net
        self.meta = meta
        self.class_names: list[str] = list(meta["class_names"])
        self.criterion = WeightedCrossEntropy(class_weights, label_smoothing)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.channels_last, self.compile_net = channels_last, compile
        self.register_buffer("mean", torch.tensor(meta["mean"]).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(meta["std"]).view(1, 3, 1, 1) * 255.0, persistent=False)
        num_classes = len(self.class_names)
        self.val_confusion = SegmentationConfusion(num_classes)
        self.test_confusion = SegmentationConfusion(num_classes)
        self.test_results: dict[str, Any] | None = None
        self._compiled: Callable | None = None  # torch.compile(net), kept out of the state dict

    # ---- model -----------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Apply channels_last and torch.compile once the module is on its device."""
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net and self._compiled is None:
            object.__setattr__(self, "_compiled", torch.compile(self.net))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N,3,H,W) images to normalised float input."""
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores (N,K,H,W) for uint8 images (N,3,H,W)."""
        net = self._compiled if self._compiled is not None else self.net
        return net(self.normalize(images))

    # ---- steps -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.criterion(logits, batch["mask"].long())
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        return loss

    def _eval_step(
        self, batch: dict[str, torch.Tensor], stage: str, confusion: SegmentationConfusion
    ) -> torch.Tensor:
        logits = self(batch["image"])
        masks = batch["mask"].long()
        loss = self.criterion(logits, masks)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(logits), sync_dist=True)
        confusion.update(logits.argmax(1), masks)
        return logits

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_confusion)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_confusion)

    def _log_summary(self, stage: str, results: dict[str, torch.Tensor]) -> None:
        scalars = {f"{stage}/{k}": v for k, v in results.items() if v.ndim == 0}
        for name, acc, iou in zip(
            self.class_names, results["class_accuracy"], results["class_iou"], strict=True
        ):
            scalars[f"{stage}/accuracy/{name}"] = acc
            scalars[f"{stage}/iou/{name}"] = iou
        self.log_dict({k: v.float() for k, v in scalars.items()}, prog_bar=False)

    def on_validation_epoch_end(self) -> None:
        results = self.val_confusion.compute()
        self.val_confusion.reset()
        self._log_summary("val", results)
        self.log("val/mean_iou", results["mean_iou"].float(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        results = self.test_confusion.compute()
        self.test_confusion.reset()
        self._log_summary("test", results)
        self.test_results = {k: v.detach().cpu() for k, v in results.items()}

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }

    # ---- checkpoints -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.meta
