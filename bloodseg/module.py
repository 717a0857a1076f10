"""The LightningModule: normalisation, weighted loss, optimisation and segmentation metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

from bloodseg.data.transforms import flip_shift_batch
from bloodseg.losses import WeightedCrossEntropy
from bloodseg.metrics.suite import SegmentationMetrics

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
        bf_tolerance: float = 0.0075,
        metric_semantics: str = "matlab_current",
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
        self.val_metrics = SegmentationMetrics(num_classes, bf_tolerance, metric_semantics)
        self.test_metrics = SegmentationMetrics(num_classes, bf_tolerance, metric_semantics)
        self.test_results: dict[str, Any] | None = None
        self._compiled: Callable | None = None  # torch.compile(net), kept out of the state dict
        self._train_store: tuple[torch.Tensor, torch.Tensor] | None = None  # device copy of the training set
        self.network_size: list[int] | None = None  # evaluation: run the network at this size (see forward)

    # ---- model -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Give this process its own copy of weights and metric states.

        ddp_spawn pickles the module into its workers; on the CPU, torch.multiprocessing hands them
        the *same* shared-memory tensors, so every rank's optimizer step and metric update would
        land in one storage (weights updated world_size times per step, confusion counts summed twice).
        """
        for tensor in [*self.parameters(), *self.buffers()]:
            if tensor.is_shared():
                tensor.data = tensor.data.clone()
        self.val_metrics.reset()
        self.test_metrics.reset()

    def on_fit_start(self) -> None:
        """With data.augment_on_device, copy the training images to this device once."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and datamodule.augments_on_device():
            train = datamodule.splits["train"]
            self._train_store = (train.images.to(self.device), train.masks.to(self.device))

    def on_after_batch_transfer(
        self, batch: dict[str, torch.Tensor], dataloader_idx: int
    ) -> dict[str, torch.Tensor]:
        """Gather and augment device-resident training images for index-only batches (one gather per batch)."""
        if "image" in batch:
            return batch
        images, masks = self._train_store
        index = batch["index"]
        image, mask = flip_shift_batch(
            images[index], masks[index], batch["hflip"], batch["vflip"], batch["dx"], batch["dy"]
        )
        return {"image": image, "mask": mask, "index": index}

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
        """Class scores (N,K,H,W) for uint8 images (N,3,H,W).

        With ``network_size`` set (evaluation), the images are resized to it for the network and the
        scores resized back (bilinear): the paper's resize-predict-resize at any scoring resolution.
        """
        net = self._compiled if self._compiled is not None else self.net
        size = tuple(images.shape[-2:])
        if self.network_size is None or tuple(self.network_size) == size:
            return net(self.normalize(images))
        small = F.resize(images, list(self.network_size), antialias=True)
        logits = net(self.normalize(small))
        return torch.nn.functional.interpolate(
            logits.float(), size=size, mode="bilinear", align_corners=False
        )

    # ---- steps -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.criterion(logits, batch["mask"].long())
        # not on the progress bar: showing it every step would cost a host sync per step
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(logits))
        return loss

    def _eval_step(
        self, batch: dict[str, torch.Tensor], stage: str, metrics: SegmentationMetrics
    ) -> torch.Tensor:
        logits = self(batch["image"])
        masks = batch["mask"].long()
        loss = self.criterion(logits, masks)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=len(logits), sync_dist=True)
        metrics.update(logits.argmax(1), masks, batch["index"])
        return logits

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    def _summarize(self, stage: str, metrics: SegmentationMetrics) -> dict[str, torch.Tensor]:
        """Compute, reset and log a split's metrics: dataset values and per-class accuracy / IoU / BF."""
        results = metrics.compute()
        metrics.reset()
        scalars = {
            f"{stage}/{k}": results[k]
            for k in ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score")
        }
        for i, name in enumerate(self.class_names):
            scalars[f"{stage}/accuracy/{name}"] = results["class_accuracy"][i]
            scalars[f"{stage}/iou/{name}"] = results["class_iou"][i]
            scalars[f"{stage}/bf_score/{name}"] = results["class_bf_score"][i]
        self.log_dict(
            {k: v.float() for k, v in scalars.items()}, prog_bar=False, sync_dist=True
        )  # equal on all ranks
        return results

    def on_validation_epoch_end(self) -> None:
        results = self._summarize("val", self.val_metrics)
        self.log("val/mean_iou", results["mean_iou"].float(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        results = self._summarize("test", self.test_metrics)
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
