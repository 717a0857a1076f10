"""The LightningModule: normalisation, weighted loss, optimisation and segmentation metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

from bloodseg.metrics.confusion import SegmentationConfusion
from bloodseg.metrics.instances import InstanceSettings
from bloodseg.metrics.suite import SegmentationMetrics
from bloodseg.training.integrity import add_digest
from bloodseg.training.losses import WeightedCrossEntropy
from bloodseg.training.tta import averaged_scores

log = logging.getLogger(__name__)

# dataset-level values logged per split (mean_bf_score only where BF is computed: val and test)
LOGGED_KEYS = ("global_accuracy", "mean_accuracy", "weighted_iou", "mean_bf_score", "mean_dice")
CHECKPOINT_KEY = "bloodseg"


class SegmentationModule(L.LightningModule):
    """Trains a segmentation network on uint8 batches {"image", "mask", "index"} and scores train/val/test.

    Every epoch logs ``train/*`` confusion metrics (accuracy, IoU, Dice; dataset and per class) of the
    training step's own predictions (augmented images, network in training mode; no extra forward
    pass), ``val/*`` (those plus the BF score) when a validation split exists, and ``test/*`` once
    after training. ``meta`` (class names and colours, image size, normalisation, the resolved run config, ...)
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
        tta: str = "none",
        instances: InstanceSettings | None = None,
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
        self.train_metrics = SegmentationConfusion(num_classes)
        self.val_metrics = SegmentationMetrics(num_classes, bf_tolerance, metric_semantics)
        # cells as objects only at test time: splitting and matching cells costs ~2 s per megapixel on a CPU
        self.test_metrics = SegmentationMetrics(num_classes, bf_tolerance, metric_semantics, instances)
        self.test_results: dict[str, Any] | None = None
        self._compiled: Callable | None = None  # torch.compile(net), kept out of the state dict
        self.network_size: list[int] | None = None  # evaluation: run the network at this size (see forward)
        self.tta = str(tta)  # evaluation: test-time augmentation none | flip | dihedral (see forward)

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
        self.train_metrics.reset()
        self.val_metrics.reset()
        self.test_metrics.reset()

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
        Out of training mode, ``tta`` (``flip`` or ``dihedral``) averages the class probabilities over
        flipped / rotated views of the network's input and returns their log.
        """
        net = self._compiled if self._compiled is not None else self.net

        def score(x: torch.Tensor) -> torch.Tensor:
            return net(self.normalize(x))

        def scores(x: torch.Tensor) -> torch.Tensor:
            return score(x) if self.training else averaged_scores(score, x, self.tta)

        size = tuple(images.shape[-2:])
        if self.network_size is None or tuple(self.network_size) == size:
            return scores(images)
        small = F.resize(images, list(self.network_size), antialias=True)
        logits = scores(small)
        return torch.nn.functional.interpolate(
            logits.float(), size=size, mode="bilinear", align_corners=False
        )

    # ---- steps -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Weighted cross entropy of a batch; its predictions also feed the epoch's train/* metrics."""
        logits = self(batch["image"])
        masks = batch["mask"].long()
        loss = self.criterion(logits, masks)
        # not on the progress bar: showing it every step would cost a host sync per step
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(logits))
        self.train_metrics.update(logits.detach().argmax(1), masks)  # stays on the device: no sync
        return loss

    def on_train_epoch_end(self) -> None:
        """Log the epoch's train/* accuracy, IoU and Dice (dataset and per class) and start afresh."""
        results = self.train_metrics.compute()
        self.train_metrics.reset()
        self._log_split("train", results)

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

    def _log_split(self, stage: str, results: dict[str, torch.Tensor]) -> None:
        """Log a split's dataset metrics and per-class accuracy / IoU / Dice (/ BF when computed).

        The values are already reduced over all devices (torchmetrics syncs in compute), so every rank
        logs the same numbers; ``<stage>/mean_iou`` is shown on the progress bar.
        """
        per_class = {"accuracy": "class_accuracy", "iou": "class_iou", "dice": "class_dice"}
        if "class_bf_score" in results:
            per_class["bf_score"] = "class_bf_score"
        scalars = {f"{stage}/{k}": results[k] for k in LOGGED_KEYS if k in results}
        for i, name in enumerate(self.class_names):
            for label, key in per_class.items():
                scalars[f"{stage}/{label}/{name}"] = results[key][i]
        self.log_dict({k: v.float() for k, v in scalars.items()}, sync_dist=True)
        self.log(f"{stage}/mean_iou", results["mean_iou"].float(), prog_bar=True, sync_dist=True)

    def _summarize(self, stage: str, metrics: SegmentationMetrics) -> dict[str, torch.Tensor]:
        """Compute, reset and log a split's metrics: dataset values and per-class accuracy / IoU / BF / Dice."""
        results = metrics.compute()
        metrics.reset()
        self._log_split(stage, results)
        return results

    def on_validation_epoch_end(self) -> None:
        """Log the validation split's metrics of this epoch (monitorable as val/mean_iou etc.)."""
        self._summarize("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        """Log the test split's metrics and keep them (with per-image values) for the artifacts."""
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
        """Store the run metadata and a hash of the weights (checked whenever the checkpoint is read)."""
        checkpoint[CHECKPOINT_KEY] = self.meta
        add_digest(checkpoint)
