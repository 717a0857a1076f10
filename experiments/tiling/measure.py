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
from omegaconf import OmegaConf

from bloodseg.config import PredictMode
from bloodseg.data.labels import ClassTable
from bloodseg.data.loading import load_images
from bloodseg.data.sources import cellavision_pairs
from bloodseg.inference.tiling import predict_image
from bloodseg.training.checkpoints import load_module


def mosaic(pieces: list[np.ndarray]) -> np.ndarray:
    """Six equally sized arrays as two rows of three."""
    return np.concatenate([np.concatenate(pieces[:3], 1), np.concatenate(pieces[3:], 1)], 0)


def main(run_dir: Path, root: Path, mosaics: int = 5) -> dict:
    """Accuracy of tiled and untiled predictions on mosaics of the run's test crops, and agreement."""
    module = load_module(run_dir / "checkpoints" / "last.ckpt").eval()
    table = ClassTable.from_config(OmegaConf.load(run_dir / ".hydra" / "config.yaml").data.classes)
    test = set(json.loads((run_dir / "split.json").read_text())["test"])
    pairs = [pair for pair in cellavision_pairs(root) if pair.id in test]
    loaded = load_images(pairs, table, list(module.meta["image_size"]))  # the training resize
    images, masks = loaded.images.permute(0, 2, 3, 1).numpy(), loaded.masks.numpy()
    rng = np.random.default_rng(0)
    scores = {"tiled_accuracy": [], "untiled_accuracy": [], "agreement": []}
    for _ in range(mosaics):
        picked = rng.choice(len(pairs), 6, replace=False)
        image, truth = mosaic(list(images[picked])), mosaic(list(masks[picked]))
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
