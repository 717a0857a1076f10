"""BF (boundary F1) contour matching score of one image and class, as MATLAB's ``bfscore``.

For each image and class c, with P = the predicted mask ``pred == c`` and T = the true mask
``gt == c``:

- boundary of a mask = the mask minus its erosion by the 4-connected cross, the image being
  padded with zeros first: mask pixels on the image edge are boundary (as MATLAB's ``bwperim``);
  a class filling the whole image has the image frame as its boundary;
- tolerance theta = ``tolerance * sqrt(H^2 + W^2)`` pixels (MATLAB: 0.75% of the diagonal);
- a boundary pixel matches when its squared Euclidean distance to the nearest pixel of the other
  boundary is strictly less than theta^2 (exact integer squared distances, no epsilon: at
  480x640, theta = 6 and a pixel exactly 6 px away does not match);
- precision = matched predicted boundary pixels / predicted boundary pixels, recall = matched
  true boundary pixels / true boundary pixels, in IEEE arithmetic: an empty boundary on either
  side gives 0/0 = NaN;
- BF = 1 / (0.5 / recall + 0.5 / precision): NaN when either is NaN, 0 when either is 0.

Unlabelled ground-truth pixels are simply "not c" in T; whether the prediction is blanked there
first is decided by the caller (see :mod:`bloodseg.metrics.semantics`).

Everything runs on whole batches on the input's device: boundaries by a 4-neighbour erosion,
the tolerance test by an exact dilation with the digital disk {dy^2 + dx^2 < theta^2}, built
from shifted boolean ORs (no distance transform, no per-image loop).
"""

from __future__ import annotations

import math

import torch


def boundaries(masks: torch.Tensor) -> torch.Tensor:
    """Boundary of boolean masks (..., H, W): mask pixels with a 4-neighbour outside the mask,
    pixels outside the image counting as outside (so mask pixels on the image edge are boundary)."""
    masks = masks.bool()
    inner = masks.clone()
    inner[..., 1:, :] &= masks[..., :-1, :]
    inner[..., :-1, :] &= masks[..., 1:, :]
    inner[..., :, 1:] &= masks[..., :, :-1]
    inner[..., :, :-1] &= masks[..., :, 1:]
    for edge in (inner[..., 0, :], inner[..., -1, :], inner[..., :, 0], inner[..., :, -1]):
        edge.fill_(False)
    return inner.logical_xor_(masks)  # the erosion lies inside the mask: mask AND NOT erosion


def _count(masks: torch.Tensor) -> torch.Tensor:
    """Number of True pixels of boolean masks (..., H, W) as float64 (..., ).

    Summed as bytes row by row first: much faster on the CPU than a bool reduction over two dims.
    """
    row_type = torch.int16 if masks.shape[-1] < 2**15 else torch.int64
    return masks.view(torch.uint8).sum(-1, dtype=row_type).sum(-1, dtype=torch.int64).double()


def match_limit(height: int, width: int, tolerance: float) -> int:
    """The largest integer squared distance that matches: D < theta^2 with theta = tolerance * diagonal.

    theta is computed in double precision as MATLAB does (``tolerance * sqrt(H^2 + W^2)``);
    for an integer D, D < theta^2 exactly when D <= ceil(theta^2) - 1 (so -1: nothing matches).
    """
    theta = tolerance * math.sqrt(height * height + width * width)
    return math.ceil(theta * theta) - 1


def within_distance(features: torch.Tensor, limit: int) -> torch.Tensor:
    """Pixels whose squared Euclidean distance to some True pixel of features (..., H, W) is <= limit.

    Exact: the dilation of features by the digital disk {(dy, dx): dy^2 + dx^2 <= limit}, as the
    OR over columns offsets dx of the vertical dilation by floor(sqrt(limit - dx^2)) shifted by dx.
    """
    out = torch.zeros_like(features, dtype=torch.bool)
    if limit < 0:
        return out
    features = features.bool()
    height, width = features.shape[-2], features.shape[-1]
    reach = math.isqrt(limit)
    vertical, grown = features.clone(), 0  # features dilated vertically by `grown` pixels
    for dx in range(reach, -1, -1):  # |dx| decreasing: the vertical reach only grows
        need = min(math.isqrt(limit - dx * dx), height - 1)
        while grown < need:
            grown += 1
            vertical[..., grown:, :] |= features[..., :-grown, :]
            vertical[..., :-grown, :] |= features[..., grown:, :]
        if dx == 0:
            out |= vertical
        elif dx < width:
            out[..., :, dx:] |= vertical[..., :, :-dx]
            out[..., :, :-dx] |= vertical[..., :, dx:]
    return out


def bf_scores(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, tolerance: float = 0.0075
) -> torch.Tensor:
    """BF score per image and class (N, K) in float64, by the rules of this module's docstring.

    preds and target are class-id maps (N, H, W); a value outside 0..K-1 (255 = unlabelled, or a
    prediction blanked by the caller) belongs to no class. NaN where either boundary is empty.
    """
    if preds.shape != target.shape or preds.dim() != 3:
        raise ValueError(
            f"bf_scores needs preds and target of the same shape (N, H, W), got {tuple(preds.shape)} "
            f"and {tuple(target.shape)}"
        )
    classes = torch.arange(num_classes, device=preds.device).view(1, -1, 1, 1)
    pred_edges = boundaries(preds.unsqueeze(1) == classes)
    true_edges = boundaries(target.unsqueeze(1) == classes)
    limit = match_limit(preds.shape[-2], preds.shape[-1], tolerance)
    n_pred, n_true = _count(pred_edges), _count(true_edges)
    precision = _count(within_distance(true_edges, limit).logical_and_(pred_edges)) / n_pred
    recall = _count(within_distance(pred_edges, limit).logical_and_(true_edges)) / n_true
    return 1.0 / (0.5 / recall + 0.5 / precision)
