"""Counting error of bloodseg.inference.counting on synthetic label maps with known numbers of cells.

    .venv/bin/python experiments/counting/measure.py [--seeds 20]

Counts come from label maps (not from a network), so this measures the counting step alone:
1. disc fields: red-cell-sized (r 16-24 px) and white-cell-sized (r 30-45 px) discs, isolated,
   in touching pairs and in pairs overlapping by 20% of their summed radii;
2. the same fields with ragged boundaries (a smoothed-noise threshold), like a network's masks;
3. bloodseg.data.synthetic.generate_smear smears (SmearSpec gives the true numbers; cells cut
   by the edge, overlaps up to ~28%, and unlabelled pockets over some cells).
Prints a Markdown table and writes results.csv next to this file.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from scipy import ndimage

from bloodseg.data.synthetic import RBC, WBC, generate_smear
from bloodseg.inference.counting import disc_field
from bloodseg.metrics.cells import CountSettings, split_cells

SHAPE = (360, 480)
FIELDS = {  # name: (radius range, isolated, touching pairs, overlapping pairs)
    "rbc isolated": ((16, 24), 10, 0, 0),
    "rbc touching pairs": ((16, 24), 0, 6, 0),
    "rbc overlapping pairs (20%)": ((16, 24), 0, 0, 6),
    "rbc mixed": ((16, 24), 4, 3, 3),
    "wbc mixed": ((30, 45), 2, 1, 1),
}


def ragged(mask: np.ndarray, seed: int) -> np.ndarray:
    """The mask with ragged, network-like boundaries (wobbling by a few pixels) and the odd hole or speck."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(mask.shape), 2.0)
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 2.0)
    return soft + 0.2 * noise / noise.std() > 0.5


def errors_row(name: str, truth: list[int], counted: list[int]) -> dict:
    """Mean absolute, mean relative and mean signed error of counts against the truth."""
    truth_a, counted_a = np.asarray(truth, float), np.asarray(counted, float)
    diff = counted_a - truth_a
    return {
        "case": name,
        "images": len(truth),
        "mean_true_count": round(truth_a.mean(), 2),
        "mean_abs_error": round(np.abs(diff).mean(), 3),
        "mean_rel_error_pct": round(100 * (np.abs(diff) / np.maximum(truth_a, 1)).mean(), 2),
        "bias": round(diff.mean(), 3),
        "exact_images": int((diff == 0).sum()),
    }


def measure(seeds: int, settings: CountSettings) -> list[dict]:
    """One row per case."""
    rows = []
    for name, (radius, *groups) in FIELDS.items():
        for noisy in (False, True):
            truth, counted = [], []
            for seed in range(seeds):
                labels, known = disc_field(seed, SHAPE, radius, *groups, overlap=0.2)
                mask = labels == 1
                mask = ragged(mask, seed) if noisy else mask
                truth.append(known)
                counted.append(int(split_cells(mask, settings).max()))
            rows.append(errors_row(name + (", ragged edges" if noisy else ""), truth, counted))
    smears = [generate_smear(seed, *SHAPE) for seed in range(seeds)]
    for name, class_id, attr in (
        ("generate_smear rbc", RBC, "num_rbc"),
        ("generate_smear wbc", WBC, "num_wbc"),
    ):
        truth = [getattr(spec, attr) for _, _, spec in smears]
        counted = [int(split_cells(labels == class_id, settings).max()) for _, labels, _ in smears]
        rows.append(errors_row(name, truth, counted))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="fields per case")
    args = parser.parse_args()
    settings = CountSettings()  # the defaults of conf/predict.yaml
    rows = measure(args.seeds, settings)
    with open(Path(__file__).with_name("results.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"settings: {settings}")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + " --- |" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
