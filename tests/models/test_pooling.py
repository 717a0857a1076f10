"""SegNet's tie-robust max-pooling: classic where windows are clear, continuous where they tie."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bloodseg.models.pooling import pool, route_weights, unpool

TOL = 0.01


def window(values) -> torch.Tensor:
    """One 2x2 window (1, 1, 2, 2) from [[a, b], [c, d]]."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)


def classic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch's own max-pool indices and max-unpool: the reference for clear windows."""
    _, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    return F.max_unpool2d(y, indices, 2, 2, output_size=x.shape[-2:])


def separated_activations(shape, seed: int) -> torch.Tensor:
    """Random activations whose values in a window are at least 0.1 apart (no near ties), some negative."""
    generator = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    ranks = torch.rand(n, c, h // 2, w // 2, 4, generator=generator).argsort(-1).float()
    offset = torch.randn(n, c, h // 2, w // 2, 1, generator=generator) * 3
    windows = ranks * 0.1 * (1 + offset.abs()) + offset  # gaps >= 0.1 * max(1, |values|) > TOL
    return windows.view(n, c, h // 2, w // 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


@pytest.mark.parametrize("size", [(8, 12), (9, 13)])
def test_tolerance_zero_is_torchs_max_pool_and_unpool(size):
    x = torch.randn(2, 3, *size)
    pooled, routes = pool(x, 0.0)
    torch.testing.assert_close(pooled, F.max_pool2d(x, 2, 2), rtol=0, atol=0)
    y = torch.randn_like(pooled)
    torch.testing.assert_close(unpool(y, routes, list(size)), classic(x, y), rtol=0, atol=0)


def test_clear_windows_route_exactly_like_classic_segnet():
    x = separated_activations((2, 4, 10, 14), seed=0)
    pooled, routes = pool(x, TOL)
    torch.testing.assert_close(pooled, F.max_pool2d(x, 2, 2), rtol=0, atol=0)
    y = torch.randn_like(pooled)
    torch.testing.assert_close(unpool(y, routes, [10, 14]), classic(x, y), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([[1.0, 3.0], [3.0, 2.0]], [[0, 1], [0, 0]]),  # exact tie: the first in row-major order, as torch
        ([[0.0, 0.0], [0.0, 0.0]], [[1, 0], [0, 0]]),  # a window of ReLU zeros: top-left, as torch
        ([[0.995, 1.0], [0.0, 0.2]], [[0.5, 0.5], [0, 0]]),  # 0.005 below the max: share 1 - 0.005/0.01
        ([[0.2, 0.0], [0.993, 1.0]], [[0, 0], [0.3, 0.7]]),  # share 0.3; the max gets what is left
        ([[200.0, 199.0], [0.0, 0.0]], [[1, 0], [0, 0]]),  # above 1 the tolerance is relative: 2 here
        ([[199.0, 200.0], [0.0, 0.0]], [[0.5, 0.5], [0, 0]]),  # 1 below a max of 200: share 1 - 1/2
        ([[0.98, 1.0], [0.0, 0.0]], [[0, 1], [0, 0]]),  # 0.02 below: beyond the tolerance, classic
    ],
)
def test_route_weights_by_hand(values, expected):
    routes = route_weights(window(values), TOL)
    got = routes.reshape(2, 2).numpy()  # (1, 1, 1, 2, 1, 2) -> window rows x columns
    np.testing.assert_allclose(got, np.array(expected, dtype=np.float32), atol=1e-4)


def test_routes_sum_to_one_and_unpooling_keeps_each_value_once():
    x = torch.randn(3, 5, 12, 16).relu()  # post-ReLU: many exact zero ties
    x[:, :, 1::2] = x[:, :, 0::2]  # every window's rows equal: exact ties everywhere
    pooled, routes = pool(x, TOL)
    torch.testing.assert_close(routes.sum(dim=(3, 5)), torch.ones_like(pooled))
    y = torch.randn_like(pooled)
    spread = unpool(y, routes, [12, 16]).view(3, 5, 6, 2, 8, 2).sum(dim=(3, 5))
    torch.testing.assert_close(spread, y)


def test_odd_sizes_get_the_dropped_row_and_column_back_as_zeros():
    x = torch.randn(1, 2, 7, 9)
    pooled, routes = pool(x, TOL)
    out = unpool(torch.ones_like(pooled), routes, [7, 9])
    assert out.shape == (1, 2, 7, 9)
    assert out[..., 6, :].abs().sum() == 0 and out[..., :, 8].abs().sum() == 0


def test_a_rounding_difference_moves_the_routes_continuously_where_classic_flips():
    """Two values a few ulp apart: torch's indices follow the last bit, the routes barely move."""
    a = window([[1.0, 1.0 + 2e-7], [0.5, 0.0]])
    b = window([[1.0 + 2e-7, 1.0], [0.5, 0.0]])  # the same window after another summation order
    _, ia = F.max_pool2d(a, 2, 2, return_indices=True)
    _, ib = F.max_pool2d(b, 2, 2, return_indices=True)
    assert ia.item() != ib.item()  # classic SegNet sends the value to another pixel
    ra, rb = route_weights(a, TOL), route_weights(b, TOL)
    assert (ra - rb).abs().max() <= 1e-4  # ~ 2e-7 / 0.01


def test_routes_are_lipschitz_in_the_activations():
    """Perturbing every activation by at most d moves every route weight by at most 8 d / tolerance.

    Each share moves by at most 2 d / tolerance (the value and the window max each by d), and a
    weight is a product of at most four shares or their complements.
    """
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, 8, 16, 16, generator=generator) * 0.05 + 0.5  # crowded windows: many near ties
    d = 1e-5
    noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * d
    change = (route_weights(x + noise, TOL) - route_weights(x, TOL)).abs().max()
    assert change <= 8 * d / TOL
    assert change > 0  # the windows really were within the tolerance


def test_gradients_flow_through_the_pooled_values_as_in_classic_segnet():
    x = separated_activations((1, 2, 6, 8), seed=3).requires_grad_()
    pooled, routes = pool(x, TOL)
    assert not routes.requires_grad
    (unpool(pooled * 2, routes, [6, 8]).sum()).backward()
    reference = x.detach().clone().requires_grad_()
    classic(reference, F.max_pool2d(reference, 2, 2) * 2).sum().backward()
    torch.testing.assert_close(x.grad, reference.grad)


def test_bf16_activations_keep_their_dtype():
    x = torch.randn(1, 2, 8, 8).to(torch.bfloat16)
    pooled, routes = pool(x, TOL)
    assert pooled.dtype == routes.dtype == torch.bfloat16
    assert unpool(pooled, routes, [8, 8]).dtype == torch.bfloat16
