"""BF (boundary F1) contour matching score, as MATLAB's ``bfscore`` / ``evaluateSemanticSegmentation``.

For each image and class c: the boundaries of the binary masks ``pred == c`` and ``gt == c``
(a boundary pixel is a mask pixel with a 4-neighbour outside the mask, like ``bwperim``; the
image edge is not a boundary); tolerance ``t = tolerance * sqrt(H^2 + W^2)`` pixels, Euclidean;
precision = share of predicted boundary pixels within t of the true boundary, recall = share of
true boundary pixels within t of the predicted boundary; BF = 2PR / (P + R). Both boundaries
empty gives NaN (left out of means), one empty gives 0. Like ``bfscore``, the BF score has no
notion of unlabelled pixels: there the ground truth is just "not c".

Everything runs on whole batches on the input's device: boundaries by a 4-neighbour erosion,
the tolerance test by an exact squared-distance scan of width 2r+1 (r = floor(t)) in each axis.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def boundaries(masks: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of boolean masks (..., H, W): in the mask with a 4-neighbour outside it."""
    padded = torch.nn.functional.pad(
        masks.to(torch.uint8), (1, 1, 1, 1), value=1
    ).bool()  # edge is not outside
    inner = padded[..., :-2, 1:-1] & padded[..., 2:, 1:-1] & padded[..., 1:-1, :-2] & padded[..., 1:-1, 2:]
    return masks & ~inner


def _shifted(x: torch.Tensor, offset: int, dim: int, fill) -> torch.Tensor:
    """x moved by offset along dim (result[i] = x[i + offset]), filling what comes from outside."""
    if offset == 0:
        return x
    size = x.shape[dim]
    out = torch.full_like(x, fill)
    if abs(offset) >= size:
        return out
    if offset > 0:
        out.narrow(dim, 0, size - offset).copy_(x.narrow(dim, offset, size - offset))
    else:
        out.narrow(dim, -offset, size + offset).copy_(x.narrow(dim, 0, size + offset))
    return out


def within_distance(features: torch.Tensor, radius: float) -> torch.Tensor:
    """Pixels within Euclidean distance ``radius`` of any True pixel of features (..., H, W).

    Exact: the squared distance to the nearest feature is min over dx of (dx^2 + min over dy of dy^2),
    scanned over |dx|, |dy| <= floor(radius); compared with radius^2.
    """
    reach = int(math.floor(radius + 1e-9))
    big = torch.iinfo(torch.int32).max // 4
    column = torch.full(features.shape, big, dtype=torch.int32, device=features.device)
    for dy in range(-reach, reach + 1):
        hit = _shifted(features, dy, features.dim() - 2, False)
        column = torch.where(hit, torch.clamp(column, max=dy * dy), column)
    best = torch.full_like(column, big)
    for dx in range(-reach, reach + 1):
        best = torch.minimum(best, _shifted(column, dx, features.dim() - 1, big) + dx * dx)
    return best <= radius * radius + 1e-9


def tolerance_pixels(height: int, width: int, tolerance: float) -> float:
    """The BF distance tolerance in pixels: tolerance (a fraction) of the image diagonal."""
    return tolerance * math.sqrt(height * height + width * width)


def bf_scores(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, tolerance: float = 0.0075
) -> torch.Tensor:
    """BF score per image and class, shape (N, K), NaN where both boundaries are empty.

    preds and target are class-id maps (N, H, W); target may hold 255 (treated as "not c").
    """
    classes = torch.arange(num_classes, device=preds.device).view(1, -1, 1, 1)
    pred_edges = boundaries(preds.unsqueeze(1) == classes)
    true_edges = boundaries(target.unsqueeze(1) == classes)
    radius = tolerance_pixels(preds.shape[-2], preds.shape[-1], tolerance)
    n_pred = pred_edges.sum((-2, -1)).double()
    n_true = true_edges.sum((-2, -1)).double()
    precision = (pred_edges & within_distance(true_edges, radius)).sum((-2, -1)).double() / n_pred.clamp_min(
        1
    )
    recall = (true_edges & within_distance(pred_edges, radius)).sum((-2, -1)).double() / n_true.clamp_min(1)
    score = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-300), 0.0
    )
    score = torch.where((n_pred == 0) | (n_true == 0), 0.0, score)
    return torch.where((n_pred == 0) & (n_true == 0), float("nan"), score)


class BoundaryF1Score(Metric):
    """BF scores of every image seen (gathered across devices), with MATLAB's averaging.

    ``compute()`` returns ``per_image`` (N, K) in dataset-index order, ``image_index`` (N),
    ``class_bf_score`` (K; nan-mean over images), ``image_bf_score`` (N; nan-mean over classes)
    and ``mean_bf_score`` (nan-mean of the image scores).
    """

    full_state_update = False

    def __init__(self, num_classes: int, tolerance: float = 0.0075, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.tolerance = num_classes, tolerance
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("image_index", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None = None) -> None:
        """Score a batch of class-id maps (N, H, W); index = dataset positions of the images."""
        if index is None:
            index = torch.full((len(preds),), -1, dtype=torch.long, device=preds.device)
        self.scores.append(bf_scores(preds, target, self.num_classes, self.tolerance))
        self.image_index.append(index.long())

    def compute(self) -> dict[str, torch.Tensor]:
        scores, index = dim_zero_cat(self.scores), dim_zero_cat(self.image_index)
        order = torch.argsort(index, stable=True)
        scores, index = scores[order], index[order]
        image_scores = scores.nanmean(1)
        return {
            "per_image": scores,
            "image_index": index,
            "class_bf_score": scores.nanmean(0),
            "image_bf_score": image_scores,
            "mean_bf_score": image_scores.nanmean(),
        }
