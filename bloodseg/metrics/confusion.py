"""Confusion counts of class-id maps: per image in one counting pass per batch, and a running total for training curves."""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from bloodseg.constants import IGNORE_INDEX
from bloodseg.metrics.semantics import MATLAB_CURRENT, confusion_metrics


def per_image_counts(values: torch.Tensor, bins: int, by_comparison: bool | None = None) -> torch.Tensor:
    """How often each of 0..bins-1 occurs in each image (N, bins), int64; values (N, ...) outside
    0..bins-1 are not counted.

    One ``torch.bincount`` over the batch, except where it is not deterministic (CUDA with
    ``torch.use_deterministic_algorithms``): there one comparison per bin (``by_comparison=None``
    decides by that; True / False force either way).
    """
    flat = values.reshape(len(values), -1)
    if by_comparison is None:
        by_comparison = flat.is_cuda and torch.are_deterministic_algorithms_enabled()
    if by_comparison:
        return torch.stack([(flat == b).sum(1) for b in range(bins)], 1) if bins else flat[:, :0].long()
    valid = (flat >= 0) & (flat < bins)
    offsets = torch.arange(len(flat), device=flat.device).view(-1, 1) * bins
    counted = torch.bincount((flat + offsets)[valid], minlength=len(flat) * bins)
    return counted.view(len(flat), bins)


def confusion_cells(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's confusion-matrix cell ``true class * K + predicted class`` and whether it counts:
    only pixels whose truth and prediction are both class ids 0..K-1 (not 255 = unlabelled, not
    -1 = blanked) do; the cell of the others is 0."""
    k = num_classes
    valid = (target >= 0) & (target < k) & (preds >= 0) & (preds < k)
    return torch.where(valid, target * k + preds, 0), valid


def confusion_matrices(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One KxK confusion matrix per image (N, K, K), int64: ``[n, i, j]`` = pixels of image n whose
    true class is i and predicted class is j; pixels that do not count (see confusion_cells) are left out."""
    cells, valid = confusion_cells(preds, target, num_classes)
    cells = torch.where(valid, cells, -1)
    return per_image_counts(cells, num_classes * num_classes).view(len(preds), num_classes, num_classes)


def class_counts(preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels of each class per image (N, K), int64, over every pixel (values outside 0..K-1 skipped)."""
    return per_image_counts(preds, num_classes)


class SegmentationConfusion(MulticlassConfusionMatrix):
    """torchmetrics' confusion matrix over all labelled pixels (255 ignored; sum-reduced across devices).

    ``compute()`` returns accuracy, IoU and Dice of the accumulated counts (per class and means,
    by the current MATLAB rules on labelled pixels: a class in neither truth nor prediction makes
    the means NaN) plus the counts. ``update`` never waits for the device (no boolean indexing, no
    bincount sizing), so it can run inside every training step.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        super().__init__(
            num_classes=num_classes, ignore_index=ignore_index, normalize=None, validate_args=False
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add class-id maps of any shape; target values outside 0..K-1 (255) are not counted."""
        cells, valid = confusion_cells(preds.reshape(-1).long(), target.reshape(-1).long(), self.num_classes)
        self.confmat.view(-1).index_add_(0, cells, valid.to(self.confmat.dtype))

    def compute(self) -> dict[str, torch.Tensor]:
        """Accuracy, IoU and Dice (per class and means) of the accumulated counts, plus the counts."""
        counts = super().compute()
        return {**confusion_metrics(counts, counts.sum(0), MATLAB_CURRENT), "counts": counts}
