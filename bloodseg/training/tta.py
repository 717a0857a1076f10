"""Test-time augmentation: class scores averaged over flipped and rotated views of the input.

``none`` scores the images once; ``flip`` averages the identity, the horizontal, the vertical and
the double flip; ``dihedral`` adds the four transposed views (90 and 270 degree rotations and the
two diagonal mirrors): all eight symmetries of the square. Each view's scores are mapped back onto
the original pixels and the class probabilities (softmax) are averaged; the result is returned as
log-probabilities, so its argmax is the averaged prediction and its softmax the averaged
probabilities. Smear images have no preferred orientation, so every view is as valid as the input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bloodseg.config import TestTimeAugmentation

# a view: (transpose H and W first?, then flip H?, flip W?); _undo maps a view's output back
View = tuple[bool, bool, bool]
FLIPS: list[View] = [(False, False, False), (False, False, True), (False, True, False), (False, True, True)]
VIEWS: dict[str, list[View]] = {
    "none": FLIPS[:1],
    "flip": FLIPS,
    "dihedral": FLIPS + [(True, flip_h, flip_w) for _, flip_h, flip_w in FLIPS],
}


def _apply(x: torch.Tensor, view: View) -> torch.Tensor:
    transpose, flip_h, flip_w = view
    if transpose:
        x = x.transpose(-2, -1)
    dims = [d for d, flip in ((-2, flip_h), (-1, flip_w)) if flip]
    return x.flip(dims) if dims else x


def _undo(x: torch.Tensor, view: View) -> torch.Tensor:
    transpose, flip_h, flip_w = view
    dims = [d for d, flip in ((-2, flip_h), (-1, flip_w)) if flip]
    x = x.flip(dims) if dims else x
    return x.transpose(-2, -1) if transpose else x


def averaged_scores(
    score: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: TestTimeAugmentation | str
) -> torch.Tensor:
    """Class scores (N,K,H,W) of images (N,C,H,W) under test-time augmentation ``mode``.

    ``none`` returns ``score(images)`` itself; the other modes return the log of the class
    probabilities averaged over the views (``flip``: 4, ``dihedral``: 8).
    """
    views = VIEWS[str(mode)]
    if len(views) == 1:
        return score(images)
    total = None
    for view in views:
        probabilities = _undo(score(_apply(images, view)).float().softmax(1), view)
        total = probabilities if total is None else total + probabilities
    mean = total / len(views)
    return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()
