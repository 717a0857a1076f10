"""The per-epoch history of a run, read back from its csv/metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path

Series = dict[str, list[tuple[float, float]]]


def read_curves(run_dir: Path) -> Series:
    """Per-epoch series of csv/metrics.csv: {key: [(epoch, value), ...]} (the learning rate included,
    step-wise rows left out); empty when the run has no csv/metrics.csv."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    series: Series = {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        epoch = row.get("epoch") or ""
        for key, text in row.items():
            if key in ("epoch", "step") or key is None or text in ("", None):
                continue
            try:
                value = float(text)
            except ValueError:
                continue
            if key.startswith("lr-"):  # LearningRateMonitor rows carry a step, no epoch: one per epoch
                series.setdefault(key, []).append((float(len(series.get(key, []))), value))
            elif epoch != "" and not key.endswith("_step"):
                series.setdefault(key, []).append((float(epoch), value))
    return {key: sorted(points) for key, points in series.items()}


def class_names_of(series: Series) -> list[str]:
    """The class names of the per-class series (``<split>/iou/<class>``), in first-seen order."""
    names: list[str] = []
    for key in series:
        parts = key.split("/")
        if len(parts) == 3 and parts[2] not in names:
            names.append(parts[2])
    return names
