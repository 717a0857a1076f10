"""The LightningModule's per-epoch training metrics: exactly the confusion of the training step's own predictions."""

from __future__ import annotations

import csv
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from bloodseg.training.module import SegmentationModule

META = {
    "class_names": ["background", "rbc", "wbc"],
    "class_colors": [[255, 255, 0], [0, 0, 255], [0, 255, 0]],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


def batches():
    """Three fixed batches of uint8 images and masks (some pixels ignored)."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for i in range(3):
        image = torch.randint(0, 256, (2, 3, 12, 16), dtype=torch.uint8, generator=generator)
        mask = torch.randint(0, 3, (2, 12, 16), dtype=torch.uint8, generator=generator)
        mask[:, :2] = 255
        out.append({"image": image, "mask": mask, "index": torch.tensor([2 * i, 2 * i + 1])})
    return out


def test_train_metrics_are_the_confusion_of_the_training_predictions(tmp_path):
    """With lr 0 the weights never move, so the logged train/* values can be recomputed by hand."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    module = SegmentationModule(net, torch.ones(3), META, optimizer=partial(torch.optim.SGD, lr=0.0))
    data = batches()
    loader = DataLoader(data, batch_size=None)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader)

    counts = np.zeros((3, 3), dtype=np.int64)  # independent count with numpy
    with torch.no_grad():
        for batch in data:
            pred = module(batch["image"]).argmax(1).numpy().ravel()
            truth = batch["mask"].numpy().ravel().astype(np.int64)
            keep = truth != 255
            np.add.at(counts, (truth[keep], pred[keep]), 1)
    rows, cols, diag = counts.sum(1), counts.sum(0), np.diag(counts)
    with np.errstate(invalid="ignore"):
        iou = diag / (rows + cols - diag)
        dice = 2 * diag / (rows + cols)
    expected = {
        "train/global_accuracy": diag.sum() / counts.sum(),
        "train/mean_iou": np.nanmean(iou),
        "train/mean_dice": np.nanmean(dice),
        **{f"train/iou/{n}": iou[i] for i, n in enumerate(META["class_names"])},
        **{f"train/accuracy/{n}": diag[i] / rows[i] for i, n in enumerate(META["class_names"])},
    }
    with open(tmp_path / "metrics.csv", newline="") as handle:
        logged = [r for r in csv.DictReader(handle) if r.get("train/mean_iou")]
    assert [int(r["epoch"]) for r in logged] == [0, 1]  # every epoch, counted afresh (no accumulation)
    for row in logged:
        for key, value in expected.items():
            assert float(row[key]) == pytest.approx(value, abs=1e-6), key
