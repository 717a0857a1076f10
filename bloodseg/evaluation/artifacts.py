"""An evaluation's result files: metrics.json, metrics.md, confusion_matrix.csv/.png,
per_image_metrics.csv, and the overlays of the best and worst images.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodseg.files import atomic_text, write_json_atomically, write_text_atomically
from bloodseg.metrics.instances import InstanceSettings, per_image_columns, per_image_values
from bloodseg.metrics.semantics import MATLAB_CURRENT
from bloodseg.metrics.tables import build_metrics, json_number, paper_tables_markdown
from bloodseg.viz.figures import confusion_matrix_figure
from bloodseg.viz.pictures import comparison, save_png


def write_metrics_json(path: Path, metrics: dict[str, Any]) -> None:
    """Write metrics.json (strict JSON: missing values are null)."""
    write_json_atomically(path, metrics, allow_nan=False)


def write_confusion_csv(path: Path, metrics: dict[str, Any]) -> None:
    """confusion_matrix.csv: one row per true class with its counts, then its row-normalised percentages."""
    cm = metrics["confusion_matrix"]
    names = cm["classes"]
    with atomic_text(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["true_class", *[f"pred_{n}_count" for n in names], *[f"pred_{n}_percent" for n in names]]
        )
        for name, counts, percent in zip(names, cm["counts"], cm["normalized_percent"], strict=True):
            writer.writerow([name, *counts, *percent])


def _csv_number(value) -> str:
    """A CSV cell: empty for NaN, whole numbers (cell counts) as integers, the rest with 6 decimals."""
    number = json_number(value)
    if number is None:
        return ""
    return str(int(number)) if isinstance(value, int | np.integer) else f"{number:.6f}"


def write_per_image_csv(
    path: Path, results: dict[str, Any], class_names: list[str], image_ids: list[str]
) -> None:
    """per_image_metrics.csv: one row per image with its global accuracy, mean accuracy, mean IoU,
    mean BF score, mean Dice, then per-class IoU, BF and Dice (MATLAB's ImageMetrics plus Dice; empty
    cell = NaN); with instance metrics, each class's true and predicted cell counts and F1@0.5 (all
    cells, then ``interior_``: cells off the image border)."""
    instances = results.get("instance_rows")
    with atomic_text(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "image",
                "global_accuracy",
                "mean_accuracy",
                "mean_iou",
                "mean_bf_score",
                "mean_dice",
                *[f"iou_{n}" for n in class_names],
                *[f"bf_{n}" for n in class_names],
                *[f"dice_{n}" for n in class_names],
                *(per_image_columns(class_names) if instances is not None else []),
            ]
        )
        for row, image_id in enumerate(image_ids):
            values = [
                results["image_global_accuracy"][row],
                results["image_mean_accuracy"][row],
                results["image_mean_iou"][row],
                results["image_bf_score"][row],
                results["image_mean_dice"][row],
                *results["image_class_iou"][row],
                *results["image_class_bf_score"][row],
                *results["image_class_dice"][row],
                *(per_image_values(instances[row].numpy()) if instances is not None else []),
            ]
            writer.writerow([image_id, *[_csv_number(x) for x in values]])


def extremes(scores: torch.Tensor, count: int) -> tuple[list[int], list[int]]:
    """Row numbers of the `count` best and `count` worst scores (NaN scores are never picked)."""
    valid = [
        i
        for i in torch.argsort(scores.double(), descending=True).tolist()
        if not math.isnan(float(scores[i]))
    ]
    count = min(count, len(valid) // 2 if len(valid) > 1 else len(valid))
    return valid[:count], valid[::-1][:count]


def class_showcase(class_iou: torch.Tensor, background: int = 0) -> dict[int, tuple[int, bool]]:
    """For each class but background, (row, alone) of the image that shows it best: the highest IoU of
    that class among images where it is the only non-background class present (alone=True), else
    among all images where it is present (its IoU is not NaN). Classes present nowhere are left out."""
    scores = class_iou.double()
    present = ~torch.isnan(scores)
    cells = [k for k in range(scores.shape[1]) if k != background]
    picks: dict[int, tuple[int, bool]] = {}
    for k in cells:
        alone = present[:, k] & ~present[:, [c for c in cells if c != k]].any(1)
        for rows, only in ((alone, True), (present[:, k], False)):
            if bool(rows.any()):
                candidates = torch.where(rows, scores[:, k], torch.tensor(-1.0, dtype=torch.float64))
                picks[k] = (int(candidates.argmax()), only)
                break
    return picks


Renderer = Callable[[int], tuple[np.ndarray | None, np.ndarray, np.ndarray]]


def write_evaluation(
    out_dir: Path,
    results: dict[str, Any],
    class_names: list[str],
    class_colors: list,
    image_ids: list[str],
    title: str,
    extra: dict[str, Any] | None = None,
    render: Renderer | None = None,
    num_overlays: int = 1,
    semantics: str = MATLAB_CURRENT,
    instance_settings: InstanceSettings | None = None,
) -> dict[str, Any]:
    """Write every evaluation artifact of a split and return the metrics.json document.

    metrics.json is written last (any earlier one removed first), so a folder holding it holds the
    complete set, also after a run stopped while writing.

    ``semantics`` names the rule set the results were computed with (recorded in metrics.json);
    ``instance_settings`` those of the instance metrics, when the results hold them.

    metrics.json, metrics.md, confusion_matrix.csv / .png, per_image_metrics.csv and, when
    ``render(row)`` gives (image or None, truth, prediction) for a row, overlays of the best and
    worst images by mean IoU over the classes present (NaN skipped, so an image missing a class
    still ranks; overlay_best_<id>.png, overlay_worst_<id>.png), and per class but background the
    image showing it best (overlay_only<k>_<id>.png when that class is the only cell class on it,
    else overlay_most<k>_<id>.png; see class_showcase). Callers print the
    tables (the train command in its end-of-run summary, the evaluate command itself).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(
        results,
        class_names,
        len(image_ids),
        semantics,
        image_ids=image_ids,
        instance_settings=instance_settings,
        **(extra or {}),
    )
    (out_dir / "metrics.json").unlink(missing_ok=True)  # present again only once everything is written
    write_confusion_csv(out_dir / "confusion_matrix.csv", metrics)
    confusion_matrix_figure(
        np.asarray(metrics["confusion_matrix"]["counts"]),
        class_names,
        out_dir / "confusion_matrix.png",
        f"Normalized confusion matrix (%), {title}",
    )
    write_text_atomically(out_dir / "metrics.md", paper_tables_markdown(metrics, title))
    if "image_mean_iou" in results:
        write_per_image_csv(out_dir / "per_image_metrics.csv", results, class_names, image_ids)
        if render is not None and num_overlays > 0:
            for old in out_dir.glob("overlay_*.png"):
                old.unlink()
            class_iou = results["image_class_iou"]
            ranking = class_iou.double().nanmean(1)
            best, worst = extremes(ranking, num_overlays)
            picks = [  # (file kind, row, caption)
                (kind, row, f"IoU of the classes present {float(ranking[row]):.3f}")
                for kind, rows in (("best", best), ("worst", worst))
                for row in rows
            ]
            for k, (row, alone) in class_showcase(class_iou).items():
                what = f"only {class_names[k]}" if alone else f"best {class_names[k]}"
                picks.append(
                    (f"{'only' if alone else 'most'}{k}", row, f"{what}, IoU {float(class_iou[row, k]):.3f}")
                )
            rendered: dict[int, tuple] = {}  # a row picked twice is predicted once
            for kind, row, caption in picks:
                if row not in rendered:
                    rendered[row] = render(row)
                image, truth, pred = rendered[row]
                save_png(
                    comparison(image, truth, pred, class_colors, f"{image_ids[row]}: {caption}"),
                    out_dir / f"overlay_{kind}_{image_ids[row]}.png",
                )
    write_metrics_json(out_dir / "metrics.json", metrics)  # last: its presence means the set is complete
    return metrics
