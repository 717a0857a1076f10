"""matplotlib figures: the confusion matrix, the two-key sweep heatmap, and figures as PNG bytes.

Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot, so no module here
selects or changes the matplotlib backend (importing bloodseg leaves a notebook's backend alone)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def subplots(*args, figsize=None, dpi=None, **kwargs):
    """A new figure and its axes, as ``pyplot.subplots`` gives them, but outside pyplot (no backend chosen)."""
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(*args, **kwargs)


def confusion_matrix_figure(counts: np.ndarray, class_names: list[str], path: Path, title: str = "") -> None:
    """The row-normalised confusion matrix (percent, rows = true class) with counts, like the paper's Fig. 6."""
    counts = np.asarray(counts, dtype=np.float64)
    rows = counts.sum(1, keepdims=True)
    percent = np.divide(100 * counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = len(class_names)
    fig, ax = subplots(figsize=(1.6 * k + 2.2, 1.4 * k + 1.6), dpi=110)
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
    fig, ax = subplots(figsize=(1.3 * len(cols) + 3, 0.6 * len(rows) + 2), dpi=110)
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


def figure_png(fig) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
