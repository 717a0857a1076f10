"""Metrics against hand-computed cases and an independent numpy/scipy implementation of MATLAB's rules."""

from __future__ import annotations

import math

import matlab_reference as ref
import numpy as np
import pytest
import torch
from scipy import ndimage

from bloodseg.errors import BloodsegError
from bloodseg.metrics.boundary import bf_scores, boundaries, match_limit, within_distance
from bloodseg.metrics.confusion import SegmentationConfusion, confusion_matrices, per_image_counts
from bloodseg.metrics.suite import SegmentationMetrics
from bloodseg.metrics.tables import build_metrics, paper_tables

nan = float("nan")
CURRENT, OLD = "matlab_current", "matlab_2017"


def close(actual, expected, what=""):
    np.testing.assert_allclose(
        np.asarray(torch.as_tensor(actual).double()), np.asarray(expected, dtype=np.float64),
        atol=1e-12, rtol=0, equal_nan=True, err_msg=what,
    )  # fmt: skip


def evaluate(preds, truths, classes, semantics=CURRENT, tolerance=0.0075):
    metric = SegmentationMetrics(classes, tolerance, semantics)
    for row, (pred, truth) in enumerate(zip(preds, truths, strict=True)):
        metric.update(torch.as_tensor(pred)[None], torch.as_tensor(truth)[None], torch.tensor([row]))
    return metric.compute()


# ---- confusion-matrix metrics, by hand ---------------------------------------------------------
# 255 = unlabelled. Labelled pairs (true, pred): (0,0) (0,1) (1,1) (2,2) (2,0) (1,1) (1,0);
# the unlabelled pixel (0,3) is predicted 2.
GT = torch.tensor([[0, 0, 1, 255], [2, 2, 1, 1]])
PRED = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 0]])
COUNTS = [[1, 1, 0], [1, 2, 0], [1, 0, 1]]  # rows 2, 3, 2; labelled columns 3, 3, 1
COMMON = {"global_accuracy": 4 / 7, "class_accuracy": [1 / 2, 2 / 3, 1 / 2]}
BY_RULES = {
    CURRENT: {  # the prediction at (0,3) is blanked: class 2 has 1 predicted pixel
        "class_iou": [1 / 4, 2 / 4, 1 / 2],  # 1/(2+3-1), 2/(3+3-2), 1/(2+1-1)
        "class_dice": [2 / 5, 4 / 6, 2 / 3],  # 2*1/(2+3), 2*2/(3+3), 2*1/(2+1)
        "weighted_iou": 2 / 7 * 1 / 4 + 3 / 7 * 1 / 2 + 2 / 7 * 1 / 2,
    },
    OLD: {  # the prediction counts at (0,3): class 2 union = {(1,0), (1,1), (0,3)}
        "class_iou": [1 / 4, 2 / 4, 1 / 3],
        "class_dice": [2 / 5, 4 / 6, 2 / 4],
        "weighted_iou": 2 / 7 * 1 / 4 + 3 / 7 * 1 / 2 + 2 / 7 * 1 / 3,
    },
}


@pytest.mark.parametrize("semantics", [CURRENT, OLD])
def test_confusion_metrics_by_hand(semantics):
    results = evaluate([PRED], [GT], 3, semantics)
    assert results["counts"].tolist() == COUNTS
    expected = {**COMMON, **BY_RULES[semantics]}
    expected["mean_accuracy"] = np.mean(expected["class_accuracy"])
    expected["mean_iou"] = np.mean(expected["class_iou"])
    expected["mean_dice"] = np.mean(expected["class_dice"])
    for key, value in expected.items():
        close(results[key], value, key)
        if key != "weighted_iou":  # one image: its per-image values are the dataset's
            close(results[f"image_{key}"][0], value, key)


def test_batches_accumulate_like_one_batch():
    one = SegmentationMetrics(3)
    one.update(PRED[None], GT[None])
    split = SegmentationMetrics(3)
    split.update(PRED[:1][None], GT[:1][None])
    split.update(PRED[1:][None], GT[1:][None])
    assert split.compute()["counts"].tolist() == one.compute()["counts"].tolist() == COUNTS


def test_class_absent_from_the_whole_set():
    """Current MATLAB keeps the NaN of a class in neither truth nor prediction; 2017 skipped it."""
    current, old = evaluate([PRED], [GT], 4, CURRENT), evaluate([PRED], [GT], 4, OLD)
    for results in (current, old):
        assert math.isnan(results["class_accuracy"][3]) and math.isnan(results["class_iou"][3])
    for key in ("mean_accuracy", "mean_iou", "mean_dice", "image_mean_accuracy", "image_mean_iou"):
        assert torch.isnan(current[key]).all(), key
    close(old["mean_accuracy"], np.mean(COMMON["class_accuracy"]))
    close(old["mean_iou"], np.mean(BY_RULES[OLD]["class_iou"]))
    close(old["image_mean_iou"][0], np.mean(BY_RULES[OLD]["class_iou"]))
    close(current["weighted_iou"], BY_RULES[CURRENT]["weighted_iou"])  # NaN term omitted
    assert math.isnan(old["weighted_iou"])  # 2017: rows * IoU summed with the NaN term


def test_class_missing_from_one_image_makes_that_image_nan_under_current_rules():
    truth = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])  # class 2 in neither
    current = evaluate([pred, GT], [truth, GT], 3, CURRENT)
    old = evaluate([pred, GT], [truth, GT], 3, OLD)
    assert math.isnan(current["image_mean_iou"][0]) and math.isnan(current["image_mean_accuracy"][0])
    close(old["image_mean_iou"][0], (1 / 2 + 2 / 3) / 2)  # IoU 1/2 (class 0), 2/3 (class 1)
    close(old["image_mean_accuracy"][0], (1 / 2 + 1) / 2)
    assert not math.isnan(current["mean_iou"])  # class 2 is in the other image


def test_all_unlabelled_gives_nan_not_a_crash():
    results = evaluate([PRED], [torch.full_like(GT, 255)], 3)
    for key in ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score"):
        assert math.isnan(results[key]), key


def test_stray_values_count_in_no_class():
    assert confusion_matrices(torch.tensor([[[0, 1, -1, 2]]]), torch.tensor([[[0, 7, 1, 255]]]), 3).sum() == 1


def test_unknown_rule_set_is_a_clear_error():
    with pytest.raises(BloodsegError, match="evaluation.semantics='matlab_2019'.*matlab_current"):
        SegmentationMetrics(3, semantics="matlab_2019")


# ---- BF score, by hand -------------------------------------------------------------------------
def square(height, width, top, left, side_h, side_w=None):
    mask = torch.zeros(height, width, dtype=torch.long)
    mask[top : top + side_h, left : left + (side_w or side_h)] = 1
    return mask


def tolerance_for(height, width, theta_squared):
    """A tolerance whose theta^2 is theta_squared (chosen between integers: no rounding question)."""
    return math.sqrt(theta_squared) / math.hypot(height, width)


def test_edge_pixels_are_boundary():
    """Zero padding: a square in the corner has its whole ring as boundary; a full image its frame."""
    corner = square(8, 8, 0, 0, 4).bool()
    assert int(boundaries(corner).sum()) == 12 and not boundaries(corner)[:4, :4][1:3, 1:3].any()
    full = boundaries(torch.ones(5, 6, dtype=torch.bool))
    assert int(full.sum()) == 2 * 6 + 2 * 3 and not full[1:4, 1:5].any()


def test_bf_by_hand_corner_square_one_pixel_smaller():
    """8x8, truth = 4x4 square in the corner, prediction = 3x3 in the corner, match when D <= 1.

    Rings: 12 true and 8 predicted pixels (the image edge is boundary). Every predicted pixel is
    within 1 px of the true ring (P = 1); of the true ring all but the far corner (3,3), which is
    sqrt(2) from (2,2), are (R = 11/12). BF = 1 / (0.5 * 12/11 + 0.5) = 22/23.
    """
    truth, pred = square(8, 8, 0, 0, 4), square(8, 8, 0, 0, 3)
    score = bf_scores(pred[None], truth[None], 2, tolerance_for(8, 8, 1.5))
    close(score[0, 1], 22 / 23)


def test_bf_by_hand_object_touching_the_border():
    """8x8, a 4x4 square (rows 2-5) shifted right by 2 so that it touches the right edge; D <= 1.

    Both rings have 12 pixels (the pixels on the image edge are boundary). Predicted ring within
    1 px of the true one: columns 4-6 of rows 2 and 5 and (3,4), (4,4): 8 of 12. True ring within
    1 px of the predicted one: columns 3-5 of rows 2 and 5 and (3,5), (4,5): 8 of 12. BF = 2/3.
    """
    truth, pred = square(8, 8, 2, 2, 4), square(8, 8, 2, 4, 4)
    assert int(boundaries(pred == 1).sum()) == 12
    score = bf_scores(pred[None], truth[None], 2, tolerance_for(8, 8, 1.5))
    close(score[0, 1], 2 / 3)


def test_bf_class_filling_the_image_scores_one_and_the_absent_class_nan():
    whole = torch.ones(1, 6, 6, dtype=torch.long)
    close(bf_scores(whole, whole, 2)[0], [nan, 1.0])


def test_bf_exact_tie_at_480x640_does_not_match():
    """480x640: theta = 0.75% of 800 = 6 exactly; a pixel 6 px away (D = 36) is not < 36.

    Truth = columns 0-319, prediction = columns 0-325 (full height). True boundary: columns 0 and
    319 and rows 0 / 479 between them: 480 + 480 + 2*318 = 1596 pixels; predicted: 480 + 480 +
    2*324 = 1608. Predicted column 325 is 6 px from everything true: 480 unmatched, so
    P = 1128/1608. True column 319 matches only within 5 rows of the top and bottom rows:
    12 of its 480, so R = 1128/1596. BF = 1128 / ((1596 + 1608) / 2) = 1128/1602.
    """
    assert match_limit(480, 640, 0.0075) == 35
    truth, pred = square(480, 640, 0, 0, 480, 320), square(480, 640, 0, 0, 480, 326)
    score = bf_scores(pred[None], truth[None], 2)
    close(score[0, 1], 1128 / 1602)
    close(score[0, 1], ref.bf_score(pred.numpy() == 1, truth.numpy() == 1))


def test_match_limit_is_strict_and_exact():
    assert match_limit(10, 10, 0.0) == -1  # theta = 0: nothing matches, not even D = 0
    assert match_limit(100, 100, 0.0075) == 1  # theta^2 = 1.125
    features = torch.zeros(1, 9, 9, dtype=torch.bool)
    features[0, 4, 4] = True
    rows, cols = np.indices((9, 9))
    distance = (rows - 4) ** 2 + (cols - 4) ** 2
    for limit in (-1, 0, 1, 2, 4, 5, 8, 9, 17, 100):
        assert np.array_equal(within_distance(features, limit)[0].numpy(), distance <= limit), limit


def test_bf_empty_prediction_empty_truth_and_no_match():
    truth = square(10, 10, 2, 2, 4)
    empty = torch.zeros(10, 10, dtype=torch.long)
    far = square(10, 10, 7, 7, 3)  # 3x3 in the opposite corner: every boundary pixel > theta away
    scores = bf_scores(torch.stack([empty, truth, far]), torch.stack([truth, empty, truth]), 2)
    assert math.isnan(scores[0, 1])  # class 1 not predicted: precision 0/0 = NaN
    assert math.isnan(scores[1, 1])  # class 1 predicted but absent from the truth: recall 0/0
    assert scores[2, 1] == 0.0  # both present, nothing matches: BF 0


def test_dataset_mean_bf_is_nan_when_an_image_is_all_nan():
    """Image 0: perfect (BF 1 for both classes). Image 1: truth all class 0, prediction all class 1:
    class 0 has no predicted boundary, class 1 no true one: NaN, NaN. Class means skip NaN, the
    image score of image 1 is NaN and so is the dataset mean."""
    good = square(10, 10, 2, 2, 4)
    results = evaluate(
        [good, torch.ones(10, 10, dtype=torch.long)], [good, torch.zeros(10, 10, dtype=torch.long)], 2
    )
    close(results["image_class_bf_score"], [[1.0, 1.0], [nan, nan]])
    close(results["class_bf_score"], [1.0, 1.0])
    close(results["image_bf_score"], [1.0, nan])
    assert math.isnan(results["mean_bf_score"])


def test_bf_averaging_follows_matlab():
    """Class mean = NaN-skipping mean over images; image = NaN-skipping mean over classes;
    dataset = plain mean of the image scores. Truth square vs prediction 1 px larger (D <= 1: BF 1)
    and vs an empty prediction (class 1 NaN)."""
    truth = square(12, 12, 3, 3, 5)
    tolerance = tolerance_for(12, 12, 1.5)
    results = evaluate([square(12, 12, 3, 3, 6), torch.zeros(12, 12, dtype=torch.long)], [truth, truth], 2,
                       tolerance=tolerance)  # fmt: skip
    per_image = results["image_class_bf_score"]
    assert math.isnan(per_image[1, 1]) and not math.isnan(per_image[1, 0])
    close(results["class_bf_score"], [per_image[:, 0].mean(), per_image[0, 1]])
    close(results["image_bf_score"], [per_image[0].mean(), per_image[1, 0]])
    close(results["mean_bf_score"], (per_image[0].mean() + per_image[1, 0]) / 2)


@pytest.mark.parametrize(("semantics", "bf", "iou"), [(CURRENT, 1.0, 1.0), (OLD, 18 / 31, 0.5)])
def test_unlabelled_pixels_under_both_rule_sets(semantics, bf, iou):
    """20x20, truth: class 1 = rows 5-14 x columns 5-9, unlabelled (255) = rows 5-14 x columns 10-14;
    prediction: class 1 on the whole 10x10 square. Tolerance 0.5 px (only D = 0 matches).

    Current rules blank the prediction at the unlabelled pixels: it equals the truth (BF 1, IoU 1).
    2017 rules do not: predicted ring 36 pixels, true ring 26, 18 in common: P = 1/2, R = 9/13,
    BF = 1 / (0.5 * 13/9 + 0.5 * 2) = 18/31; IoU of class 1 = 50 / 100.
    """
    truth = torch.zeros(20, 20, dtype=torch.long)
    truth[5:15, 5:10] = 1
    truth[5:15, 10:15] = 255
    pred = square(20, 20, 5, 5, 10)
    results = evaluate([pred], [truth], 2, semantics, tolerance=0.5 / math.hypot(20, 20))
    close(results["image_class_bf_score"][0, 1], bf)
    close(results["class_iou"][1], iou)
    assert results["counts"].tolist() == [[300, 0], [0, 50]]  # the confusion matrix is the same


# ---- against the independent reference ----------------------------------------------------------
def random_labels(rng, classes, height, width, smooth):
    return ndimage.gaussian_filter(rng.standard_normal((classes, height, width)), smooth).argmax(0)


def random_case(rng, height, width, classes):
    """Blob truth with unlabelled blobs and a rarely present class; the prediction a mix of shifted
    truth (by the tie distance too), other blobs, a dilated class and noise."""
    truth = random_labels(rng, classes, height, width, rng.uniform(0.5, 6))
    if rng.random() < 0.5:
        truth[truth == classes - 1] = 0  # the last class often absent
    shift = int(rng.choice([0, 1, 3, 6]))
    pred = np.roll(truth, (shift, int(rng.integers(-2, 3))), axis=(0, 1))
    other = random_labels(rng, classes, height, width, rng.uniform(0.5, 6))
    pred = np.where(rng.random((height, width)) < rng.uniform(0, 0.4), other, pred)
    if rng.random() < 0.3:
        pred = np.where(ndimage.binary_dilation(pred == 1, iterations=2), 1, pred)
    if rng.random() < 0.2:
        pred[pred == 2] = 0  # a class never predicted
    unlabelled = ndimage.gaussian_filter(rng.standard_normal((height, width)), 3) > rng.uniform(0.3, 2)
    truth = np.where(unlabelled, 255, truth)
    return pred.astype(np.int64), truth.astype(np.int64)


def compare(ours: dict, expected: dict, what: str) -> None:
    for key, value in expected.items():
        np.testing.assert_allclose(
            np.asarray(ours[key].double()), value, atol=1e-6, rtol=0, equal_nan=True, err_msg=f"{what}: {key}"
        )


@pytest.mark.parametrize("semantics", [CURRENT, OLD])
def test_matches_the_reference_on_random_datasets(semantics):
    rng = np.random.default_rng(2024)
    for trial in range(40):
        height, width = (int(v) for v in rng.integers(3, 120, 2))
        classes = int(rng.integers(2, 5))
        tolerance = float(rng.choice([0.0075, 0.0075, 0.02, 0.05]))
        cases = [random_case(rng, height, width, classes) for _ in range(int(rng.integers(1, 5)))]
        preds, truths = zip(*cases, strict=True)
        ours = evaluate(preds, truths, classes, semantics, tolerance)
        compare(ours, ref.evaluate(preds, truths, classes, semantics, tolerance), f"trial {trial}")


@pytest.mark.parametrize("size", [(240, 320), (480, 640), (300, 300)])
def test_matches_the_reference_at_exact_tie_sizes(size):
    """theta = 3 px at 240x320 and 6 px at 480x640 exactly (ties at D = 9 and 36); 300x300 the paper's."""
    rng = np.random.default_rng(size[0])
    cases = [random_case(rng, *size, 3) for _ in range(3)]
    preds, truths = zip(*cases, strict=True)
    for semantics in (CURRENT, OLD):
        compare(evaluate(preds, truths, 3, semantics), ref.evaluate(preds, truths, 3, semantics), str(size))


def test_batch_equals_one_image_at_a_time():
    rng = np.random.default_rng(5)
    cases = [random_case(rng, 40, 50, 3) for _ in range(4)]
    preds = torch.from_numpy(np.stack([p for p, _ in cases]))
    truths = torch.from_numpy(np.stack([t for _, t in cases]))
    batch = SegmentationMetrics(3)
    batch.update(preds[2:], truths[2:], torch.tensor([2, 3]))
    batch.update(preds[:2], truths[:2], torch.tensor([0, 1]))
    single = evaluate(list(preds), list(truths), 3)
    results = batch.compute()
    assert results["image_index"].tolist() == [0, 1, 2, 3] and int(results["num_images"]) == 4
    for key, value in single.items():
        assert torch.equal(results[key].nan_to_num(-1), value.nan_to_num(-1)), key
    batch.reset()
    assert batch.images.matrices == [] and batch.images.bf == []


# ---- what the reports say ------------------------------------------------------------------------
def test_reports_name_the_rules_and_explain_each_nan():
    good = square(10, 10, 2, 2, 4)
    truths = [good, torch.zeros(10, 10, dtype=torch.long)]
    preds = [good, torch.ones(10, 10, dtype=torch.long)]
    results = evaluate(preds, truths, 3)  # class 2 nowhere; image b is all-NaN for BF
    metrics = build_metrics(results, ["bg", "cell", "wbc"], 2, CURRENT, image_ids=["a", "b"])
    assert metrics["semantics"] == CURRENT and metrics["metrics_version"] == 2
    assert metrics["dataset"]["mean_iou"] is None and metrics["dataset"]["mean_bf_score"] is None
    notes = " ".join(metrics["nan_notes"])
    for words in ("Accuracy of wbc is NaN", "IoU and Dice of wbc", "Mean BF Score is NaN: image(s) b",
                  "Mean BF of wbc", "matlab_2017 skips it"):  # fmt: skip
        assert words in notes, words
    text = paper_tables(metrics)
    assert "Rules: evaluation.semantics=matlab_current" in text and "NaN: Mean BF Score is NaN" in text
    assert "Dice" in text and "Mean Dice" in text
    old = build_metrics(evaluate(preds, truths, 3, OLD), ["bg", "cell", "wbc"], 2, OLD, image_ids=["a", "b"])
    assert old["dataset"]["mean_iou"] is not None and "Weighted IoU is NaN" in " ".join(old["nan_notes"])


def test_per_image_counts_by_bincount_and_by_comparison_agree():
    """The deterministic-CUDA path (one comparison per bin) counts like the bincount path."""
    values = torch.from_numpy(np.random.default_rng(3).integers(-2, 12, (5, 7, 9)))
    by_bincount = per_image_counts(values, 10, by_comparison=False)
    assert torch.equal(by_bincount, per_image_counts(values, 10, by_comparison=True))
    expected = [[int((image == b).sum()) for b in range(10)] for image in values.numpy()]
    assert by_bincount.tolist() == expected


def check(results, expected):
    """Each expected value (number or list) equals the result's tensor, NaN for NaN."""
    for key, value in expected.items():
        torch.testing.assert_close(
            results[key].double(), torch.tensor(value, dtype=torch.float64), equal_nan=True
        )


def test_dice_by_hand():
    # C = [[1,1,0],[1,2,0],[1,0,1]]: rows 2,3,2; columns 3,3,1; dice_c = 2 C[c,c] / (row_c + col_c)
    metric = SegmentationConfusion(3)
    metric.update(PRED[None], GT[None])
    dice = [2 * 1 / (2 + 3), 2 * 2 / (3 + 3), 2 * 1 / (2 + 1)]
    check(metric.compute(), {"class_dice": dice, "mean_dice": sum(dice) / 3})
    # a class in neither ground truth nor prediction is NaN, and (current MATLAB rules) so is the mean
    absent = SegmentationConfusion(4)
    absent.update(PRED[None], GT[None])
    check(absent.compute(), {"class_dice": [*dice, nan], "mean_dice": nan})


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
