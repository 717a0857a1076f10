"""An independent numpy/scipy implementation of MATLAB's evaluateSemanticSegmentation rules.

Written from the rules, image by image and class by class, without any bloodseg code: per class
logical masks (the prediction blanked where the truth is unlabelled under ``matlab_current``),
the confusion matrix as nnz(true_i & pred_j), the Jaccard of each class as nnz(A & B) / nnz(A | B)
summed over images, and the BF score with scipy's erosion (zeros outside the image) and exact
integer squared distances from the distance transform's nearest-pixel indices, matched when
< theta^2. Used by the metric and CLI tests to check bloodseg's batched torch code.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

CROSS = ndimage.generate_binary_structure(2, 1)


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _nanmean(values, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Mask minus its erosion by the 4-connected cross, zeros assumed outside the image."""
    return mask & ~ndimage.binary_erosion(mask, CROSS, border_value=0)


def squared_distance_to(features: np.ndarray) -> np.ndarray:
    """Exact integer squared Euclidean distance of every pixel to the nearest True pixel."""
    near = ndimage.distance_transform_edt(~features, return_distances=False, return_indices=True)
    rows, cols = np.indices(features.shape)
    return (rows - near[0]) ** 2 + (cols - near[1]) ** 2


def bf_score(pred: np.ndarray, true: np.ndarray, tolerance: float = 0.0075) -> float:
    """BF score of two logical masks (NaN if either boundary is empty)."""
    theta = tolerance * math.sqrt(pred.shape[0] ** 2 + pred.shape[1] ** 2)
    bp, bt = boundary(pred), boundary(true)
    if not bp.any() or not bt.any():
        return math.nan
    precision = np.count_nonzero(squared_distance_to(bt)[bp] < theta**2) / np.count_nonzero(bp)
    recall = np.count_nonzero(squared_distance_to(bp)[bt] < theta**2) / np.count_nonzero(bt)
    if precision == 0 or recall == 0:
        return 0.0
    return 1.0 / (0.5 / recall + 0.5 / precision)


def evaluate(preds, truths, num_classes: int, semantics: str = "matlab_current", tolerance=0.0075) -> dict:
    """MATLAB's DataSetMetrics, ClassMetrics and ImageMetrics (plus Dice) of lists of label maps."""
    k = num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    inter_sum, union_sum, true_sum, pred_sum = (np.zeros(k) for _ in range(4))
    image = {name: [] for name in ("global", "class_acc", "iou", "dice", "bf")}
    for pred, truth in zip(preds, truths, strict=True):
        act = [pred == c for c in range(k)]
        exp = [truth == c for c in range(k)]
        if semantics == "matlab_current":
            valid = np.isin(truth, np.arange(k))
            act = [a & valid for a in act]
        conf = np.array([[np.count_nonzero(exp[i] & act[j]) for j in range(k)] for i in range(k)])
        confusion += conf
        inter = np.array([np.count_nonzero(act[c] & exp[c]) for c in range(k)])
        union = np.array([np.count_nonzero(act[c] | exp[c]) for c in range(k)])
        n_true = np.array([np.count_nonzero(e) for e in exp])
        n_pred = np.array([np.count_nonzero(a) for a in act])
        inter_sum += inter
        union_sum += union
        true_sum += n_true
        pred_sum += n_pred
        image["global"].append(_div(np.trace(conf), conf.sum()))
        image["class_acc"].append(_div(np.diag(conf), conf.sum(1)))
        image["iou"].append(_div(inter, union))
        image["dice"].append(_div(2 * inter, n_true + n_pred))
        image["bf"].append([bf_score(act[c], exp[c], tolerance) for c in range(k)])
    image = {key: np.array(value, dtype=np.float64) for key, value in image.items()}
    mean = (lambda v, axis=None: np.mean(v, axis=axis)) if semantics == "matlab_current" else _nanmean
    rows = confusion.sum(1)
    class_acc = _div(np.diag(confusion), rows)
    class_iou = _div(inter_sum, union_sum)
    terms = rows * class_iou
    weighted = (np.nansum(terms) if semantics == "matlab_current" else np.sum(terms)) / rows.sum()
    class_dice = _div(2 * inter_sum, true_sum + pred_sum)
    image_bf = _nanmean(image["bf"], axis=1)
    return {
        "global_accuracy": _div(np.trace(confusion), confusion.sum()),
        "mean_accuracy": mean(class_acc),
        "mean_iou": mean(class_iou),
        "weighted_iou": weighted,
        "mean_dice": mean(class_dice),
        "mean_bf_score": np.mean(image_bf),
        "class_accuracy": class_acc,
        "class_iou": class_iou,
        "class_dice": class_dice,
        "class_bf_score": _nanmean(image["bf"], axis=0),
        "counts": confusion,
        "image_global_accuracy": image["global"],
        "image_mean_accuracy": mean(image["class_acc"], axis=1),
        "image_mean_iou": mean(image["iou"], axis=1),
        "image_mean_dice": mean(image["dice"], axis=1),
        "image_bf_score": image_bf,
        "image_class_accuracy": image["class_acc"],
        "image_class_iou": image["iou"],
        "image_class_dice": image["dice"],
        "image_class_bf_score": image["bf"],
    }
