"""Dice of merged classes from a confusion matrix, against hand counts and a pixel-level reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bloodseg.metrics.merged import foreground_dice, merged_dice


def test_hand_computed_whole_cell_dice():
    # rows true (background, cytoplasm, nucleus), columns predicted
    confusion = [[90, 6, 4], [2, 30, 8], [0, 5, 55]]
    # cell = cytoplasm + nucleus: TP = 30+8+5+55 = 98, FP = 6+4 = 10, FN = 2+0 = 2
    assert foreground_dice(confusion) == pytest.approx(196 / 208)
    assert merged_dice(confusion, [2]) == pytest.approx(110 / (110 + 12 + 5))  # the nucleus alone


@pytest.mark.parametrize("seed", range(5))
def test_merged_dice_equals_dice_of_the_merged_masks(seed):
    rng = np.random.default_rng(seed)
    truth, prediction = rng.integers(0, 4, (2, 50, 60))
    members = sorted(rng.choice(4, size=int(rng.integers(1, 4)), replace=False).tolist())
    confusion = np.zeros((4, 4), dtype=np.int64)
    np.add.at(confusion, (truth.ravel(), prediction.ravel()), 1)
    a, b = np.isin(truth, members), np.isin(prediction, members)
    assert merged_dice(confusion, members) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_no_positive_pixel_anywhere_is_nan():
    assert math.isnan(merged_dice([[5, 0], [0, 0]], [1]))
