"""Instance metrics (cells as objects) against hand-built cases and an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from skimage.draw import disk
from skimage.measure import label as sk_label
from skimage.measure import regionprops

from bloodseg.metrics.cells import CountSettings
from bloodseg.metrics.instances import (
    FIRST_TP,
    IOU_THRESHOLDS,
    MATCHED_IOU,
    MERGED,
    PREDICTED,
    SPLIT,
    TRUE,
    InstanceSettings,
    class_statistics,
    image_statistics,
    instance_scores,
    instances_block,
    iou_matrix,
    true_cells,
    without_edge_cells,
)
from bloodseg.metrics.suite import SegmentationMetrics


def square(shape, top, left, size, value=1, into=None):
    out = np.zeros(shape, np.int32) if into is None else into
    out[top : top + size, left : left + size] = value
    return out


# ---- true cells ---------------------------------------------------------------------------------
def test_diagonal_gap_separates_cells_and_specks_are_not_cells():
    mask = np.zeros((40, 40), bool)
    mask[2:12, 2:12] = True  # 100 px
    mask[12:22, 12:22] = True  # touches the first only at a corner: a separate cell under 4-connectivity
    mask[30:35, 30:35] = True  # 25 px speck
    cells = true_cells(mask, min_area=100)
    assert cells.max() == 2
    assert set(np.unique(cells[2:12, 2:12])) == {1} and set(np.unique(cells[12:22, 12:22])) == {2}
    assert (cells[30:35, 30:35] == 0).all()
    assert (
        sk_label(mask, connectivity=2).max() == 2
    )  # 8-connectivity would merge the pair (and keep the speck)


def test_edge_cells_are_removed_and_the_rest_renumbered():
    cells = square((30, 30), 0, 5, 6, 1)  # touches the top row
    square((30, 30), 10, 10, 6, 2, cells)
    square((30, 30), 20, 24, 6, 3, cells)  # touches the right column
    kept = without_edge_cells(cells)
    assert kept.max() == 1 and (kept[10:16, 10:16] == 1).all() and kept.sum() == 36


# ---- a hand-built image ---------------------------------------------------------------------------
def hand_case():
    """Three true 10x10 cells; predictions: A exact, B shifted by 3 px (IoU 70/130), C missed, one FP."""
    shape = (60, 60)
    truth = square(shape, 5, 5, 10, 1)
    square(shape, 5, 30, 10, 2, truth)
    square(shape, 30, 5, 10, 3, truth)
    pred = square(shape, 5, 5, 10, 1)
    square(shape, 5, 33, 10, 2, pred)
    square(shape, 40, 40, 10, 3, pred)
    return truth, pred


def test_hand_case_counts_at_every_threshold():
    truth, pred = hand_case()
    iou = iou_matrix(truth, pred)
    assert iou.shape == (3, 3)
    assert iou[0, 0] == 1.0 and iou[1, 1] == pytest.approx(70 / 130) and iou[2].sum() == 0
    row = image_statistics(truth, pred)
    assert row[TRUE] == 3 and row[PREDICTED] == 3
    # IoU 70/130 = 0.538: matched at t = 0.50 only
    assert row[FIRST_TP:].tolist() == [2] + [1] * 9
    assert row[MATCHED_IOU] == pytest.approx(1 + 70 / 130)
    scores = instance_scores(row[None])
    assert scores["f1_50"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert scores["precision_50"] == pytest.approx(2 / 3) and scores["recall_50"] == pytest.approx(2 / 3)
    assert scores["ap_50"] == pytest.approx(2 / 4) and scores["ap_75"] == pytest.approx(1 / 5)
    assert scores["ap_50_95"] == pytest.approx((2 / 4 + 9 * 1 / 5) / 10)
    assert scores["mean_matched_iou"] == pytest.approx((1 + 70 / 130) / 2)
    assert scores["count_error_mean_pct"] == 0.0


def test_count_errors_are_signed_mean_and_median_of_absolute_values():
    rows = np.zeros((4, FIRST_TP + len(IOU_THRESHOLDS)))
    rows[:, TRUE] = [10, 20, 50, 0]  # the last image has no true cell: left out of the count error
    rows[:, PREDICTED] = [11, 16, 50, 3]
    scores = instance_scores(rows)
    errors = [10.0, -20.0, 0.0]
    assert scores["count_error_mean_pct"] == pytest.approx(np.mean(errors))
    assert scores["count_error_median_abs_pct"] == pytest.approx(10.0)
    assert scores["images_counted"] == 3
    assert scores["true_cells"] == 80 and scores["predicted_cells"] == 80
    assert scores["f1_50"] == 0.0 and not math.isnan(scores["ap_50_95"])


def test_one_prediction_covering_two_true_cells_matches_at_most_one():
    shape = (30, 60)
    truth = square(shape, 5, 5, 10, 1)
    square(shape, 5, 16, 10, 2, truth)
    pred = np.zeros(shape, np.int32)
    pred[5:15, 5:26] = 1  # both cells and the gap: IoU 100/210 with each, below 0.5
    row = image_statistics(truth, pred)
    assert row[FIRST_TP] == 0
    pred[5:15, 5:18] = 1
    pred[5:15, 18:26] = 0  # IoU 100/130 with the first, 20/210 with the second
    row = image_statistics(truth, pred)
    assert row[FIRST_TP] == 1 and row[TRUE] == 2 and row[PREDICTED] == 1


def test_split_true_cells_and_merged_predictions_are_counted():
    shape = (40, 80)
    truth = square(shape, 5, 5, 20, 1)  # one true component (say, two overlapping cells kept as one)
    square(shape, 5, 40, 10, 2, truth)
    square(shape, 5, 52, 10, 3, truth)
    pred = np.zeros(shape, np.int32)
    pred[5:25, 5:15], pred[5:25, 15:25] = 1, 2  # the big component cut in two
    pred[5:15, 40:62] = 3  # the two small true cells (and the gap) as one prediction
    row = image_statistics(truth, pred)
    assert (row[SPLIT], row[MERGED]) == (1, 1)
    scores = instance_scores(row[None])
    assert (scores["split_true_cells"], scores["merged_predicted_cells"]) == (1, 1)
    assert image_statistics(truth, truth)[[SPLIT, MERGED]].tolist() == [0, 0]


def test_edge_variants_differ_exactly_by_the_edge_cells():
    shape = (40, 40)
    truth_mask = np.zeros(shape, bool)
    truth_mask[0:10, 0:10] = True  # a cell cut by the corner
    truth_mask[20:30, 20:30] = True
    pred = square(shape, 20, 20, 10, 1)  # the program found only the interior cell
    excluded, included = class_statistics(truth_mask, pred, min_true_area=50)
    assert (excluded[TRUE], excluded[PREDICTED], excluded[FIRST_TP]) == (1, 1, 1)
    assert (included[TRUE], included[PREDICTED], included[FIRST_TP]) == (2, 1, 1)


# ---- an independent reference ------------------------------------------------------------------------
def random_instances(rng, shape, n, radius, jitter=0):
    """Instance map of up to n discs (later discs paint over earlier ones), ids in drawing order."""
    out = np.zeros(shape, np.int32)
    centres = []
    for i in range(n):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(*radius)
        rr, cc = disk((cy, cx), r, shape=shape)
        out[rr, cc] = i + 1
        centres.append((cy, cx, r))
    return out, centres


def reference_true_positives(truth_mask, predicted, min_area, thresholds):
    """TP at each threshold, written independently: scikit-image labelling, explicit per-pair masks,
    scipy's Hungarian assignment on the pairs that reach the threshold."""
    truth = sk_label(truth_mask, connectivity=1)
    true_regions = [r for r in regionprops(truth) if r.area >= min_area]
    pred_ids = [r.label for r in regionprops(predicted)]
    iou = np.zeros((len(true_regions), len(pred_ids)))
    for i, region in enumerate(true_regions):
        a = truth == region.label
        for j, pid in enumerate(pred_ids):
            b = predicted == pid
            union = np.logical_or(a, b).sum()
            iou[i, j] = np.logical_and(a, b).sum() / union if union else 0.0
    counts = []
    for t in thresholds:
        if iou.size == 0:
            counts.append(0)
            continue
        cost = np.where(iou >= t, -iou, 0.0)
        rows, cols = linear_sum_assignment(cost)
        counts.append(int((iou[rows, cols] >= t).sum()))
    return len(true_regions), len(pred_ids), counts


@pytest.mark.parametrize("seed", range(6))
def test_matches_an_independent_reference_on_random_fields(seed):
    rng = np.random.default_rng(seed)
    shape = (96, 128)
    truth_ids, centres = random_instances(rng, shape, 14, (5, 11))
    truth_mask = truth_ids > 0
    # predictions: the true discs moved and resized a little, some dropped, some invented
    pred = np.zeros(shape, np.int32)
    next_id = 1
    for cy, cx, r in centres:
        if rng.uniform() < 0.15:
            continue
        rr, cc = disk(
            (cy + rng.normal(0, 1.5), cx + rng.normal(0, 1.5)), r * rng.uniform(0.8, 1.2), shape=shape
        )
        pred[rr, cc] = next_id
        next_id += 1
    for _ in range(2):
        rr, cc = disk((rng.uniform(0, shape[0]), rng.uniform(0, shape[1])), 6, shape=shape)
        pred[rr, cc] = next_id
        next_id += 1
    present = np.unique(pred[pred > 0])
    renumber = np.zeros(pred.max() + 1, np.int32)
    renumber[present] = np.arange(1, len(present) + 1)
    pred = renumber[pred]

    n_true, n_pred, counts = reference_true_positives(truth_mask, pred, 30, IOU_THRESHOLDS)
    row = image_statistics(true_cells(truth_mask, 30), pred)
    assert (row[TRUE], row[PREDICTED]) == (n_true, n_pred)
    assert row[FIRST_TP:].astype(int).tolist() == counts
    assert counts[0] >= 1  # the case is not vacuous


def test_above_one_half_every_pair_is_unique():
    """At IoU > 0.5 a true cell can pair with at most one prediction: the matched pairs are exactly
    those above the threshold, whatever the assignment algorithm."""
    rng = np.random.default_rng(7)
    shape = (80, 80)
    truth, centres = random_instances(rng, shape, 10, (5, 9))
    pred = np.zeros(shape, np.int32)
    for i, (cy, cx, r) in enumerate(centres):
        rr, cc = disk((cy + 1, cx - 1), r, shape=shape)
        pred[rr, cc] = i + 1
    truth_cells = true_cells(truth > 0, 1)
    iou = iou_matrix(truth_cells, pred)
    row = image_statistics(truth_cells, pred)
    for i, t in enumerate(IOU_THRESHOLDS):
        if t > 0.5:
            assert row[FIRST_TP + i] == int((iou >= t).sum())
            assert ((iou >= t).sum(0) <= 1).all() and ((iou >= t).sum(1) <= 1).all()


# ---- through the metric suite ----------------------------------------------------------------------------
def test_suite_pools_images_in_dataset_order_across_batches():
    truth, pred = hand_case()
    target = torch.from_numpy((truth > 0).astype(np.int64))
    labels = torch.from_numpy((pred > 0).astype(np.int64))
    settings = InstanceSettings(min_true_area=50, cells=CountSettings(min_area=50, min_distance=3))
    suite = SegmentationMetrics(2, instances=settings)
    empty = torch.zeros_like(labels)
    suite.update(empty[None], target[None], torch.tensor([1]))  # image 1 first: nothing predicted
    suite.update(labels[None], target[None], torch.tensor([0]))
    rows = suite.compute()["instance_rows"]
    assert rows.shape == (2, 1, 2, FIRST_TP + len(IOU_THRESHOLDS))
    assert rows[0, 0, 1, FIRST_TP] == 2 and rows[1, 0, 1, PREDICTED] == 0 and rows[1, 0, 1, TRUE] == 3
    block = instances_block(rows.numpy(), ["background", "cell"], ["a", "b"], settings)
    scores = block["classes"]["cell"]["edge_included"]
    assert scores["true_cells"] == 6 and scores["predicted_cells"] == 3
    assert scores["recall_50"] == pytest.approx(2 / 6)
    assert scores["count_error_mean_pct"] == pytest.approx((0.0 - 100.0) / 2)
    assert scores["images"] == {"a": {"true": 3, "predicted": 3}, "b": {"true": 3, "predicted": 0}}
    assert block["settings"]["min_true_area"] == 50
