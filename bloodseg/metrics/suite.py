"""All evaluation metrics of a split behind one update/compute: dataset, per-image and BF."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from bloodseg.metrics.boundary import bf_scores
from bloodseg.metrics.cells import split_cells
from bloodseg.metrics.confusion import class_counts, confusion_matrices
from bloodseg.metrics.instances import EDGE_VARIANTS, STAT_COLUMNS, InstanceSettings, class_statistics
from bloodseg.metrics.semantics import (
    MATLAB_CURRENT,
    bf_means,
    blank_unlabelled,
    check_semantics,
    confusion_metrics,
)


class ImageStatistics(Metric):
    """Per-image statistics of a split, gathered across devices in dataset-index order.

    ``update`` appends a batch's confusion matrices (n, K, K), predicted-pixel counts (n, K), BF
    scores (n, K) and dataset indices (n); ``compute`` returns them concatenated over every batch
    and process and sorted by index (torchmetrics squeezes single-element results: callers reshape).
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("matrices", "predicted", "bf", "image_index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, matrices, predicted, bf, index) -> None:
        """Keep one batch's per-image statistics."""
        self.matrices.append(matrices)
        self.predicted.append(predicted)
        self.bf.append(bf)
        self.image_index.append(index)

    def compute(self) -> dict[str, torch.Tensor]:
        """All statistics seen, sorted by dataset index."""
        index = dim_zero_cat(self.image_index).reshape(-1)
        order = torch.argsort(index, stable=True)
        return {
            "matrices": dim_zero_cat(self.matrices)[order],
            "predicted": dim_zero_cat(self.predicted)[order],
            "bf": dim_zero_cat(self.bf)[order],
            "image_index": index[order],
        }


class InstanceStatistics(Metric):
    """Per-image cell-matching statistics of a split, gathered across devices in dataset-index order.

    ``update`` splits each non-background class of a batch's predicted maps into cells, matches
    them to the true cells and keeps one (K-1, 2, STAT_COLUMNS) block per image (rows of
    :func:`bloodseg.metrics.instances.class_statistics`); ``compute`` returns the blocks of every
    image seen, sorted by dataset index.
    """

    full_state_update = False

    def __init__(self, num_classes: int, settings: InstanceSettings, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.settings = num_classes, settings
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.add_state("image_index", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        """Match the cells of a batch of predicted and true class-id maps (N, H, W)."""
        blocks = []
        for pred, truth in zip(preds.cpu().numpy(), target.cpu().numpy(), strict=True):
            blocks.append(
                [
                    class_statistics(
                        truth == c, split_cells(pred == c, self.settings.cells), self.settings.min_true_area
                    )
                    for c in range(1, self.num_classes)
                ]
            )
        shape = (len(blocks), self.num_classes - 1, len(EDGE_VARIANTS), STAT_COLUMNS)
        self.rows.append(
            torch.as_tensor(np.array(blocks), dtype=torch.float64, device=index.device).reshape(shape)
        )
        self.image_index.append(index)

    def compute(self) -> torch.Tensor:
        """All images' blocks (n, K-1, 2, STAT_COLUMNS), sorted by dataset index."""
        shape = (-1, self.num_classes - 1, len(EDGE_VARIANTS), STAT_COLUMNS)
        if (
            isinstance(self.image_index, list) and not self.image_index
        ):  # nothing seen (after a sync: a tensor)
            return torch.zeros(0, *shape[1:], dtype=torch.float64)
        index = dim_zero_cat(self.image_index).reshape(-1)
        return dim_zero_cat(self.rows).reshape(shape)[torch.argsort(index, stable=True)]


class SegmentationMetrics(nn.Module):
    """Every metric of a split with MATLAB ``evaluateSemanticSegmentation`` semantics.

    Per image it keeps the confusion counts of labelled pixels, the predicted-pixel counts of
    every pixel and the BF score of each class; ``compute()`` (after gathering across devices)
    forms the dataset, class and per-image metrics by the rule set ``semantics`` (see
    :mod:`bloodseg.metrics.semantics`: ``matlab_current`` blanks the prediction where the truth
    is unlabelled and keeps NaN in the class means; ``matlab_2017`` does neither).

    ``compute()`` gives one flat dict of tensors: the dataset values ``global_accuracy``,
    ``mean_accuracy``, ``mean_iou``, ``weighted_iou``, ``mean_dice``, ``mean_bf_score``; per
    class ``class_accuracy``, ``class_iou``, ``class_dice``, ``class_bf_score``; the ``counts``
    matrix (rows = truth); and per image, sorted by dataset index, ``image_index``,
    ``image_global_accuracy``, ``image_mean_accuracy``, ``image_mean_iou``, ``image_mean_dice``,
    ``image_bf_score``, ``image_class_accuracy``, ``image_class_iou``, ``image_class_dice``,
    ``image_class_bf_score``.
    """

    def __init__(
        self,
        num_classes: int,
        bf_tolerance: float = 0.0075,
        semantics: str = MATLAB_CURRENT,
        instances: InstanceSettings | None = None,
    ):
        """instances: also match predicted cells to true cells (``instance_rows`` in compute), or None."""
        super().__init__()
        self.num_classes, self.bf_tolerance = num_classes, bf_tolerance
        self.semantics = check_semantics(semantics)
        self.images = ImageStatistics()
        self.instances = None if instances is None else InstanceStatistics(num_classes, instances)

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Add a batch of predicted and true class-id maps (N, H, W); target 255 = unlabelled.

        index = the images' positions in the dataset (results are sorted by it).
        """
        if index is None:
            index = torch.full((len(preds),), -1, dtype=torch.long, device=preds.device)
        preds, target = preds.long(), target.long()
        k = self.num_classes
        scored = blank_unlabelled(preds, target, k) if self.semantics == MATLAB_CURRENT else preds
        self.images.update(
            confusion_matrices(preds, target, k),
            class_counts(scored, k),
            bf_scores(scored, target, k, self.bf_tolerance),
            index.long(),
        )
        if self.instances is not None:
            self.instances.update(scored, target, index.long())

    def compute(self) -> dict[str, torch.Tensor]:
        """The dataset, class and per-image metrics of every image seen (see the class docstring)."""
        k = self.num_classes
        if self.images.image_index:
            raw = self.images.compute()
            matrices, predicted = raw["matrices"].reshape(-1, k, k), raw["predicted"].reshape(-1, k)
            bf, index = raw["bf"].reshape(-1, k), raw["image_index"].reshape(-1)
        else:
            device = self.images.device
            matrices = torch.zeros(0, k, k, dtype=torch.long, device=device)
            predicted = torch.zeros(0, k, dtype=torch.long, device=device)
            bf = torch.zeros(0, k, dtype=torch.float64, device=device)
            index = torch.zeros(0, dtype=torch.long, device=device)
        counts = matrices.sum(0)
        dataset = confusion_metrics(counts, predicted.sum(0), self.semantics)
        images = confusion_metrics(matrices, predicted, self.semantics)
        boundary = bf_means(bf)
        extra = {} if self.instances is None else {"instance_rows": self.instances.compute()}
        return {
            **extra,
            **dataset,
            "counts": counts,
            "class_bf_score": boundary["class_bf_score"],
            "mean_bf_score": boundary["mean_bf_score"],
            "num_images": torch.tensor(len(index)),
            "image_index": index,
            "image_global_accuracy": images["global_accuracy"],
            "image_mean_accuracy": images["mean_accuracy"],
            "image_mean_iou": images["mean_iou"],
            "image_mean_dice": images["mean_dice"],
            "image_bf_score": boundary["image_bf_score"],
            "image_class_accuracy": images["class_accuracy"],
            "image_class_iou": images["class_iou"],
            "image_class_dice": images["class_dice"],
            "image_class_bf_score": bf,
        }

    def reset(self) -> None:
        """Forget everything seen (call after compute at each epoch end)."""
        self.images.reset()
        if self.instances is not None:
            self.instances.reset()
