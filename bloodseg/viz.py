"""Pictures: label overlays in the paper's colours, side-by-side comparisons, the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torchvision.utils import draw_segmentation_masks  # noqa: E402


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
    return (plt.get_cmap(cmap)(scaled)[..., :3] * 255).round().astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    """Write an array as PNG."""
    Image.fromarray(array).save(path)


def confusion_matrix_figure(counts: np.ndarray, class_names: list[str], path: Path, title: str = "") -> None:
    """The row-normalised confusion matrix (percent, rows = true class) with counts, like the paper's Fig. 6."""
    counts = np.asarray(counts, dtype=np.float64)
    rows = counts.sum(1, keepdims=True)
    percent = np.divide(100 * counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.6 * k + 2.2, 1.4 * k + 1.6), dpi=110)
    ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            color = "white" if percent[i, j] > 55 else "black"
            ax.text(
                j,
                i,
                f"{percent[i, j]:.2f}%\n({int(counts[i, j]):,})",
                ha="center",
                va="center",
                color=color,
                fontsize=8,
            )
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title or "Normalized confusion matrix (%)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def value_sort_key(value: str):
    """Numbers in numeric order before other values in text order (for swept values such as 0.01, 0.001)."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def sweep_heatmap(points: list[tuple[str, str, float]], keys: list[str], path: Path) -> None:
    """Mean IoU of a two-key grid as a heatmap (rows = keys[0] values, columns = keys[1] values)."""
    rows = sorted({p[0] for p in points}, key=value_sort_key)
    cols = sorted({p[1] for p in points}, key=value_sort_key)
    grid = np.full((len(rows), len(cols)), np.nan)
    for r, c, value in points:
        grid[rows.index(r), cols.index(c)] = value
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 3, 0.6 * len(rows) + 2), dpi=110)
    image = ax.imshow(grid, cmap="viridis")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.3f}",
                    ha="center",
                    va="center",
                    color="white" if grid[i, j] < np.nanmean(grid) else "black",
                    fontsize=8,
                )
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    ax.set_title("test mean IoU")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
