"""SegNet's 2x2 max-pooling and unpooling, with a tie-break that rounding cannot flip.

Classic SegNet remembers, for every 2x2 window, the position of its maximum and later unpools
the decoder's value to that position alone. When two values of a window are (nearly) equal, which
one is the maximum is decided by the last bits of the arithmetic: another batch size, CPU
instruction set, thread count or runtime (ONNX Runtime, TensorRT) sums the convolutions in
another order, the choice flips, and the decoder gets its value one pixel away. Smooth image
regions are full of such windows, so the same smear could be segmented differently depending on
how it was run.

With ``tolerance > 0`` the unpooling position becomes a continuous function of the window:

* each element counts as "the maximum" to the degree
  ``s = max(0, 1 - (window max - value) / (tolerance * max(|window max|, 1)))``: 1 for the
  maximum and for values exactly tied with it, 0 for values further below it than the
  tolerance (absolute for activations up to 1, relative above);
* going through the window in row-major order (top-left, top-right, bottom-left, bottom-right),
  each element takes the share ``s`` of the weight that earlier elements left over.

Where no other value is within the tolerance of the maximum, all weight goes to the maximum;
for exact ties it goes to the first tied element (both exactly as ``max_pool2d``'s indices);
in between, the weight is shared continuously. A rounding difference of size d in the
activations then moves an unpooled value by about ``d / tolerance`` of itself, instead of
moving it a whole pixel. The pooled values are ordinary max-pooling; gradients flow as in
classic SegNet (the routing weights, like the indices, are not differentiated).
``tolerance = 0`` is classic SegNet (indices).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def route_weights(x: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Unpooling weights (N, C, H//2, 2, W//2, 2) of x's 2x2 windows (window rows and columns split out); each window sums to 1."""
    n, c, height, width = x.shape
    h, w = height // 2, width // 2
    windows = x[:, :, : 2 * h, : 2 * w].float().reshape(n, c, h, 2, w, 2)
    peak = windows.amax(dim=(3, 5), keepdim=True)
    scale = tolerance * peak.abs().clamp(min=1.0)
    share = (1.0 - (peak - windows) / scale).clamp(min=0.0)  # 1 at the maximum, 0 beyond the tolerance
    # row-major order: each element takes its share of what the elements before it left over
    s0, s1 = share[:, :, :, 0, :, 0], share[:, :, :, 0, :, 1]
    s2, s3 = share[:, :, :, 1, :, 0], share[:, :, :, 1, :, 1]
    left1 = 1.0 - s0
    left2 = left1 * (1.0 - s1)
    left3 = left2 * (1.0 - s2)
    top = torch.stack([s0, s1 * left1], dim=-1)
    bottom = torch.stack([s2 * left2, s3 * left3], dim=-1)
    return torch.stack([top, bottom], dim=3).to(
        x.dtype
    )  # computed in float32, kept in the activations' dtype


def pool(x: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2/stride-2 max-pooling of x and how to unpool it: indices (tolerance 0) or route weights."""
    if tolerance <= 0.0:
        return torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    return F.max_pool2d(x, 2, 2), route_weights(x.detach(), tolerance)


def unpool(y: torch.Tensor, routes: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Place y's values (N, C, h, w) back into windows of an (H, W) = size map, as ``pool`` routed them."""
    if routes.dtype == torch.int64:  # classic indices
        return torch.ops.aten.max_unpool2d(y, routes, size)
    n, c, h, _, w, _ = routes.shape
    spread = (y[:, :, :, None, :, None] * routes).reshape(n, c, 2 * h, 2 * w)
    return F.pad(
        spread, [0, size[1] - 2 * w, 0, size[0] - 2 * h]
    )  # odd sizes: the row/column pooling dropped
