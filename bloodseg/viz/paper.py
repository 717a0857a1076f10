"""The paper's figures from one run, as PNG files in the run directory.

- Figure 4 (``figure4_ground_truth.png``): a training image with its ground truth overlaid in the class
  colours, unlabelled pixels hatched, and a colour legend.
- Figure 5 (``figure5_class_pixels.png``): labelled pixels per class in the training split beside the
  class weights in force (the reason for weighting the loss).

Figure 6 is the confusion matrix (``confusion_matrix.png``) and Figure 7 the image / ground truth /
prediction overlays (``overlay_best_*.png``, ``overlay_worst_*.png``), both written after testing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bloodseg.constants import IGNORE_INDEX
from bloodseg.viz.figures import subplots
from bloodseg.viz.pictures import overlay

FIGURE4 = "figure4_ground_truth.png"
FIGURE5 = "figure5_class_pixels.png"
UNLABELLED_COLOR = (255, 0, 255)  # magenta hatching: no class in the label image


def hex_color(color: Sequence[int]) -> str:
    """An RGB triple as ``#rrggbb``."""
    return "#" + "".join(f"{int(v):02x}" for v in color)


def legend_handles(names: Sequence[str], colors: Sequence[Sequence[int]], with_unlabelled: bool = True):
    """Matplotlib patches naming each class colour (and the unlabelled marking)."""
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=hex_color(c), edgecolor="#333", label=n) for n, c in zip(names, colors, strict=True)
    ]
    if with_unlabelled:
        handles.append(
            Patch(facecolor="white", edgecolor=hex_color(UNLABELLED_COLOR), hatch="////", label="unlabelled")
        )
    return handles


def figure4(image: np.ndarray, mask: np.ndarray, names, colors, path: Path, caption: str = "") -> Path:
    """Figure 4: the HxWx3 uint8 image beside its ground truth overlaid in the class colours, unlabelled
    pixels (IGNORE_INDEX) hatched in magenta, with a colour legend; written to ``path``."""
    blended = overlay(image, mask, [tuple(c) for c in colors])
    unlabelled = mask == IGNORE_INDEX
    stripes = (np.add.outer(np.arange(mask.shape[0]), np.arange(mask.shape[1])) // 3) % 2 == 0
    marked = blended.copy()
    marked[unlabelled & stripes] = UNLABELLED_COLOR
    fig, axes = subplots(1, 2, figsize=(9.5, 4.2), dpi=110)
    for ax, picture, title in ((axes[0], image, "image"), (axes[1], marked, "ground truth")):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    share = 100.0 * unlabelled.mean()
    fig.legend(handles=legend_handles(names, colors), loc="lower center", ncol=len(names) + 1, frameon=False)
    fig.suptitle(f"Figure 4. Ground truth {caption} ({share:.1f}% unlabelled)".replace("  ", " "))
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path)
    return Path(path)


def label_bars(axes, texts: list[str], heights) -> None:
    """Write each bar's text just above its top."""
    for i, (text, height) in enumerate(zip(texts, heights, strict=True)):
        axes.annotate(
            text, (i, height), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points"
        )


def figure5(names, pixel_counts, weights, weighting: str, path: Path) -> Path:
    """Figure 5: labelled pixels per class in the training split (bars, log axis, share in %) beside the
    class weights in force (``weighting``: the loss.class_weighting rule); written to ``path``."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    share = 100 * counts / counts.sum() if counts.sum() > 0 else counts
    x = np.arange(len(names))
    fig, (left, right) = subplots(1, 2, figsize=(10, 3.8), dpi=110)
    left.bar(x, np.maximum(counts, 1), color="#2463b4")
    left.set_yscale("log")
    left.set_xticks(x, names)
    left.set_ylabel("labelled pixels (training split)")
    left.set_title("Pixels per class")
    label_bars(
        left, [f"{int(n):,}\n{s:.1f}%" for n, s in zip(counts, share, strict=True)], np.maximum(counts, 1)
    )
    left.margins(y=0.25)
    right.bar(x, weights, color="#e07b1a")
    right.set_xticks(x, names)
    right.set_ylabel("class weight")
    right.set_title(f"Class weights ({weighting})")
    label_bars(right, [f"{w:.3f}" for w in weights], weights)
    right.margins(y=0.15)
    fig.suptitle("Figure 5. Class frequencies in the training split and the loss weights in force")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def write_training_figures(run_dir: Path, datamodule, weights, weighting: str) -> list[Path]:
    """Figures 4 and 5 of a run from its data module (training split) and class weights."""
    run_dir = Path(run_dir)
    names = list(datamodule.table.names)
    colors = datamodule.table.overlay_colors()
    pixel_counts = datamodule.split_pixel_counts()["train"]
    paths = [figure5(names, pixel_counts, [float(w) for w in weights], weighting, run_dir / FIGURE5)]
    train = datamodule.splits["train"]
    if len(train.ids):
        masks = train.masks
        # the image showing the most classes (unlabelled included), then the most labelled pixels; the
        # first 200 images are plenty to find a telling one
        score = [
            len(np.unique(masks[i].numpy())) * 1e9 + (masks[i] != IGNORE_INDEX).sum().item()
            for i in range(min(len(train.ids), 200))
        ]
        row = int(np.argmax(score))
        image = train.images[row].permute(1, 2, 0).numpy()
        paths.append(
            figure4(image, masks[row].numpy(), names, colors, run_dir / FIGURE4, f"of {train.ids[row]}")
        )
    return paths
