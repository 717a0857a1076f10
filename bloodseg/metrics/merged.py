"""Dice of merged classes (e.g. whole cell = cytoplasm + nucleus) from a confusion matrix of pixel counts."""

from __future__ import annotations

import numpy as np


def merged_dice(confusion, members: list[int]) -> float:
    """Dice of the union of classes ``members`` against every other class, over all pixels counted.

    confusion: (K, K) pixel counts, rows the true class, columns the predicted one (as in
    metrics.json). A pixel is positive when its class is in ``members``: Dice = 2 TP / (2 TP + FP + FN).
    NaN when neither the truth nor the prediction has a positive pixel.
    """
    counts = np.asarray(confusion, dtype=np.float64)
    inside = np.zeros(len(counts), dtype=bool)
    inside[list(members)] = True
    true_positive = counts[np.ix_(inside, inside)].sum()
    false_positive = counts[np.ix_(~inside, inside)].sum()
    false_negative = counts[np.ix_(inside, ~inside)].sum()
    denominator = 2 * true_positive + false_positive + false_negative
    return float(2 * true_positive / denominator) if denominator else float("nan")


def foreground_dice(confusion, background: int = 0) -> float:
    """Dice of every class but ``background`` merged: the whole cell (all cell classes) against the rest."""
    return merged_dice(confusion, [k for k in range(len(confusion)) if k != background])
