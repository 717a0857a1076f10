"""Mean IoU, mean BF, whole-cell Dice (cytoplasm + nucleus against background) and per-class Dice of
finished runs, per group of runs.

    python experiments/cellavision/whole_cell.py LABEL=DIR[,DIR...] ... > whole_cell.md

Reads each job's metrics.json (its test confusion matrix and class Dice) in the folders of a label
(a multirun folder: its jobs' */metrics.json; an evaluate output folder: its own metrics.json) and prints one Markdown row per label: mean +- std over those jobs (the seeds), n jobs.
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


def metrics_files(folder: Path) -> list[Path]:
    """The folder's own metrics.json (an evaluate output), else its jobs' */metrics.json (a multirun)."""
    own = folder / "metrics.json"
    return [own] if own.is_file() else sorted(folder.glob("*/metrics.json"))


def main(groups: list[str]) -> None:
    print(
        "| configuration | jobs | mean IoU | mean BF | whole-cell Dice | "
        + " | ".join(["background Dice", "cytoplasm Dice", "nucleus Dice"])
        + " |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for group in groups:
        label, _, folders = group.partition("=")
        sweeps = [Path(f) for f in folders.split(",")]
        files = [p for sweep in sweeps for p in metrics_files(sweep)]
        runs = [json.loads(p.read_text()) for p in files]
        if not runs:
            sys.exit(f"{group}: no metrics.json; give LABEL=multirun or evaluate folder(s) of finished jobs")
        cell = [foreground_dice(r["confusion_matrix"]["counts"]) for r in runs]
        classes = [
            [r["classes"][name]["dice"] for r in runs] for name in ("background", "cytoplasm", "nucleus")
        ]
        dataset = [spread([r["dataset"][key] for r in runs]) for key in ("mean_iou", "mean_bf_score")]
        print(
            f"| {label} | {len(runs)} | {' | '.join(dataset)} | {spread(cell)} | "
            + " | ".join(spread(c) for c in classes)
            + " |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
