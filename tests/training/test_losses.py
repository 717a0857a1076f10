"""Class-weighting schemes (hand-computed) and the weighted cross entropy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bloodseg.data.labels import class_pixel_counts
from bloodseg.errors import BloodsegError
from bloodseg.training.losses import WeightedCrossEntropy, class_weights

# Two 2x3 training labels; 255 = unlabelled.
MASKS = torch.tensor([[[0, 0, 1], [1, 1, 255]], [[0, 2, 2], [0, 0, 0]]], dtype=torch.uint8)
# By hand: n = [6, 3, 2] (11 labelled); class 0 is in both images (5 + 6 labelled pixels),
# class 1 only in the first (5), class 2 only in the second (6).


def test_class_pixel_counts_by_hand():
    n, image_n = class_pixel_counts(MASKS, 3)
    assert n.tolist() == [6, 3, 2]
    assert image_n.tolist() == [11, 5, 6]


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("none", [1.0, 1.0, 1.0]),
        # 1/p = 11/6, 11/3, 11/2 with mean 11/3 -> 0.5, 1, 1.5
        ("inverse_frequency", [0.5, 1.0, 1.5]),
        # freq = 6/11, 3/5, 2/6; median 6/11 -> 1, (6/11)/(3/5) = 10/11, (6/11)/(1/3) = 18/11
        ("median_frequency", [1.0, 10 / 11, 18 / 11]),
        # 1 / ln(1.02 + p) with p = 6/11, 3/11, 2/11
        ("enet_log", [1 / math.log(1.02 + 6 / 11), 1 / math.log(1.02 + 3 / 11), 1 / math.log(1.02 + 2 / 11)]),
    ],
)
def test_weighting_schemes_by_hand(scheme, expected):
    weights = class_weights(scheme, *class_pixel_counts(MASKS, 3))
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_median_of_an_even_number_of_classes_averages_the_middle_pair():
    # freq = n / image_n = [0.1, 0.2, 0.4, 0.8]; median = (0.2 + 0.4) / 2 = 0.3
    n = torch.tensor([10.0, 20.0, 40.0, 80.0])
    image_n = torch.tensor([100.0, 100.0, 100.0, 100.0])
    torch.testing.assert_close(
        class_weights("median_frequency", n, image_n), torch.tensor([3.0, 1.5, 0.75, 0.375])
    )


def test_class_absent_from_training_gets_zero_weight():
    weights = class_weights(
        "median_frequency", torch.tensor([5.0, 0.0, 5.0]), torch.tensor([10.0, 0.0, 10.0])
    )
    assert weights[1] == 0 and torch.isfinite(weights).all()


def test_unknown_scheme_and_empty_labels_are_clear_errors():
    with pytest.raises(BloodsegError, match="class_weighting"):
        class_weights("balanced", torch.ones(3), torch.ones(3))
    with pytest.raises(BloodsegError, match="no labelled pixel"):
        class_weights("none", torch.zeros(3), torch.zeros(3))


def test_weighted_cross_entropy_equals_pytorch_weighted_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 0, :3] = 255
    weights = torch.tensor([0.5, 1.0, 3.0])
    ours = WeightedCrossEntropy(weights)(logits, target)
    reference = nn.CrossEntropyLoss(weight=weights, ignore_index=255)(logits, target)
    torch.testing.assert_close(ours, reference)


def test_all_ignored_batch_gives_zero_loss_and_finite_gradients():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = WeightedCrossEntropy(torch.ones(3))(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()
