"""Cells as objects: predicted cell instances matched one-to-one to the true cells of a mask.

True cells are the 4-connected components of a class's ground-truth mask (touching cells in
real masks are often separated by a 1-pixel or only diagonal gap), components under
``min_true_area`` pixels not being cells. Predicted cells are instance maps (the cells the
program outputs after splitting touching ones).

At an IoU threshold t, predicted and true cells are paired one-to-one so that the summed IoU of
pairs with IoU >= t is largest (Hungarian assignment, as the COCO and Cellpose evaluations
do): TP = pairs, FP = unpaired predictions, FN = unpaired true cells. Precision = TP/(TP+FP),
recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), average precision at t (Cellpose's definition) =
TP/(TP+FP+FN), and AP@[0.5:0.95] its mean over t = 0.50, 0.55, ..., 0.95. Dataset figures pool
TP, FP and FN over all images. The count error of an image is (predicted - true) / true; the
dataset reports its signed mean and the median of its absolute value, in percent.

Every figure is given twice: ``edge_excluded`` leaves out, on both sides, the cells touching
the image border (real masks often miss cells cut by the edge), ``edge_included`` keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from bloodseg.metrics.cells import CountSettings, resolve_count_settings

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
EDGE_VARIANTS = ("edge_excluded", "edge_included")

# Columns of one image's statistics row (per class and edge variant).
TRUE, PREDICTED, MATCHED_IOU, SPLIT, MERGED, FIRST_TP = 0, 1, 2, 3, 4, 5
STAT_COLUMNS = FIRST_TP + len(IOU_THRESHOLDS)


@dataclass(frozen=True)
class InstanceSettings:
    """Which true components are cells, and how predicted class masks are split into cells."""

    min_true_area: int = 100  # true cells: 4-connected components of at least this many pixels
    cells: CountSettings = CountSettings()  # predicted cells: how touching cells are split


def true_cells(mask: np.ndarray, min_area: int) -> np.ndarray:
    """The 4-connected components of a binary mask with at least min_area pixels, numbered 1..n (int32)."""
    components, n = ndimage.label(np.asarray(mask, bool))  # scipy's default structure: 4-connectivity
    areas = np.bincount(components.ravel(), minlength=n + 1)
    keep = areas >= min_area
    keep[0] = False
    renumber = np.zeros(n + 1, np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return renumber[components]


def without_edge_cells(instances: np.ndarray) -> np.ndarray:
    """The instance map with every instance that touches the image border removed, renumbered 1..n."""
    border = np.unique(np.concatenate([instances[0], instances[-1], instances[:, 0], instances[:, -1]]))
    n = int(instances.max(initial=0))
    keep = np.ones(n + 1, bool)
    keep[border] = False
    keep[0] = False
    renumber = np.zeros(n + 1, np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return renumber[instances]


def overlap_counts(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Pixels shared by every (true, predicted) id pair, shape (n_true + 1, n_predicted + 1); id 0 = none."""
    n_true, n_pred = int(truth.max(initial=0)), int(predicted.max(initial=0))
    return np.bincount(
        truth.ravel().astype(np.int64) * (n_pred + 1) + predicted.ravel(),
        minlength=(n_true + 1) * (n_pred + 1),
    ).reshape(n_true + 1, n_pred + 1)


def iou_from_overlaps(joint: np.ndarray) -> np.ndarray:
    """The IoU matrix (n_true, n_predicted) from overlap_counts' table."""
    intersection = joint[1:, 1:].astype(np.float64)
    true_area = joint[1:, :].sum(1, keepdims=True)
    pred_area = joint[:, 1:].sum(0, keepdims=True)
    union = true_area + pred_area - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def iou_matrix(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """IoU of every (true, predicted) instance pair, shape (n_true, n_predicted); 0 = no instance."""
    return iou_from_overlaps(overlap_counts(truth, predicted))


def split_and_merged(overlaps: np.ndarray) -> tuple[int, int]:
    """(true cells holding the largest part of two or more predicted cells, predicted cells holding the
    largest part of two or more true cells) from overlap_counts' table: over-splitting (or true clumps
    of overlapping cells kept as one component), and merging."""
    inner = overlaps[1:, 1:]
    if inner.size == 0:
        return 0, 0
    owner_of_pred = np.where(inner.max(0) > 0, inner.argmax(0), -1)
    owner_of_true = np.where(inner.max(1) > 0, inner.argmax(1), -1)
    split = np.bincount(owner_of_pred[owner_of_pred >= 0], minlength=inner.shape[0])
    merged = np.bincount(owner_of_true[owner_of_true >= 0], minlength=inner.shape[1])
    return int((split >= 2).sum()), int((merged >= 2).sum())


def matched_ious(iou: np.ndarray, threshold: float) -> np.ndarray:
    """The IoUs of the one-to-one pairs with IoU >= threshold whose summed IoU is largest."""
    if iou.size == 0:
        return np.zeros(0)
    eligible = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(eligible, maximize=True)
    values = iou[rows, cols]
    return values[values >= threshold]


def image_statistics(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """One image's row: true cells, predicted cells, summed IoU of the pairs at 0.5, split true cells,
    merged predicted cells (see split_and_merged), TP at each threshold."""
    overlaps = overlap_counts(truth, predicted)
    iou = iou_from_overlaps(overlaps)
    row = np.zeros(STAT_COLUMNS)
    row[TRUE], row[PREDICTED] = iou.shape
    row[SPLIT], row[MERGED] = split_and_merged(overlaps)
    for i, threshold in enumerate(IOU_THRESHOLDS):
        matched = matched_ious(iou, threshold)
        row[FIRST_TP + i] = len(matched)
        if i == 0:
            row[MATCHED_IOU] = matched.sum()
    return row


def class_statistics(true_mask: np.ndarray, predicted_cells: np.ndarray, min_true_area: int) -> np.ndarray:
    """Rows (edge_excluded, edge_included) of one class in one image: shape (2, STAT_COLUMNS)."""
    truth = true_cells(true_mask, min_true_area)
    predicted = np.asarray(predicted_cells, np.int32)
    return np.stack(
        [
            image_statistics(without_edge_cells(truth), without_edge_cells(predicted)),
            image_statistics(truth, predicted),
        ]
    )


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


def instance_scores(rows: np.ndarray) -> dict:
    """Dataset scores from per-image rows (n_images, STAT_COLUMNS) of one class and edge variant."""
    rows = np.asarray(rows, np.float64).reshape(-1, STAT_COLUMNS)
    true, predicted = rows[:, TRUE], rows[:, PREDICTED]
    tp = rows[:, FIRST_TP:].sum(0)
    fp, fn = predicted.sum() - tp, true.sum() - tp
    ap = [_ratio(tp[i], tp[i] + fp[i] + fn[i]) for i in range(len(IOU_THRESHOLDS))]
    counted = true > 0
    errors = (predicted[counted] - true[counted]) / true[counted] * 100.0
    return {
        "true_cells": int(true.sum()),
        "predicted_cells": int(predicted.sum()),
        "precision_50": _ratio(tp[0], tp[0] + fp[0]),
        "recall_50": _ratio(tp[0], tp[0] + fn[0]),
        "f1_50": _ratio(2 * tp[0], 2 * tp[0] + fp[0] + fn[0]),
        "mean_matched_iou": _ratio(rows[:, MATCHED_IOU].sum(), tp[0]),
        "ap_50": ap[0],
        "ap_75": ap[IOU_THRESHOLDS.index(0.75)],
        "ap_50_95": float(np.mean(ap)) if all(np.isfinite(ap)) else float("nan"),
        "ap_per_threshold": dict(zip([f"{t:.2f}" for t in IOU_THRESHOLDS], ap, strict=True)),
        "count_error_mean_pct": float(errors.mean()) if len(errors) else float("nan"),
        "count_error_median_abs_pct": float(np.median(np.abs(errors))) if len(errors) else float("nan"),
        "images_counted": int(counted.sum()),
        "split_true_cells": int(rows[:, SPLIT].sum()),
        "merged_predicted_cells": int(rows[:, MERGED].sum()),
    }


def _json(value):
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def instances_block(rows, class_names: list[str], image_ids: list[str], settings: InstanceSettings) -> dict:
    """metrics.json's ``instances``: per non-background class and edge variant, the dataset scores
    and each image's true and predicted cell counts (NaN written as null).

    rows: (n_images, K-1, 2, STAT_COLUMNS) as :class:`bloodseg.metrics.suite.InstanceStatistics` gives them.
    """
    rows = np.asarray(rows, np.float64).reshape(len(image_ids), len(class_names) - 1, len(EDGE_VARIANTS), -1)
    classes = {}
    for c, name in enumerate(class_names[1:]):
        classes[name] = {
            variant: {
                **_json(instance_scores(rows[:, c, v])),
                "images": {
                    image: {"true": int(r[TRUE]), "predicted": int(r[PREDICTED])}
                    for image, r in zip(image_ids, rows[:, c, v], strict=True)
                },
            }
            for v, variant in enumerate(EDGE_VARIANTS)
        }
    return {
        "definition": (
            "true cells: 4-connected components of the class's ground-truth mask with at least "
            f"{settings.min_true_area} px; predicted cells: the class's predicted mask split into cells "
            "(distance-transform watershed); one-to-one Hungarian matching at IoU >= t; "
            "AP = TP/(TP+FP+FN) (Cellpose), ap_50_95 its mean over t = 0.50:0.05:0.95; TP/FP/FN pooled over "
            "images; count error = (predicted - true) / true per image; edge_excluded leaves out the cells "
            "touching the image border on both sides, edge_included keeps them; split_true_cells: true cells "
            "holding the largest part of two or more predicted cells (over-splitting, or true clumps of "
            "overlapping cells kept as one component), merged_predicted_cells: the converse"
        ),
        "settings": {
            "min_true_area": settings.min_true_area,
            "min_cell_area": settings.cells.min_area,
            "min_distance": settings.cells.min_distance,
            "smoothing": settings.cells.smoothing,
            "max_hole_area": settings.cells.max_hole_area,
        },
        "classes": classes,
    }


INSTANCE_COLUMNS = (
    ("f1_50", "F1@0.5"),
    ("precision_50", "Precision@0.5"),
    ("recall_50", "Recall@0.5"),
    ("mean_matched_iou", "Matched IoU"),
    ("ap_50_95", "AP@[.5:.95]"),
    ("count_error_mean_pct", "Count error %"),
    ("count_error_median_abs_pct", "Median abs count error %"),
    ("split_true_cells", "Split true cells"),
    ("merged_predicted_cells", "Merged predicted cells"),
)


def instances_markdown(block: dict) -> str:
    """Table 3 of metrics.md: the instance scores per class and edge variant."""

    def fmt(value):
        return "n/a" if value is None else str(value) if isinstance(value, int) else f"{value:.4f}"

    lines = [
        "### Table 3. Cells as objects (instance metrics, not MATLAB's)",
        "",
        "| class | cells | true | predicted | " + " | ".join(label for _, label in INSTANCE_COLUMNS) + " |",
        "| --- | --- | --- | --- |" + " --- |" * len(INSTANCE_COLUMNS),
    ]
    for name, variants in block["classes"].items():
        for variant, scores in variants.items():
            lines.append(
                f"| {name} | {variant.replace('_', ' ')} | {scores['true_cells']} | {scores['predicted_cells']} | "
                + " | ".join(fmt(scores[key]) for key, _ in INSTANCE_COLUMNS)
                + " |"
            )
    return "\n".join(lines + ["", block["definition"] + "."]) + "\n"


def settings_from_config(evaluation_cfg, fallback: dict | None = None) -> InstanceSettings | None:
    """The ``evaluation.instances`` config as InstanceSettings, or None when it is off (or absent).

    A key that is null takes its value from ``fallback`` (a checkpoint's evaluation.instances), else
    the built-in default.
    """
    spec = getattr(evaluation_cfg, "instances", None) if evaluation_cfg is not None else None
    if spec is None or not spec.enabled:
        return None
    given = (lambda key: spec.get(key)) if hasattr(spec, "get") else (lambda key: getattr(spec, key, None))
    min_true_area = given("min_true_area")
    if min_true_area is None:
        min_true_area = (fallback or {}).get("min_true_area", InstanceSettings().min_true_area)
    return InstanceSettings(int(min_true_area), resolve_count_settings(given, fallback))


def per_image_columns(class_names: list[str]) -> list[str]:
    """per_image_metrics.csv's instance columns: per non-background class, cells (true, predicted)
    and F1@0.5 over all cells, then the same over the cells off the image border (``interior_``)."""
    columns = []
    for prefix in ("", "interior_"):
        for name in class_names[1:]:
            columns += [
                f"{prefix}cells_true_{name}",
                f"{prefix}cells_predicted_{name}",
                f"{prefix}f1_50_{name}",
            ]
    return columns


def per_image_values(block: np.ndarray) -> list[float | int]:
    """One image's values for per_image_columns from its (K-1, 2, STAT_COLUMNS) block (NaN: no cell at all)."""
    values = []
    for variant in (EDGE_VARIANTS.index("edge_included"), EDGE_VARIANTS.index("edge_excluded")):
        for row in np.asarray(block)[:, variant]:
            cells = row[TRUE] + row[PREDICTED]
            values += [int(row[TRUE]), int(row[PREDICTED]), _ratio(2 * row[FIRST_TP], cells)]
    return values
