"""Pictures as arrays (numpy / PIL only): label overlays in the class colours, side-by-side comparisons,
cell outlines, heat maps, and PNG writing."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import draw_segmentation_masks


def colorize(labels: np.ndarray, colors: list) -> np.ndarray:
    """An HxWx3 colour image of class ids (ignore 255 shown black)."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8)
    return palette[labels.astype(np.uint8)]


def overlay(image: np.ndarray, labels: np.ndarray, colors: list, alpha: float = 0.45) -> np.ndarray:
    """Blend class colours over an HxWx3 uint8 image; ignored pixels (255) keep the image."""
    masks = torch.from_numpy(labels.astype(np.int64))[None] == torch.arange(len(colors))[:, None, None]
    blended = draw_segmentation_masks(
        torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1),  # read-only: copied
        masks,
        alpha=alpha,
        colors=[tuple(int(v) for v in color) for color in colors],
    )
    return blended.permute(1, 2, 0).numpy()


def captioned(image: np.ndarray, caption: str) -> np.ndarray:
    """The image with a one-line caption bar on top."""
    bar = Image.new("RGB", (image.shape[1], 18), (255, 255, 255))
    ImageDraw.Draw(bar).text((4, 3), caption, fill=(0, 0, 0))
    return np.concatenate([np.asarray(bar), image], axis=0)


def _enlarged(array: np.ndarray, min_width: int = 240) -> np.ndarray:
    """Nearest-neighbour enlargement of small pictures so that captions and cells stay legible."""
    factor = max(1, -(-min_width // array.shape[1]))
    return array.repeat(factor, 0).repeat(factor, 1) if factor > 1 else array


def comparison(
    image: np.ndarray | None, truth: np.ndarray, pred: np.ndarray, colors: list, title: str
) -> np.ndarray:
    """[image | ground truth overlay | prediction overlay] in one picture (masks only without an image)."""
    image, truth, pred = (None if image is None else _enlarged(image)), _enlarged(truth), _enlarged(pred)
    panels = []
    if image is not None:
        panels += [
            captioned(image, title),
            captioned(overlay(image, truth, colors), "ground truth"),
            captioned(overlay(image, pred, colors), "prediction"),
        ]
    else:
        panels += [
            captioned(colorize(truth, colors), f"{title}: ground truth"),
            captioned(colorize(pred, colors), "prediction"),
        ]
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    return np.concatenate(row, axis=1)


def cell_outlines(image: np.ndarray, instances: np.ndarray, cells: list[dict], colors: dict) -> np.ndarray:
    """The image with each cell's outline in its class colour and its id written at its centroid.

    instances: cell ids (0 = none) as from counting.label_cells; cells: its rows; colors: class -> RGB.
    """
    out = np.array(image, np.uint8, copy=True)
    from skimage.segmentation import find_boundaries  # the `count` extra, as the instances' watershed

    edge = find_boundaries(instances, mode="inner")
    colour_of = np.zeros((int(instances.max(initial=0)) + 1, 3), np.uint8)
    for cell in cells:
        colour_of[cell["cell_id"]] = colors[cell["class"]]
    out[edge] = colour_of[instances[edge]]
    picture = Image.fromarray(out)
    draw = ImageDraw.Draw(picture)
    for cell in cells:
        text = str(cell["cell_id"])
        left, top, right, bottom = draw.textbbox((0, 0), text)
        x = cell["centroid_x"] - (right - left) / 2
        y = cell["centroid_y"] - (bottom - top) / 2
        draw.text((x, y), text, fill=(0, 0, 0), stroke_width=1, stroke_fill=(255, 255, 255))
    return np.asarray(picture)


def heatmap(values: np.ndarray, vmax: float, cmap: str = "magma") -> np.ndarray:
    """An HxWx3 uint8 picture of a float map scaled 0..vmax with a matplotlib colour map."""
    scaled = np.clip(np.asarray(values, np.float64) / vmax if vmax > 0 else 0 * values, 0, 1)
    return (matplotlib.colormaps.get_cmap(cmap)(scaled)[..., :3] * 255).round().astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    """Write an array as PNG."""
    Image.fromarray(array).save(path)
