"""Per-image confusion counts of batches of class-id maps, in one bincount per batch."""

from __future__ import annotations

import torch


def confusion_matrices(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One KxK confusion matrix per image (N, K, K), int64: ``[n, i, j]`` = pixels of image n whose
    true class is i and predicted class is j. Pixels whose truth or prediction is not a class id
    0..K-1 (255 = unlabelled, -1 = blanked) are not counted."""
    k = num_classes
    valid = (target >= 0) & (target < k) & (preds >= 0) & (preds < k)
    image = torch.arange(len(preds), device=preds.device).view(-1, 1, 1).expand_as(preds)
    cells = (image * k + target) * k + preds
    counts = torch.bincount(cells[valid], minlength=len(preds) * k * k)
    return counts.view(len(preds), k, k)


def class_counts(preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels of each class per image (N, K), int64, over every pixel (values outside 0..K-1 skipped)."""
    k = num_classes
    valid = (preds >= 0) & (preds < k)
    image = torch.arange(len(preds), device=preds.device).view(-1, 1, 1).expand_as(preds)
    return torch.bincount((image * k + preds)[valid], minlength=len(preds) * k).view(len(preds), k)
