"""Resizing and the paper's augmentation (reflection + translation), on image and mask together.

Both are torchvision v2 operations on ``tv_tensors.Image`` / ``tv_tensors.Mask``, so one call
moves the image and its label identically. They work on single samples or batches, on the
CPU or the GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from bloodseg.config import IGNORE_INDEX


def resize_pair(
    image: torch.Tensor, mask: torch.Tensor, size: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize an image (bilinear, antialiased) and its class-id mask (nearest) to size = [H, W]."""
    size = [int(size[0]), int(size[1])]
    if list(image.shape[-2:]) == size and list(mask.shape[-2:]) == size:
        return image, mask
    image = F.resize(
        tv_tensors.Image(image), size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True
    )
    mask = F.resize(tv_tensors.Mask(mask), size, interpolation=v2.InterpolationMode.NEAREST_EXACT)
    return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class FlipShift(v2.Transform):
    """Reflect, then translate by whole pixels (dx right, dy down).

    Translated-in pixels get 0 in images and the ignore label 255 in masks, so they never count
    as background. With all parameters at their defaults it returns its inputs unchanged.
    """

    def __init__(self, hflip: bool = False, vflip: bool = False, dx: int = 0, dy: int = 0):
        super().__init__()
        self.hflip, self.vflip, self.dx, self.dy = bool(hflip), bool(vflip), int(dx), int(dy)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"hflip": self.hflip, "vflip": self.vflip, "dx": self.dx, "dy": self.dy}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["hflip"]:
            inpt = F.horizontal_flip(inpt)
        if params["vflip"]:
            inpt = F.vertical_flip(inpt)
        if params["dx"] or params["dy"]:
            fill = IGNORE_INDEX if isinstance(inpt, tv_tensors.Mask) else 0
            inpt = F.affine(
                inpt,
                angle=0.0,
                translate=[params["dx"], params["dy"]],
                scale=1.0,
                shear=[0.0, 0.0],
                interpolation=v2.InterpolationMode.NEAREST,
                fill=fill,
            )
        return inpt

    def extra_repr(self) -> str:
        return f"hflip={self.hflip}, vflip={self.vflip}, dx={self.dx}, dy={self.dy}"


def random_flip_shift(
    generator: torch.Generator, max_translation: int, hflip: bool, vflip: bool
) -> FlipShift:
    """Draw one augmentation: each enabled reflection with probability 1/2, shifts uniform in [-max, max]."""
    draws = torch.rand(2, generator=generator)
    shifts = torch.randint(-max_translation, max_translation + 1, (2,), generator=generator)
    return FlipShift(
        hflip and bool(draws[0] < 0.5), vflip and bool(draws[1] < 0.5), int(shifts[0]), int(shifts[1])
    )


def flip_shift_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    hflip: torch.Tensor,
    vflip: torch.Tensor,
    dx: torch.Tensor,
    dy: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`FlipShift` with per-sample parameters on a whole batch, in one gather (any device).

    images (B,C,H,W), masks (B,H,W); hflip/vflip bool (B,), dx/dy int (B,). Gives exactly what
    FlipShift gives sample by sample: out[y, x] = flipped[y - dy, x - dx], outside = 0 / 255.
    """
    batch, channels, height, width = images.shape
    device = images.device
    src_y = torch.arange(height, device=device)[None, :] - dy.to(device)[:, None]  # (B, H)
    src_x = torch.arange(width, device=device)[None, :] - dx.to(device)[:, None]  # (B, W)
    valid = ((src_y >= 0) & (src_y < height))[:, :, None] & ((src_x >= 0) & (src_x < width))[:, None, :]
    src_y, src_x = src_y.clamp(0, height - 1), src_x.clamp(0, width - 1)
    src_y = torch.where(vflip.to(device)[:, None], height - 1 - src_y, src_y)
    src_x = torch.where(hflip.to(device)[:, None], width - 1 - src_x, src_x)
    flat = (src_y[:, :, None] * width + src_x[:, None, :]).flatten(1)  # (B, H*W)
    out_images = images.flatten(2).gather(2, flat[:, None, :].expand(-1, channels, -1)).view_as(images)
    out_masks = masks.flatten(1).gather(1, flat).view_as(masks)
    out_images = torch.where(valid[:, None], out_images, torch.zeros((), dtype=images.dtype, device=device))
    out_masks = torch.where(valid, out_masks, torch.full((), IGNORE_INDEX, dtype=masks.dtype, device=device))
    return out_images, out_masks
