"""Test-time augmentation: views undo exactly, the average is a hand-computable mean, and the module
uses it only outside training."""

from __future__ import annotations

import math

import pytest
import torch

from bloodseg.training.module import SegmentationModule
from bloodseg.training.tta import VIEWS, _apply, _undo, averaged_scores


@pytest.mark.parametrize("mode", ["none", "flip", "dihedral"])
def test_every_view_is_undone_exactly_on_a_non_square_image(mode):
    x = torch.randn(2, 3, 5, 7)
    for view in VIEWS[mode]:
        assert torch.equal(_undo(_apply(x, view), view), x)


def test_the_dihedral_views_are_the_eight_symmetries_of_the_square():
    """Compared with torch.rot90 and flips: the four rotations and their mirror images, each once."""
    x = torch.randn(1, 1, 6, 6)
    ours = [_apply(x, view) for view in VIEWS["dihedral"]]
    rotations = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    reference = rotations + [r.flip(-1) for r in rotations]
    for expected in reference:
        assert sum(torch.equal(view, expected) for view in ours) == 1
    assert [len(VIEWS[m]) for m in ("none", "flip", "dihedral")] == [1, 4, 8]


def test_flip_average_of_a_position_dependent_score_by_hand():
    """A 'network' whose class-1 score is the column index (0, 1) on a 1x2 image: the identity gives
    p1 = sigmoid(0), sigmoid(1); the horizontal flip gives them the other way round; the vertical flip
    changes nothing on one row. So both pixels average to (0.5 + sigmoid(1)) / 2."""

    def score(images):
        n, _, h, w = images.shape
        logits = torch.zeros(n, 2, h, w)
        logits[:, 1] = torch.arange(w, dtype=torch.float32)
        return logits

    probabilities = averaged_scores(score, torch.zeros(1, 3, 1, 2), "flip").exp()
    expected = (0.5 + 1 / (1 + math.exp(-1))) / 2
    torch.testing.assert_close(probabilities[0, 1], torch.full((1, 2), expected))
    torch.testing.assert_close(probabilities.sum(1), torch.ones(1, 1, 2))
    assert torch.equal(
        averaged_scores(score, torch.zeros(1, 3, 1, 2), "none"), score(torch.zeros(1, 3, 1, 2))
    )


def test_a_pointwise_network_is_unchanged_by_any_augmentation():
    """A 1x1 convolution commutes with flips and rotations: averaging its views changes nothing."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 1)
    images = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        plain = conv(images).softmax(1)
        for mode in ("flip", "dihedral"):
            torch.testing.assert_close(averaged_scores(conv, images, mode).exp(), plain, rtol=1e-5, atol=1e-6)


class CountingNet(torch.nn.Module):
    """A tiny convolutional network that counts its forward passes and the input sizes it saw."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.conv(x)


def _module(tta: str) -> SegmentationModule:
    meta = {"class_names": ["a", "b", "c"], "mean": [0.5] * 3, "std": [0.25] * 3}
    return SegmentationModule(CountingNet(), torch.ones(3), meta, tta=tta)


def test_the_module_averages_views_only_outside_training():
    images = torch.randint(0, 256, (2, 3, 8, 12), dtype=torch.uint8)
    module = _module("dihedral")
    module.train()
    module(images)
    assert module.net.sizes == [(8, 12)]
    module.eval()
    module.net.sizes.clear()
    with torch.no_grad():
        scores = module(images)
    assert sorted(module.net.sizes) == [(8, 12)] * 4 + [(12, 8)] * 4
    reference = averaged_scores(lambda x: module.net(module.normalize(x)), images, "dihedral")
    torch.testing.assert_close(scores, reference)


def test_the_module_augments_at_the_network_size_when_scores_are_resized():
    images = torch.randint(0, 256, (1, 3, 20, 30), dtype=torch.uint8)
    module = _module("flip").eval()
    module.network_size = [8, 12]
    with torch.no_grad():
        scores = module(images)
    assert module.net.sizes == [(8, 12)] * 4 and scores.shape == (1, 3, 20, 30)
