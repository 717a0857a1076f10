"""Per-image confusion matrices, for per-image accuracy, IoU and Dice (per_image_metrics.csv)."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix
from torchmetrics.utilities import dim_zero_cat

from bloodseg.config import IGNORE_INDEX
from bloodseg.metrics.confusion import confusion_summary


class PerImageConfusion(Metric):
    """One KxK confusion matrix per image (torchmetrics' functional confusion matrix, 255 ignored),
    gathered across devices; ``compute()`` returns them in dataset-index order with their summaries."""

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("matrices", default=[], dist_reduce_fx="cat")
        self.add_state("image_index", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Add the confusion matrices of a batch of class-id maps (N, H, W)."""
        if index is None:
            index = torch.full((len(preds),), -1, dtype=torch.long, device=preds.device)
        matrices = [
            multiclass_confusion_matrix(
                p, t, self.num_classes, ignore_index=self.ignore_index, validate_args=False
            )
            for p, t in zip(preds, target, strict=True)
        ]
        self.matrices.append(torch.stack(matrices))
        self.image_index.append(index.long())

    def compute(self) -> dict[str, torch.Tensor]:
        matrices, index = dim_zero_cat(self.matrices), dim_zero_cat(self.image_index)
        order = torch.argsort(index, stable=True)
        matrices, index = matrices[order], index[order]
        summaries = [confusion_summary(m) for m in matrices]
        return {
            "matrices": matrices,
            "image_index": index,
            "global_accuracy": torch.stack([s["global_accuracy"] for s in summaries]),
            "mean_iou": torch.stack([s["mean_iou"] for s in summaries]),
            "class_iou": torch.stack([s["class_iou"] for s in summaries]),
            "mean_dice": torch.stack([s["mean_dice"] for s in summaries]),
            "class_dice": torch.stack([s["class_dice"] for s in summaries]),
        }
