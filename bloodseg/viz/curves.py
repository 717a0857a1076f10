"""The report's training-curve figures (matplotlib, returned as PNG bytes): summary curves, the per-class
panel, and small multiples of a sweep's jobs. Legends sit outside the axes; a loss spanning more than a
decade gets a log axis.
"""

from __future__ import annotations

import math

from matplotlib.ticker import MaxNLocator

from bloodseg.tracking.csv_log import Series, class_names_of
from bloodseg.viz.figures import figure_png, subplots

SPLITS = ("train", "val", "test")


SPLIT_STYLE = {
    "train": {"color": "#2463b4", "linestyle": "-", "marker": "."},
    "val": {"color": "#e07b1a", "linestyle": "--", "marker": "."},
    "test": {"color": "#2a9d4b", "linestyle": "none", "marker": "o"},
}


SUMMARY_PANELS = [
    ("Loss", "loss"),
    ("Mean IoU", "mean_iou"),
    ("Mean BF score", "mean_bf_score"),
    ("Mean Dice", "mean_dice"),
    ("Global accuracy", "global_accuracy"),
]


CLASS_METRICS = [("IoU", "iou"), ("BF score", "bf_score"), ("Dice", "dice"), ("Accuracy", "accuracy")]


def split_key(split: str, metric: str) -> str:
    """The csv column of a metric in a split (the training loss is logged as train/loss_epoch)."""
    return "train/loss_epoch" if (split, metric) == ("train", "loss") else f"{split}/{metric}"


def spans_decades(values: list[float]) -> bool:
    """Whether positive values span more than a factor of ten (a log axis then shows them all)."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    return len(positive) > 1 and max(positive) / min(positive) > 10


def _plot_splits(ax, series: Series, metric: str) -> list[float]:
    values = []
    for split in SPLITS:
        points = series.get(split_key(split, metric), [])
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=split, **SPLIT_STYLE[split])
            values += [p[1] for p in points]
    return values


def last_epoch(series: Series) -> float:
    """The largest epoch of any series (0 when empty): every panel of a figure spans 0..this."""
    return max((p[0] for points in series.values() for p in points), default=0.0)


def _finish_axis(ax, title: str, values: list[float], log_if_wide: bool = False, xmax: float = 0.0) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlim(-0.05 * max(xmax, 1.0), xmax + 0.05 * max(xmax, 1.0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if not values:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    elif log_if_wide and spans_decades(values):
        ax.set_yscale("log")
        ax.set_title(f"{title} (log scale)", fontsize=11)


def _shared_legend(fig, labels: list[str], handles: list) -> None:
    if handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=len(labels),
            fontsize=11,
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )


def summary_curves_png(series: Series) -> bytes | None:
    """Loss, mean IoU, mean BF, mean Dice and global accuracy (and the learning rate) against the epoch,
    one line per split; None when nothing was logged."""
    if not series:
        return None
    lr = [key for key in series if key.startswith("lr-")]
    panels = SUMMARY_PANELS + ([("Learning rate", lr[0])] if lr else [])
    columns, xmax = 3, last_epoch(series)
    rows = math.ceil(len(panels) / columns)
    fig, axes = subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows + 0.5), dpi=100, squeeze=False)
    for ax, (title, metric) in zip(axes.flat, panels, strict=False):
        if metric.startswith("lr-"):
            points = series[metric]
            ax.plot([p[0] for p in points], [p[1] for p in points], color="#555", marker=".")
            _finish_axis(ax, title, [p[1] for p in points], log_if_wide=True, xmax=xmax)
        else:
            values = _plot_splits(ax, series, metric)
            _finish_axis(ax, title, values, log_if_wide=metric == "loss", xmax=xmax)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = _split_handles()
    _shared_legend(fig, labels, handles)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return figure_png(fig)


def _split_handles():
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], **SPLIT_STYLE[s]) for s in SPLITS]
    return handles, list(SPLITS)


def per_class_curves_png(series: Series) -> bytes | None:
    """Small multiples of every per-class metric: rows IoU, BF score, Dice, accuracy; one column per class;
    one line per split (train, val, test). None when no per-class series was logged."""
    classes = class_names_of(series)
    if not classes:
        return None
    xmax = last_epoch(series)
    fig, axes = subplots(
        len(CLASS_METRICS),
        len(classes),
        figsize=(3.6 * len(classes), 2.6 * len(CLASS_METRICS) + 0.5),
        dpi=100,
        squeeze=False,
        sharex=True,
    )
    for r, (label, metric) in enumerate(CLASS_METRICS):
        for c, name in enumerate(classes):
            ax = axes[r][c]
            values = _plot_splits(ax, series, f"{metric}/{name}")
            _finish_axis(ax, f"{label}: {name}", values, xmax=xmax)
            if r < len(CLASS_METRICS) - 1:
                ax.set_xlabel("")
    handles, labels = _split_handles()
    _shared_legend(fig, labels, handles)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return figure_png(fig)


def sweep_curves_png(
    runs: dict[str, Series], metrics: tuple[str, ...] = ("loss", "mean_iou")
) -> bytes | None:
    """Small multiples of a sweep: one row per job (titled with its overrides), one column per metric
    (loss, mean IoU), one line per split; a job whose loss spans decades gets its own log axis."""
    runs = {label: series for label, series in runs.items() if series}
    if not runs:
        return None
    titles = {"loss": "Loss", "mean_iou": "Mean IoU"}
    xmax = max(last_epoch(series) for series in runs.values())
    fig, axes = subplots(
        len(runs), len(metrics), figsize=(5.2 * len(metrics), 2.5 * len(runs) + 0.6), dpi=100, squeeze=False
    )
    for r, (label, series) in enumerate(runs.items()):
        for c, metric in enumerate(metrics):
            ax = axes[r][c]
            values = _plot_splits(ax, series, metric)
            _finish_axis(
                ax, f"{label}\n{titles.get(metric, metric)}", values, log_if_wide=metric == "loss", xmax=xmax
            )
            ax.title.set_fontsize(9)
            if metric == "mean_iou" and values:
                ax.set_ylim(0, 1)
    handles, labels = _split_handles()
    _shared_legend(fig, labels, handles)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return figure_png(fig)
