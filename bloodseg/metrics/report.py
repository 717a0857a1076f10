"""Evaluation results as files (metrics.json, confusion_matrix.csv) and the paper's tables as text."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodseg.viz import comparison, confusion_matrix_figure, save_png

DATASET_KEYS = ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score", "mean_dice")
DATASET_LABELS = (
    "Global accuracy",
    "Mean accuracy",
    "Mean IoU",
    "Weighted IoU",
    "Mean BF Score",
    "Mean Dice",
)
CLASS_KEYS = ("accuracy", "iou", "mean_bf_score", "dice")  # per-class entries of metrics.json, Table 2
CLASS_LABELS = ("Accuracy", "IoU", "Mean BF Score", "Dice")


def _number(value) -> float | None:
    """A plain float for JSON, None for a missing or NaN value."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def build_metrics(
    results: dict[str, Any], class_names: list[str], num_images: int, **extra
) -> dict[str, Any]:
    """The metrics.json document from evaluation results: dataset metrics, per-class metrics, confusion matrix.

    Dice (``mean_dice``, per-class ``dice``) is not one of MATLAB's metrics; it is reported beside them
    because the white-cell literature compares on it.
    """
    counts = results["counts"].double()
    rows = counts.sum(1, keepdim=True)
    percent = torch.where(rows > 0, 100.0 * counts / rows.clamp_min(1), torch.zeros_like(counts))
    class_bf, class_dice = results.get("class_bf_score"), results.get("class_dice")
    return {
        "dataset": {key: _number(results.get(key)) for key in DATASET_KEYS},
        "classes": {
            name: {
                "accuracy": _number(results["class_accuracy"][i]),
                "iou": _number(results["class_iou"][i]),
                "mean_bf_score": _number(class_bf[i]) if class_bf is not None else None,
                "dice": _number(class_dice[i]) if class_dice is not None else None,
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": {
            "classes": list(class_names),
            "counts": counts.long().tolist(),
            "normalized_percent": [[round(float(v), 4) for v in row] for row in percent],
        },
        "num_images": int(num_images),
        **extra,
    }


def write_metrics_json(path: Path, metrics: dict[str, Any]) -> None:
    """Write metrics.json (strict JSON: missing values are null)."""
    path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")


def write_confusion_csv(path: Path, metrics: dict[str, Any]) -> None:
    """confusion_matrix.csv: one row per true class with its counts, then its row-normalised percentages."""
    cm = metrics["confusion_matrix"]
    names = cm["classes"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["true_class", *[f"pred_{n}_count" for n in names], *[f"pred_{n}_percent" for n in names]]
        )
        for name, counts, percent in zip(names, cm["counts"], cm["normalized_percent"], strict=True):
            writer.writerow([name, *counts, *percent])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.5f}"


def paper_tables(metrics: dict[str, Any], title: str = "test") -> str:
    """Table 1 (dataset metrics) and Table 2 (per-class accuracy / IoU / mean BF / Dice) in the paper's layout."""
    width = max(len(n) for n in [*metrics["classes"], *DATASET_LABELS]) + 2
    lines = [f"Table 1. Semantic segmentation metrics ({title}, {metrics['num_images']} images)"]
    for key, label in zip(DATASET_KEYS, DATASET_LABELS, strict=True):
        lines.append(f"  {label:<{width}}{_fmt(metrics['dataset'][key])}")
    lines.append("Table 2. Class metrics")
    lines.append(f"  {'':<{width}}" + "".join(f"{label:<15}" for label in CLASS_LABELS).rstrip())
    for name, values in metrics["classes"].items():
        cells = "".join(f"{_fmt(values.get(key)):<15}" for key in CLASS_KEYS).rstrip()
        lines.append(f"  {name:<{width}}{cells}")
    return "\n".join(lines)


def paper_tables_markdown(metrics: dict[str, Any], title: str = "test") -> str:
    """The same two tables as Markdown (metrics.md)."""
    lines = [
        f"### Table 1. Semantic segmentation metrics ({title}, {metrics['num_images']} images)",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    lines += [
        f"| {label} | {_fmt(metrics['dataset'][key])} |"
        for key, label in zip(DATASET_KEYS, DATASET_LABELS, strict=True)
    ]
    lines += [
        "",
        "### Table 2. Class metrics",
        "",
        "| class | " + " | ".join(CLASS_LABELS) + " |",
        "| --- |" + " --- |" * len(CLASS_KEYS),
    ]
    lines += [
        f"| {n} | " + " | ".join(_fmt(v.get(key)) for key in CLASS_KEYS) + " |"
        for n, v in metrics["classes"].items()
    ]
    return "\n".join(lines) + "\n"


def write_per_image_csv(
    path: Path, results: dict[str, Any], class_names: list[str], image_ids: list[str]
) -> None:
    """per_image_metrics.csv: one row per image with its accuracy, mean IoU, mean BF, mean Dice and
    per-class IoU / BF / Dice."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "image",
                "global_accuracy",
                "mean_iou",
                "mean_bf_score",
                "mean_dice",
                *[f"iou_{n}" for n in class_names],
                *[f"bf_{n}" for n in class_names],
                *[f"dice_{n}" for n in class_names],
            ]
        )
        for row, image_id in enumerate(image_ids):
            values = [
                results["image_global_accuracy"][row],
                results["image_mean_iou"][row],
                results["image_bf_score"][row],
                results["image_mean_dice"][row],
                *results["image_class_iou"][row],
                *results["image_class_bf_score"][row],
                *results["image_class_dice"][row],
            ]
            writer.writerow([image_id, *["" if (v := _number(x)) is None else f"{v:.6f}" for x in values]])


def extremes(scores: torch.Tensor, count: int) -> tuple[list[int], list[int]]:
    """Row numbers of the `count` best and `count` worst scores (NaN scores are never picked)."""
    valid = [
        i
        for i in torch.argsort(scores.double(), descending=True).tolist()
        if not math.isnan(float(scores[i]))
    ]
    count = min(count, len(valid) // 2 if len(valid) > 1 else len(valid))
    return valid[:count], valid[::-1][:count]


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
) -> dict[str, Any]:
    """Write every evaluation artifact of a split and return the metrics.json document.

    metrics.json, metrics.md, confusion_matrix.csv / .png, per_image_metrics.csv and, when
    ``render(row)`` gives (image or None, truth, prediction) for a row, overlays of the best and
    worst images by mean IoU (overlay_best_<id>.png, overlay_worst_<id>.png). Callers print the
    tables (the train command in its end-of-run summary, the evaluate command itself).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(results, class_names, len(image_ids), **(extra or {}))
    write_metrics_json(out_dir / "metrics.json", metrics)
    write_confusion_csv(out_dir / "confusion_matrix.csv", metrics)
    confusion_matrix_figure(
        np.asarray(metrics["confusion_matrix"]["counts"]),
        class_names,
        out_dir / "confusion_matrix.png",
        f"Normalized confusion matrix (%), {title}",
    )
    (out_dir / "metrics.md").write_text(paper_tables_markdown(metrics, title))
    if "image_mean_iou" in results:
        write_per_image_csv(out_dir / "per_image_metrics.csv", results, class_names, image_ids)
        if render is not None and num_overlays > 0:
            for old in out_dir.glob("overlay_*.png"):
                old.unlink()
            best, worst = extremes(results["image_mean_iou"], num_overlays)
            for kind, rows in (("best", best), ("worst", worst)):
                for row in rows:
                    image, truth, pred = render(row)
                    caption = f"{image_ids[row]}: mean IoU {float(results['image_mean_iou'][row]):.3f}"
                    save_png(
                        comparison(image, truth, pred, class_colors, caption),
                        out_dir / f"overlay_{kind}_{image_ids[row]}.png",
                    )
    return metrics
