"""Confusion-matrix metrics: global / per-class / mean accuracy, per-class / mean / weighted IoU."""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from bloodseg.config import IGNORE_INDEX


def confusion_summary(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Metrics of a KxK confusion matrix (rows = true class, columns = prediction).

    global_accuracy = trace / sum; class_accuracy[c] = C[c,c] / row_c (NaN for a class absent from
    the ground truth); class_iou[c] = C[c,c] / (row_c + col_c - C[c,c]) (NaN when the class is in
    neither); the means skip NaN; weighted_iou weights each class IoU by its share of true pixels.
    """
    counts = counts.double()
    total = counts.sum()
    diag = counts.diagonal()
    rows, cols = counts.sum(1), counts.sum(0)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=counts.device)
    class_accuracy = torch.where(rows > 0, diag / rows.clamp_min(1), nan)
    union = rows + cols - diag
    class_iou = torch.where(union > 0, diag / union.clamp_min(1), nan)
    weighted_iou = (rows / total.clamp_min(1) * class_iou.nan_to_num(0.0)).sum() if total > 0 else nan
    return {
        "global_accuracy": diag.sum() / total if total > 0 else nan,
        "mean_accuracy": class_accuracy.nanmean(),
        "mean_iou": class_iou.nanmean(),
        "weighted_iou": weighted_iou,
        "class_accuracy": class_accuracy,
        "class_iou": class_iou,
    }


class SegmentationConfusion(MulticlassConfusionMatrix):
    """torchmetrics' confusion matrix over all labelled pixels (255 ignored; sum-reduced across devices).

    ``compute()`` returns the :func:`confusion_summary` of the accumulated counts plus the counts.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        super().__init__(
            num_classes=num_classes, ignore_index=ignore_index, normalize=None, validate_args=False
        )

    def compute(self) -> dict[str, torch.Tensor]:
        counts = super().compute()
        return {**confusion_summary(counts), "counts": counts}
