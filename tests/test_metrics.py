"""Confusion-matrix metrics and the BF score against hand-computed cases and a scipy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from bloodseg.metrics.boundary import BoundaryF1Score, bf_scores, boundaries
from bloodseg.metrics.confusion import SegmentationConfusion, confusion_summary
from bloodseg.metrics.suite import SegmentationMetrics

nan = float("nan")

# Hand-computed case (255 = ignore):
GT = torch.tensor([[0, 0, 1, 255], [2, 2, 1, 1]])
PRED = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 0]])
# labelled pairs (true, pred): (0,0) (0,1) (1,1) (2,2) (2,0) (1,1) (1,0)
# C = [[1,1,0],[1,2,0],[1,0,1]]; trace 4 of 7; rows 2,3,2; columns 3,3,1
EXPECTED = {
    "global_accuracy": 4 / 7,
    "class_accuracy": [1 / 2, 2 / 3, 1 / 2],
    "mean_accuracy": (1 / 2 + 2 / 3 + 1 / 2) / 3,
    "class_iou": [1 / 4, 2 / 4, 1 / 2],  # 1/(2+3-1), 2/(3+3-2), 1/(2+1-1)
    "mean_iou": (1 / 4 + 1 / 2 + 1 / 2) / 3,
    "weighted_iou": 2 / 7 * 1 / 4 + 3 / 7 * 1 / 2 + 2 / 7 * 1 / 2,
}


def check(results, expected):
    for key, value in expected.items():
        torch.testing.assert_close(
            results[key].double(), torch.tensor(value, dtype=torch.float64), equal_nan=True
        )


def test_confusion_metrics_by_hand():
    metric = SegmentationConfusion(3)
    metric.update(PRED[None], GT[None])
    results = metric.compute()
    assert results["counts"].tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    check(results, EXPECTED)


def test_batches_accumulate_like_one_batch():
    metric = SegmentationConfusion(3)
    metric.update(PRED[:1][None], GT[:1][None])
    metric.update(PRED[1:][None], GT[1:][None])
    check(metric.compute(), EXPECTED)


def test_class_absent_everywhere_is_left_out_of_the_means():
    metric = SegmentationConfusion(4)
    metric.update(PRED[None], GT[None])
    results = metric.compute()
    assert math.isnan(results["class_accuracy"][3]) and math.isnan(results["class_iou"][3])
    check(results, {k: v for k, v in EXPECTED.items() if not k.startswith("class_")})


def test_class_never_predicted_and_class_only_predicted():
    gt = torch.tensor([[0, 0, 2, 2]])
    pred = torch.tensor([[0, 1, 0, 0]])  # class 2 never predicted; class 1 predicted but absent
    results = confusion_summary(torch.tensor([[1, 1, 0], [0, 0, 0], [2, 0, 0]]))
    metric = SegmentationConfusion(3)
    metric.update(pred[None], gt[None])
    assert metric.compute()["counts"].tolist() == [[1, 1, 0], [0, 0, 0], [2, 0, 0]]
    # acc: c0 1/2, c1 NaN (absent), c2 0; IoU: c0 1/(2+3-1), c1 0/(0+1-0) = 0, c2 0
    check(
        results,
        {
            "class_accuracy": [0.5, nan, 0.0],
            "mean_accuracy": 0.25,
            "class_iou": [0.25, 0.0, 0.0],
            "mean_iou": 0.25 / 3,
            "global_accuracy": 0.25,
            "weighted_iou": 0.5 * 0.25,
        },
    )


def test_all_ignored_gives_nan_not_a_crash():
    results = confusion_summary(torch.zeros(3, 3))
    assert all(
        math.isnan(float(results[k]))
        for k in ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou")
    )


# ---- BF score -------------------------------------------------------------------------------
def square(size, top, left, side):
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[top : top + side, left : left + side] = 1
    return mask


def test_bf_by_hand_shifted_square():
    """8x8, a 4x4 square shifted right by 2 (touching the edge), tolerance exactly 1 px.

    Truth boundary: the 12-pixel ring. Prediction boundary: 10 pixels (the image edge is not a boundary).
    Within 1 px: 8 of 10 predicted (P = 4/5), 8 of 12 true (R = 2/3): BF = 8/11.
    """
    truth, pred = square(8, 2, 2, 4), square(8, 2, 4, 4)
    assert int(boundaries(truth == 1).sum()) == 12 and int(boundaries(pred == 1).sum()) == 10
    score = bf_scores(pred[None], truth[None], 2, tolerance=1 / math.sqrt(128))
    assert score[0, 1].item() == pytest.approx(8 / 11, abs=1e-12)


def test_bf_nan_and_zero_rules():
    truth = square(10, 2, 2, 4)
    empty = torch.zeros(10, 10, dtype=torch.long)
    scores = bf_scores(torch.stack([truth, empty, truth]), torch.stack([truth, truth, empty]), 3)
    assert scores[0].tolist()[:2] == [1.0, 1.0] and math.isnan(scores[0, 2])  # class 2 nowhere: NaN
    assert scores[1, 1] == 0.0  # empty prediction of a true class: 0
    assert scores[2, 1] == 0.0  # predicted class absent from the truth: 0
    whole = torch.ones(1, 6, 6, dtype=torch.long)
    assert math.isnan(bf_scores(whole, whole, 2)[0, 1])  # the class fills the image: no boundary at all


def test_ignore_pixels_count_as_not_the_class():
    truth = square(10, 2, 2, 4)
    truth_with_ignore = truth.clone()
    truth_with_ignore[2:6, 2:4] = 255  # half the square unlabelled: its boundary moves
    pred = truth.clone()
    a = bf_scores(pred[None], truth_with_ignore[None], 2)[0, 1]
    expected = reference_bf(pred.numpy(), truth_with_ignore.numpy(), 2, 0.0075)[1]
    assert a.item() == pytest.approx(expected) and a < 1.0


def reference_bf(pred: np.ndarray, truth: np.ndarray, num_classes: int, tolerance: float) -> np.ndarray:
    """Independent CPU reference: scipy erosion (4-connectivity, border kept) + exact EDT."""
    height, width = truth.shape
    limit = tolerance * math.hypot(height, width)
    cross = ndimage.generate_binary_structure(2, 1)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        p, t = pred == c, truth == c
        pb = p & ~ndimage.binary_erosion(p, cross, border_value=1)
        tb = t & ~ndimage.binary_erosion(t, cross, border_value=1)
        if not pb.any() and not tb.any():
            continue
        if not pb.any() or not tb.any():
            out[c] = 0.0
            continue
        precision = (ndimage.distance_transform_edt(~tb)[pb] <= limit).mean()
        recall = (ndimage.distance_transform_edt(~pb)[tb] <= limit).mean()
        out[c] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


def random_labels(rng, classes, height, width, smooth):
    return ndimage.gaussian_filter(rng.standard_normal((classes, height, width)), smooth).argmax(0)


def test_bf_matches_scipy_reference_on_300_random_masks():
    rng = np.random.default_rng(2024)
    for trial in range(300):
        height, width = (int(v) for v in rng.integers(4, 130, 2))
        classes = int(rng.integers(2, 6))
        truth = random_labels(rng, classes, height, width, rng.uniform(0.4, 5))
        pred = np.where(
            rng.random((height, width)) < rng.uniform(0.3, 0.95),
            truth,
            random_labels(rng, classes, height, width, rng.uniform(0.4, 5)),
        )
        truth[rng.random((height, width)) < 0.03] = 255
        tolerance = float(rng.choice([0.0075, 0.015, 0.04, 0.1]))
        ours = bf_scores(torch.from_numpy(pred)[None], torch.from_numpy(truth)[None], classes, tolerance)[
            0
        ].numpy()
        expected = reference_bf(pred, truth, classes, tolerance)
        np.testing.assert_allclose(ours, expected, atol=1e-6, equal_nan=True, err_msg=f"trial {trial}")


def test_bf_batch_equals_one_image_at_a_time():
    rng = np.random.default_rng(5)
    truth = torch.from_numpy(np.stack([random_labels(rng, 3, 40, 50, 2) for _ in range(4)]))
    pred = torch.from_numpy(np.stack([random_labels(rng, 3, 40, 50, 2) for _ in range(4)]))
    batch = bf_scores(pred, truth, 3)
    single = torch.cat([bf_scores(pred[i : i + 1], truth[i : i + 1], 3) for i in range(4)])
    torch.testing.assert_close(batch, single, equal_nan=True)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_bf_averaging_follows_matlab():
    """Class mean = nan-mean over images; image score = nan-mean over classes; dataset = nan-mean of images."""
    metric = BoundaryF1Score(3)
    metric.scores.append(
        torch.tensor([[1.0, 0.5, nan], [0.0, nan, nan], [0.5, 0.5, 0.2]], dtype=torch.float64)
    )
    metric.image_index.append(torch.tensor([2, 0, 1]))
    results = metric.compute()
    assert results["image_index"].tolist() == [0, 1, 2]
    torch.testing.assert_close(results["class_bf_score"], torch.tensor([0.5, 0.5, 0.2], dtype=torch.float64))
    torch.testing.assert_close(results["image_bf_score"], torch.tensor([0.0, 0.4, 0.75], dtype=torch.float64))
    assert results["mean_bf_score"].item() == pytest.approx((0.0 + 0.4 + 0.75) / 3)


def test_suite_combines_dataset_per_image_and_bf():
    rng = np.random.default_rng(9)
    truth = torch.from_numpy(np.stack([random_labels(rng, 3, 30, 40, 2) for _ in range(5)]))
    pred = torch.from_numpy(np.stack([random_labels(rng, 3, 30, 40, 2) for _ in range(5)]))
    suite = SegmentationMetrics(3)
    suite.update(pred[3:], truth[3:], torch.tensor([3, 4]))
    suite.update(pred[:3], truth[:3], torch.tensor([0, 1, 2]))
    results = suite.compute()
    assert results["image_index"].tolist() == [0, 1, 2, 3, 4] and int(results["num_images"]) == 5
    for i in range(5):
        single = confusion_summary(torch.bincount((truth[i] * 3 + pred[i]).flatten(), minlength=9).view(3, 3))
        torch.testing.assert_close(results["image_mean_iou"][i], single["mean_iou"])
        torch.testing.assert_close(
            results["image_class_bf_score"][i],
            bf_scores(pred[i : i + 1], truth[i : i + 1], 3)[0],
            equal_nan=True,
        )
    suite.reset()
    assert suite.boundary.scores == [] and int(suite.dataset.confmat.sum()) == 0


def test_dice_by_hand():
    # C = [[1,1,0],[1,2,0],[1,0,1]]: rows 2,3,2; columns 3,3,1; dice_c = 2 C[c,c] / (row_c + col_c)
    metric = SegmentationConfusion(3)
    metric.update(PRED[None], GT[None])
    dice = [2 * 1 / (2 + 3), 2 * 2 / (3 + 3), 2 * 1 / (2 + 1)]
    check(metric.compute(), {"class_dice": dice, "mean_dice": sum(dice) / 3})
    # a class in neither ground truth nor prediction is NaN and left out of the mean
    absent = SegmentationConfusion(4)
    absent.update(PRED[None], GT[None])
    check(absent.compute(), {"class_dice": [*dice, nan], "mean_dice": sum(dice) / 3})


def test_dice_is_two_iou_over_one_plus_iou_on_random_maps():
    rng = np.random.default_rng(5)
    truth = torch.from_numpy(np.stack([random_labels(rng, 4, 20, 30, 2) for _ in range(3)]))
    pred = torch.from_numpy(np.stack([random_labels(rng, 4, 20, 30, 2) for _ in range(3)]))
    results = SegmentationConfusion(4).forward(pred, truth)
    iou = results["class_iou"]
    torch.testing.assert_close(results["class_dice"], 2 * iou / (1 + iou), equal_nan=True)


def test_confusion_update_matches_torchmetrics_functional_reference():
    """The device-side (sync-free) update counts exactly what torchmetrics' own confusion matrix counts."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    generator = torch.Generator().manual_seed(3)
    target = torch.randint(0, 5, (4, 17, 23), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.2] = 255
    pred = torch.randint(0, 5, (4, 17, 23), generator=generator)
    metric = SegmentationConfusion(5)
    metric.update(pred[:1], target[:1])
    metric.update(pred[1:], target[1:])
    reference = multiclass_confusion_matrix(pred, target, 5, ignore_index=255)
    assert torch.equal(metric.compute()["counts"], reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host synchronisation exists only on CUDA")
def test_confusion_update_never_waits_for_the_gpu():
    metric = SegmentationConfusion(3).cuda()
    pred = torch.randint(0, 3, (2, 64, 64), device="cuda")
    target = torch.randint(0, 3, (2, 64, 64), device="cuda")
    target[:, :4] = 255
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metric.update(pred, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(metric.confmat.sum()) == 2 * 60 * 64
