"""Tiled vs untiled SegNet predictions with a trained checkpoint, against the ground truth.

Mosaics of 2x3 CellaVision test crops, each resized to the checkpoint's training size, are
predicted twice: `predict.mode=tile` (overlapping tiles of the training size, blended logits) and
one forward pass over the whole mosaic. Prints the pixel accuracy of each against the ground
truth and their agreement.

    .venv/bin/python experiments/tiling/measure.py RUN_DIR [DATA_ROOT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bloodseg.builders import load_module
from bloodseg.predict import PredictMode, predict_image

VALUE_TO_CLASS = {0: 0, 128: 1, 255: 2}  # CellaVision mask values; anything else is ignored


def mosaic(pieces: list[np.ndarray]) -> np.ndarray:
    """Six equally sized arrays as two rows of three."""
    return np.concatenate([np.concatenate(pieces[:3], 1), np.concatenate(pieces[3:], 1)], 0)


def main(run_dir: Path, root: Path, mosaics: int = 5) -> dict:
    """Accuracy of tiled and untiled predictions on mosaics of the run's test crops, and agreement."""
    module = load_module(run_dir / "checkpoints" / "last.ckpt").eval()
    height, width = (int(v) for v in module.meta["image_size"])
    test = json.loads((run_dir / "split.json").read_text())["test"]
    lut = np.full(256, 255, np.uint8)
    for value, cls in VALUE_TO_CLASS.items():
        lut[value] = cls
    rng = np.random.default_rng(0)
    scores = {"tiled_accuracy": [], "untiled_accuracy": [], "agreement": []}
    for _ in range(mosaics):
        stems = rng.choice(test, 6, replace=False)
        image = mosaic(
            [np.asarray(Image.open(root / f"{s}.bmp").convert("RGB").resize((width, height))) for s in stems]
        )
        truth = mosaic(
            [
                lut[np.asarray(Image.open(root / f"{s}.png").convert("L").resize((width, height), 0))]
                for s in stems
            ]
        )
        tiled = predict_image(module, image, PredictMode.tile, overlap=0.25)
        with torch.inference_mode():
            untiled = module(torch.from_numpy(image.copy()).permute(2, 0, 1)[None]).argmax(1)[0].numpy()
        valid = truth != 255
        scores["tiled_accuracy"].append((tiled == truth)[valid].mean())
        scores["untiled_accuracy"].append((untiled == truth)[valid].mean())
        scores["agreement"].append((tiled == untiled).mean())
    return {key: round(float(np.mean(values)), 4) for key, values in scores.items()}


if __name__ == "__main__":
    data_root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("../shared/data/cellavision_wbc")
    print(json.dumps(main(Path(sys.argv[1]), data_root)))
