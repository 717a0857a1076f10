"""Pictures: overlays in the class colours."""

from __future__ import annotations

import numpy as np

from bloodseg.viz.pictures import overlay


def test_overlay_blends_class_colours_and_leaves_ignored_pixels_alone():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (6, 7)).astype(np.uint8)
    labels[0] = 255  # unlabelled
    colors = [[255, 255, 0], [0, 0, 255], [0, 255, 0]]
    out = overlay(image, labels, colors, alpha=0.45)
    expected = 0.55 * image + 0.45 * np.asarray(colors)[np.minimum(labels, 2)]
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (out[0] == image[0]).all()
    assert np.abs(out[1:].astype(float) - expected[1:]).max() <= 1  # uint8 rounding
