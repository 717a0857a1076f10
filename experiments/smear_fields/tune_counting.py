"""Tune the cell-splitting settings on the training fields: instance F1@0.5 and count error per setting.

The true cells are the 4-connected components (>= 100 px) of the expert masks of ROOT/train. The
cell masks that get split are either predicted label maps (``--labels DIR`` holding predict's
``<stem>_labels.png``, class 1 = cell) or, without ``--labels``, the expert masks with their
1-px gaps closed (a 3x3 closing merges touching cells as a network's mask does).

Usage:
  python experiments/smear_fields/tune_counting.py ROOT [--labels DIR] [--every 5] [--out tune.csv]
Prints one row per setting (edge cells left out on both sides) and the best by F1, then by count error.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from bloodseg.metrics.cells import CountSettings, split_cells
from bloodseg.metrics.instances import class_statistics, instance_scores

GRID = {
    "min_distance": (8, 16, 24, 32, 40, 48),
    "smoothing": (1.0, 4.0),
    "min_cell_area": (80, 400, 1500),
}
MAX_HOLE_AREA = 300


def fields(root: Path, labels: Path | None, every: int):
    """(stem, true mask, cell mask to split) of every `every`-th training field."""
    for mask_path in sorted((root / "train" / "masks").glob("*.png"))[::every]:
        truth = np.asarray(Image.open(mask_path).convert("L")) == 255
        if labels is None:
            cells = ndimage.binary_closing(truth, np.ones((3, 3), bool))
        else:
            cells = np.asarray(Image.open(labels / f"{mask_path.stem}_labels.png")) == 1
        yield mask_path.stem, truth, cells


def main() -> None:
    """Run the grid and print/write its table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path)
    parser.add_argument("--labels", type=Path, default=None)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    data = list(fields(args.root, args.labels, args.every))
    settings = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    table = []
    for setting in settings:
        count = CountSettings(
            setting["min_cell_area"], setting["min_distance"], setting["smoothing"], MAX_HOLE_AREA
        )
        start = time.process_time()
        rows = np.stack([class_statistics(truth, split_cells(cells, count), 100) for _, truth, cells in data])
        scores = instance_scores(rows[:, 0])  # edge_excluded
        table.append(
            {
                **setting,
                "fields": len(data),
                "f1_50": round(scores["f1_50"], 4),
                "ap_50_95": round(scores["ap_50_95"], 4),
                "count_error_mean_pct": round(scores["count_error_mean_pct"], 2),
                "count_error_median_abs_pct": round(scores["count_error_median_abs_pct"], 2),
                "cpu_s_per_field": round((time.process_time() - start) / len(data), 2),
            }
        )
        print(table[-1], flush=True)
    best_f1 = max(table, key=lambda r: r["f1_50"])
    best_count = min(table, key=lambda r: r["count_error_median_abs_pct"])
    print("best F1@0.5:", best_f1)
    print("best median |count error|:", best_count)
    if args.out:
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)


if __name__ == "__main__":
    main()
