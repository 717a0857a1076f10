"""Evaluation results as files (metrics.json, confusion_matrix.csv) and the paper's tables as text."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import torch

DATASET_KEYS = ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score")
DATASET_LABELS = ("Global accuracy", "Mean accuracy", "Mean IoU", "Weighted IoU", "Mean BF Score")


def _number(value) -> float | None:
    """A plain float for JSON, None for a missing or NaN value."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def build_metrics(
    results: dict[str, Any], class_names: list[str], num_images: int, **extra
) -> dict[str, Any]:
    """The metrics.json document (GUIDE section 3) from evaluation results."""
    counts = results["counts"].double()
    rows = counts.sum(1, keepdim=True)
    percent = torch.where(rows > 0, 100.0 * counts / rows.clamp_min(1), torch.zeros_like(counts))
    class_bf = results.get("class_bf_score")
    return {
        "dataset": {key: _number(results.get(key)) for key in DATASET_KEYS},
        "classes": {
            name: {
                "accuracy": _number(results["class_accuracy"][i]),
                "iou": _number(results["class_iou"][i]),
                "mean_bf_score": _number(class_bf[i]) if class_bf is not None else None,
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
    """Table 1 (dataset metrics) and Table 2 (per-class accuracy / IoU / mean BF) in the paper's layout."""
    width = max(len(n) for n in [*metrics["classes"], *DATASET_LABELS]) + 2
    lines = [f"Table 1. Semantic segmentation metrics ({title}, {metrics['num_images']} images)"]
    for key, label in zip(DATASET_KEYS, DATASET_LABELS, strict=True):
        lines.append(f"  {label:<{width}}{_fmt(metrics['dataset'][key])}")
    lines.append("Table 2. Class metrics")
    lines.append(f"  {'':<{width}}{'Accuracy':<10}{'IoU':<10}Mean BF Score")
    for name, values in metrics["classes"].items():
        lines.append(
            f"  {name:<{width}}{_fmt(values['accuracy']):<10}{_fmt(values['iou']):<10}{_fmt(values['mean_bf_score'])}"
        )
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
        "| class | Accuracy | IoU | Mean BF Score |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {n} | {_fmt(v['accuracy'])} | {_fmt(v['iou'])} | {_fmt(v['mean_bf_score'])} |"
        for n, v in metrics["classes"].items()
    ]
    return "\n".join(lines) + "\n"
