"""Confusion-matrix metrics: global / per-class / mean accuracy, per-class / mean / weighted IoU, Dice."""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from bloodseg.config import IGNORE_INDEX


def confusion_summary(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Metrics of a KxK confusion matrix (rows = true class, columns = prediction).

    global_accuracy = trace / sum; class_accuracy[c] = C[c,c] / row_c (NaN for a class absent from
    the ground truth); class_iou[c] = C[c,c] / (row_c + col_c - C[c,c]) (NaN when the class is in
    neither); the means skip NaN; weighted_iou weights each class IoU by its share of true pixels.
    class_dice[c] = 2 C[c,c] / (row_c + col_c) (Dice, F1; NaN when the class is in neither) and
    mean_dice its NaN-skipping mean: not MATLAB's, reported beside it for the literature.
    """
    counts = counts.double()
    total = counts.sum()
    diag = counts.diagonal()
    rows, cols = counts.sum(1), counts.sum(0)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=counts.device)
    class_accuracy = torch.where(rows > 0, diag / rows.clamp_min(1), nan)
    union = rows + cols - diag
    class_iou = torch.where(union > 0, diag / union.clamp_min(1), nan)
    class_dice = torch.where(union > 0, 2 * diag / (rows + cols).clamp_min(1), nan)
    weighted_iou = (rows / total.clamp_min(1) * class_iou.nan_to_num(0.0)).sum() if total > 0 else nan
    return {
        "global_accuracy": diag.sum() / total if total > 0 else nan,
        "mean_accuracy": class_accuracy.nanmean(),
        "mean_iou": class_iou.nanmean(),
        "weighted_iou": weighted_iou,
        "mean_dice": class_dice.nanmean(),
        "class_accuracy": class_accuracy,
        "class_iou": class_iou,
        "class_dice": class_dice,
    }


class SegmentationConfusion(MulticlassConfusionMatrix):
    """torchmetrics' confusion matrix over all labelled pixels (255 ignored; sum-reduced across devices).

    ``compute()`` returns the :func:`confusion_summary` of the accumulated counts plus the counts.
    ``update`` never waits for the device (no boolean indexing, no bincount sizing), so it can run
    inside every training step.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        super().__init__(
            num_classes=num_classes, ignore_index=ignore_index, normalize=None, validate_args=False
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add class-id maps of any shape; target values outside 0..K-1 (255) are not counted."""
        preds, target = preds.reshape(-1).long(), target.reshape(-1).long()
        k = self.num_classes
        valid = (target >= 0) & (target < k) & (preds >= 0) & (preds < k)
        cell = torch.where(valid, target * k + preds, 0)
        self.confmat.view(-1).index_add_(0, cell, valid.to(self.confmat.dtype))

    def compute(self) -> dict[str, torch.Tensor]:
        """The confusion_summary of the accumulated counts, plus the counts."""
        counts = super().compute()
        return {**confusion_summary(counts), "counts": counts}
