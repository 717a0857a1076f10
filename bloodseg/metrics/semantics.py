"""The two MATLAB rule sets of ``evaluateSemanticSegmentation`` and the metrics they define.

``evaluation.semantics`` chooses one:

- ``matlab_current`` (current MATLAB: ``semanticSegmentationMetrics`` as revised through 2023,
  shipped in the 2023 releases and later; the release between 2018 and 2023 that introduced
  these rules is not pinned down here): the prediction is
  blanked where the ground truth is unlabelled before every metric (a predicted pixel there is no
  class: it counts in no union and draws no boundary); MeanAccuracy and MeanIoU keep NaN, per
  dataset and per image (a class absent from the whole set makes them NaN, on purpose);
  WeightedIoU omits NaN class terms.
- ``matlab_2017`` (``semanticSegmentationMetrics`` as written in 2017, introduced with R2017b; the
  paper scored with a 2018 release, taken to ship this file): the prediction is not blanked;
  class IoU is the sum over images of intersections over the sum over images of unions, the
  prediction counting everywhere (also at unlabelled pixels); MeanAccuracy and MeanIoU skip NaN;
  WeightedIoU is NaN when a class IoU is (a class in neither truth nor prediction).

Common to both: the confusion matrix counts labelled pixels only (rows = true class, columns =
prediction), so global and class accuracy do not depend on the rule set; IEEE arithmetic (0/0 =
NaN); BF per image and class by :func:`bloodseg.metrics.boundary.bf_scores`; class mean BF =
NaN-skipping mean over images; image BF = NaN-skipping mean over classes; dataset mean BF = plain
mean of the image BF (NaN when some image has NaN for every class). Dice (not a MATLAB metric)
= 2 * intersection / (true pixels + predicted pixels), from the same intersection and prediction
as the IoU, its mean with the IoU's NaN rule.
"""

from __future__ import annotations

import torch

from bloodseg.errors import BloodsegError

MATLAB_CURRENT = "matlab_current"
MATLAB_2017 = "matlab_2017"
SEMANTICS = (MATLAB_CURRENT, MATLAB_2017)
RELEASES = {
    MATLAB_CURRENT: "current MATLAB (semanticSegmentationMetrics revised through 2023)",
    MATLAB_2017: "MATLAB R2017b-era (semanticSegmentationMetrics of 2017; the paper's 2018 release)",
}


def check_semantics(semantics: str) -> str:
    """The rule set's name if it is one of SEMANTICS, else a one-line error naming the config key."""
    if semantics not in SEMANTICS:
        raise BloodsegError(
            f"evaluation.semantics={semantics!r} is not a known rule set; "
            f"fix: use one of {', '.join(SEMANTICS)}"
        )
    return semantics


def blank_unlabelled(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The prediction with every pixel whose ground truth is not a class id 0..K-1 set to -1 (no class)."""
    labelled = (target >= 0) & (target < num_classes)
    return torch.where(labelled, preds, torch.full_like(preds, -1))


def class_mean(values: torch.Tensor, semantics: str) -> torch.Tensor:
    """Mean over the last (class) dim: NaN kept under matlab_current, NaN skipped under matlab_2017."""
    return values.mean(-1) if semantics == MATLAB_CURRENT else values.nanmean(-1)


def confusion_metrics(
    counts: torch.Tensor, predicted: torch.Tensor, semantics: str
) -> dict[str, torch.Tensor]:
    """Accuracy, IoU and Dice of confusion counts (..., K, K), for one image or summed over images.

    ``counts[..., i, j]`` = labelled pixels of true class i predicted j; ``predicted[..., c]`` =
    pixels predicted c *including* unlabelled ones (used for the unions under matlab_2017; under
    matlab_current the prediction is blanked there, so the column sums of counts are used).
    global_accuracy = trace / sum; class_accuracy = C[c,c] / row_c; class_iou = C[c,c] /
    (row_c + pred_c - C[c,c]); class_dice = 2 C[c,c] / (row_c + pred_c); the means over classes
    follow :func:`class_mean`; weighted_iou = sum_c row_c * iou_c / sum(C), NaN terms omitted
    under matlab_current and kept (NaN result) under matlab_2017. All in float64, 0/0 = NaN.
    """
    counts = counts.double()
    diag = counts.diagonal(dim1=-2, dim2=-1)
    rows = counts.sum(-1)
    pred = counts.sum(-2) if semantics == MATLAB_CURRENT else predicted.double()
    total = rows.sum(-1)
    class_iou = diag / (rows + pred - diag)
    class_dice = 2 * diag / (rows + pred)
    weighted = rows * class_iou
    weighted = weighted.nansum(-1) if semantics == MATLAB_CURRENT else weighted.sum(-1)
    class_accuracy = diag / rows
    return {
        "global_accuracy": diag.sum(-1) / total,
        "class_accuracy": class_accuracy,
        "mean_accuracy": class_mean(class_accuracy, semantics),
        "class_iou": class_iou,
        "mean_iou": class_mean(class_iou, semantics),
        "weighted_iou": weighted / total,
        "class_dice": class_dice,
        "mean_dice": class_mean(class_dice, semantics),
    }


def bf_means(scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """MATLAB's BF averages of per-image, per-class scores (N, K).

    class_bf_score = NaN-skipping mean over images; image_bf_score = NaN-skipping mean over
    classes; mean_bf_score = plain mean of the image scores (NaN if one of them is NaN).
    """
    scores = scores.double()
    image = scores.nanmean(1)
    return {"class_bf_score": scores.nanmean(0), "image_bf_score": image, "mean_bf_score": image.mean()}
