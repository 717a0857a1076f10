"""Merge a 3-class model's predicted labels (background / rbc / wbc) into cell / no cell.

A model trained on the built-in synthetic smears predicts red and white cells; the real smear
fields mask every cell as one class. This writes, for every ``<stem>_labels.png`` of a predict
output folder, ``<stem>.png`` with class id 1 where the model saw any cell and 0 elsewhere, for
``python -m bloodseg.evaluate pred_dir=OUT gt_dir=.../val/masks data=smear_fields``.

Usage: python experiments/smear_fields/merge_cell_classes.py PREDICT_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(predict_dir: str, out_dir: str) -> None:
    """Write the merged index PNGs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = sorted(Path(predict_dir).glob("*_labels.png"))
    for path in labels:
        ids = np.asarray(Image.open(path))  # palette PNG: pixel value = class id
        Image.fromarray((ids > 0).astype(np.uint8)).save(
            out / (path.name.removesuffix("_labels.png") + ".png")
        )
    print(f"{len(labels)} label maps merged into cell / no cell in {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
