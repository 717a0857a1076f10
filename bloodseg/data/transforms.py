"""Resizing, the paper's augmentation (reflection + translation), optional rotation, scaling and
colour jitter, and random crops at native scale, on image and mask together.

All are torchvision v2 operations on ``tv_tensors.Image`` / ``tv_tensors.Mask``, so one call
moves the image and its label identically (colour changes touch images only). Pixels moved in
from outside the image get 0 in images and the ignore label 255 in masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from bloodseg.constants import IGNORE_INDEX


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
    top: torch.Tensor | None = None,
    left: torch.Tensor | None = None,
    crop_size: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`FlipShift` (then :class:`Crop`) with per-sample parameters on a whole batch, in one gather.

    images (B,C,H,W), masks (B,H,W); hflip/vflip bool (B,), dx/dy int (B,); with crop_size = [h, w],
    top/left int (B,) place each sample's crop window. Gives exactly what FlipShift and Crop give
    sample by sample: out[y, x] = flipped[y + top - dy, x + left - dx], outside = 0 / 255.
    """
    batch, channels, height, width = images.shape
    device = images.device
    out_h, out_w = (height, width) if crop_size is None else (int(crop_size[0]), int(crop_size[1]))
    top = torch.zeros(batch, dtype=torch.long) if top is None else top
    left = torch.zeros(batch, dtype=torch.long) if left is None else left
    src_y = torch.arange(out_h, device=device)[None, :] + (top.to(device) - dy.to(device))[:, None]  # (B, h)
    src_x = torch.arange(out_w, device=device)[None, :] + (left.to(device) - dx.to(device))[:, None]  # (B, w)
    valid = ((src_y >= 0) & (src_y < height))[:, :, None] & ((src_x >= 0) & (src_x < width))[:, None, :]
    src_y, src_x = src_y.clamp(0, height - 1), src_x.clamp(0, width - 1)
    src_y = torch.where(vflip.to(device)[:, None], height - 1 - src_y, src_y)
    src_x = torch.where(hflip.to(device)[:, None], width - 1 - src_x, src_x)
    flat = (src_y[:, :, None] * width + src_x[:, None, :]).flatten(1)  # (B, h*w)
    out_images = images.flatten(2).gather(2, flat[:, None, :].expand(-1, channels, -1))
    out_images = out_images.view(batch, channels, out_h, out_w)
    out_masks = masks.flatten(1).gather(1, flat).view(batch, out_h, out_w)
    out_images = torch.where(valid[:, None], out_images, torch.zeros((), dtype=images.dtype, device=device))
    out_masks = torch.where(valid, out_masks, torch.full((), IGNORE_INDEX, dtype=masks.dtype, device=device))
    return out_images, out_masks


class Crop(v2.Transform):
    """Cut the window of size [height, width] at (top, left) out of images and masks alike."""

    def __init__(self, top: int, left: int, height: int, width: int):
        super().__init__()
        self.top, self.left, self.height, self.width = int(top), int(left), int(height), int(width)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"top": self.top, "left": self.left}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.crop(inpt, self.top, self.left, self.height, self.width)

    def extra_repr(self) -> str:
        return f"top={self.top}, left={self.left}, height={self.height}, width={self.width}"


def random_crop(generator: torch.Generator, size: list[int], crop_size: list[int]) -> Crop:
    """A crop window of crop_size placed uniformly inside an image of size (every position equally likely)."""
    top = int(torch.randint(0, int(size[0]) - int(crop_size[0]) + 1, (1,), generator=generator))
    left = int(torch.randint(0, int(size[1]) - int(crop_size[1]) + 1, (1,), generator=generator))
    return Crop(top, left, int(crop_size[0]), int(crop_size[1]))


class RotateScale(v2.Transform):
    """Rotate by ``angle`` degrees (clockwise, as torchvision) and zoom by ``scale`` about the image centre.

    Images are resampled bilinearly, masks by nearest neighbour; uncovered corners are 0 / 255.
    """

    def __init__(self, angle: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.angle, self.scale = float(angle), float(scale)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"angle": self.angle, "scale": self.scale}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if self.angle == 0.0 and self.scale == 1.0:
            return inpt
        is_mask = isinstance(inpt, tv_tensors.Mask)
        return F.affine(
            inpt,
            angle=self.angle,
            translate=[0, 0],
            scale=self.scale,
            shear=[0.0, 0.0],
            interpolation=v2.InterpolationMode.NEAREST if is_mask else v2.InterpolationMode.BILINEAR,
            fill=IGNORE_INDEX if is_mask else 0,
        )

    def extra_repr(self) -> str:
        return f"angle={self.angle:.2f}, scale={self.scale:.3f}"


class Recolor(v2.Transform):
    """Multiply brightness, contrast and saturation by fixed factors (1 = unchanged); masks pass through."""

    def __init__(self, brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0):
        super().__init__()
        self.brightness, self.contrast, self.saturation = (
            float(brightness),
            float(contrast),
            float(saturation),
        )

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"brightness": self.brightness, "contrast": self.contrast, "saturation": self.saturation}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return inpt
        inpt = F.adjust_brightness(inpt, self.brightness)
        inpt = F.adjust_contrast(inpt, self.contrast)
        return F.adjust_saturation(inpt, self.saturation)

    def extra_repr(self) -> str:
        return f"brightness={self.brightness:.3f}, contrast={self.contrast:.3f}, saturation={self.saturation:.3f}"


@dataclass(frozen=True)
class ExtraAugmentation:
    """Augmentations beyond the paper's, applied to augmented copies only (0 / [1, 1] = off).

    rotation: angles uniform in [-rotation, rotation] degrees; scale_range: zoom factors uniform in
    [low, high]; color_jitter: brightness, contrast and saturation factors each uniform in
    [1 - color_jitter, 1 + color_jitter].
    """

    rotation: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    color_jitter: float = 0.0

    @property
    def active(self) -> bool:
        """Whether any of the three changes anything."""
        return bool(self.rotation) or tuple(self.scale_range) != (1.0, 1.0) or bool(self.color_jitter)

    def draw(self, generator: torch.Generator) -> list[v2.Transform]:
        """This copy's rotation/zoom and recolouring (five uniform draws from generator, always all five)."""
        u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
        low, high = (float(v) for v in self.scale_range)
        angle = (2.0 * u[0] - 1.0) * self.rotation
        scale = low + (high - low) * u[1]
        jitter = [1.0 + (2.0 * v - 1.0) * self.color_jitter for v in u[2:]]
        return [RotateScale(angle, scale), Recolor(*jitter)]
