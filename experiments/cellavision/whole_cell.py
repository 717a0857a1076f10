"""Whole-cell Dice (cytoplasm + nucleus against background) and per-class Dice of finished runs, per sweep.

    python experiments/cellavision/whole_cell.py LABEL=SWEEP_DIR[,SWEEP_DIR...] ... > whole_cell.md

Reads each job's metrics.json (its test confusion matrix and class Dice) in the sweep folders of
a label and prints one Markdown row per label: mean +- std over those jobs (the seeds), n jobs.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from bloodseg.metrics.merged import foreground_dice


def spread(values: list[float]) -> str:
    """mean +- sample std, or the value alone for one job."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(groups: list[str]) -> None:
    print(
        "| configuration | jobs | whole-cell Dice | "
        + " | ".join(["background Dice", "cytoplasm Dice", "nucleus Dice"])
        + " |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for group in groups:
        label, _, folders = group.partition("=")
        sweeps = [Path(f) for f in folders.split(",")]
        runs = [json.loads(p.read_text()) for sweep in sweeps for p in sorted(sweep.glob("*/metrics.json"))]
        if not runs:
            sys.exit(f"{group}: no */metrics.json; give LABEL=multirun folder(s) of finished jobs")
        cell = [foreground_dice(r["confusion_matrix"]["counts"]) for r in runs]
        classes = [
            [r["classes"][name]["dice"] for r in runs] for name in ("background", "cytoplasm", "nucleus")
        ]
        print(
            f"| {label} | {len(runs)} | {spread(cell)} | "
            + " | ".join(spread(c) for c in classes)
            + " |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
