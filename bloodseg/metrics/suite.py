"""All evaluation metrics of a split behind one update/compute: dataset, per-image and BF."""

from __future__ import annotations

import torch
from torch import nn

from bloodseg.metrics.boundary import BoundaryF1Score
from bloodseg.metrics.confusion import SegmentationConfusion
from bloodseg.metrics.per_image import PerImageConfusion


class SegmentationMetrics(nn.Module):
    """Dataset confusion metrics, per-image confusion metrics and BF scores, updated together.

    ``compute()`` gives one flat dict: the dataset keys of metrics.json (``global_accuracy``,
    ``mean_accuracy``, ``mean_iou``, ``weighted_iou``, ``mean_bf_score``, ``mean_dice``), per-class
    tensors (``class_accuracy``, ``class_iou``, ``class_bf_score``, ``class_dice``), the ``counts``
    matrix, and per-image tensors under ``image_*`` (sorted by dataset index).
    """

    def __init__(self, num_classes: int, bf_tolerance: float = 0.0075, with_per_image: bool = True):
        super().__init__()
        self.dataset = SegmentationConfusion(num_classes)
        self.boundary = BoundaryF1Score(num_classes, bf_tolerance)
        self.per_image = PerImageConfusion(num_classes) if with_per_image else None

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Add a batch of predicted and true class-id maps (N, H, W); target 255 = ignore."""
        self.dataset.update(preds, target)
        self.boundary.update(preds, target, index)
        if self.per_image is not None:
            self.per_image.update(preds, target, index)

    def compute(self) -> dict[str, torch.Tensor]:
        """Every metric of the data seen since the last reset, as one flat dict (see the class doc)."""
        results = dict(self.dataset.compute())
        boundary = self.boundary.compute()
        results.update(
            mean_bf_score=boundary["mean_bf_score"],
            class_bf_score=boundary["class_bf_score"],
            image_index=boundary["image_index"],
            image_bf_score=boundary["image_bf_score"],
            image_class_bf_score=boundary["per_image"],
            num_images=torch.tensor(len(boundary["image_index"])),
        )
        if self.per_image is not None:
            per_image = self.per_image.compute()
            results.update(
                image_global_accuracy=per_image["global_accuracy"],
                image_mean_iou=per_image["mean_iou"],
                image_class_iou=per_image["class_iou"],
                image_mean_dice=per_image["mean_dice"],
                image_class_dice=per_image["class_dice"],
            )
        return results

    def reset(self) -> None:
        """Forget everything seen (call after compute at each epoch end)."""
        for metric in (self.dataset, self.boundary, self.per_image):
            if metric is not None:
                metric.reset()
