"""The paper's Figures 4 and 5 drawn from arrays: unlabelled pixels marked, counts and weights shown."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from bloodseg.constants import IGNORE_INDEX
from bloodseg.evaluation.artifacts import class_showcase
from bloodseg.viz.paper import UNLABELLED_COLOR, figure4, figure5

NAMES, COLORS = ["background", "rbc", "wbc"], [(255, 255, 0), (0, 0, 255), (0, 255, 0)]


def magenta_pixels(path) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    return int((rgb == np.asarray(UNLABELLED_COLOR)).all(1).sum())


def test_figure4_marks_unlabelled_pixels_only_where_there_are_some(tmp_path):
    image = np.full((48, 64, 3), 200, np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 10:30] = 1
    clean = figure4(image, mask, NAMES, COLORS, tmp_path / "clean.png")
    mask[:, 40:] = IGNORE_INDEX  # a third of the picture unlabelled
    marked = figure4(image, mask, NAMES, COLORS, tmp_path / "marked.png")
    # the legend's hatch edge is magenta in both; the hatched area adds many more magenta pixels
    assert magenta_pixels(marked) > magenta_pixels(clean) + 500


def test_figure5_draws_pixel_counts_beside_the_weights(tmp_path):
    path = figure5(
        NAMES, [116756, 54798, 4767], [0.469, 1.0, 10.696], "median_frequency", tmp_path / "f5.png"
    )
    picture = Image.open(path)
    assert picture.size[0] > picture.size[1] > 200  # two panels side by side
    orange = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    assert ((orange == (224, 123, 26)).all(1)).sum() > 1000  # the weight bars (#e07b1a) are drawn


def test_class_showcase_prefers_images_with_that_cell_class_alone():
    nan = float("nan")
    # rows: images; columns: background, rbc, wbc IoU (NaN: the class is on neither truth nor prediction)
    class_iou = torch.tensor(
        [
            [0.9, 0.80, 0.70],  # both cell classes
            [0.9, 0.60, nan],  # rbc alone
            [0.9, 0.95, 0.10],  # the best rbc IoU, but wbc is there too
            [0.9, nan, nan],  # background only
        ]
    )
    assert class_showcase(class_iou) == {1: (1, True), 2: (0, False)}  # no wbc-only image: the best wbc IoU
    assert class_showcase(torch.tensor([[1.0, nan, nan]])) == {}  # no cell class anywhere
