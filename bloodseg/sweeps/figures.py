"""Figures that compare the jobs of a sweep (PNG bytes): parallel coordinates of the swept keys against
the ranking metric, a heatmap for two swept keys, a sorted dot chart with error bars for one key."""

from __future__ import annotations

import io
import statistics

import matplotlib
import numpy as np

from bloodseg.sweeps.results import JobRecord
from bloodseg.viz.figures import figure_png, subplots, sweep_heatmap, value_sort_key


def _score(job: JobRecord, split: str) -> float | None:
    value = job.rank_value(split)
    return None if value == float("-inf") else value


def parallel_coordinates_png(jobs: list[JobRecord], keys: list[str], split: str) -> bytes | None:
    """One line per scored job across an axis per swept key (its values in sorted order) and a last axis
    for the mean IoU of the ranking split, coloured by that score. None without keys or scores."""
    scored = [(job, _score(job, split)) for job in jobs]
    scored = [(job, s) for job, s in scored if s is not None]
    if not keys or not scored:
        return None
    levels = {k: sorted({str(job.overrides.get(k)) for job, _ in scored}, key=value_sort_key) for k in keys}
    scores = [s for _, s in scored]
    low, high = min(scores), max(scores)
    span = (high - low) or 1.0
    fig, ax = subplots(figsize=(2.4 * (len(keys) + 1) + 1.5, 4.2), dpi=100)
    cmap = matplotlib.colormaps.get_cmap("viridis")
    for job, score in sorted(scored, key=lambda item: item[1]):
        ys = [levels[k].index(str(job.overrides.get(k))) / max(1, len(levels[k]) - 1) for k in keys] + [
            (score - low) / span
        ]
        ax.plot(range(len(keys) + 1), ys, color=cmap((score - low) / span), linewidth=2, marker="o")
    for i, key in enumerate(keys):
        ax.axvline(i, color="#999", linewidth=0.8)
        for j, value in enumerate(levels[key]):
            ax.text(
                i + 0.04,
                j / max(1, len(levels[key]) - 1),
                value,
                fontsize=9,
                va="center",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )
    ax.axvline(len(keys), color="#999", linewidth=0.8)
    for frac in (0.0, 0.5, 1.0):
        ax.text(len(keys) + 0.04, frac, f"{low + frac * span:.3f}", fontsize=9, va="center")
    ax.set_xticks(range(len(keys) + 1), [*keys, f"{split} mean IoU"], fontsize=10)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(keys) + 0.5)
    ax.set_ylim(-0.08, 1.08)
    ax.set_title("Swept keys against the score (one line per job; colour = score)", fontsize=11)
    return figure_png(fig)


def heatmap_png(jobs: list[JobRecord], keys: list[str]) -> bytes | None:
    """Test mean IoU over a two-key grid (bloodseg.viz.sweep_heatmap), each cell the mean over the jobs
    with those two values (seeds); None when nothing has metrics."""
    cells: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        if job.metrics is not None:
            cells.setdefault((job.overrides.get(keys[0]), job.overrides.get(keys[1])), []).append(
                job.mean_iou
            )
    if len(keys) != 2 or not cells:
        return None
    buffer = io.BytesIO()
    sweep_heatmap([(a, b, statistics.fmean(v)) for (a, b), v in cells.items()], keys, buffer)
    return buffer.getvalue()


def comparison_plan(keys: list[str]) -> tuple[list[str] | None, list[str]]:
    """Which comparison figures a sweep gets: (the two keys of a heatmap or None, the keys of dot charts).
    Seeds are repeats, not a setting: with other keys varying, they become the error bars."""
    settings = [k for k in keys if k != "seed"] or keys
    if len(settings) == 2:
        return settings, []
    return None, settings


def dot_chart_png(jobs: list[JobRecord], key: str, split: str) -> bytes | None:
    """Mean IoU of the ranking split per value of one key, sorted best last, a dot at the mean of the jobs
    with that value (seeds, other keys) and a bar of ± one standard deviation; n beside each dot."""
    groups: dict[str, list[float]] = {}
    for job in jobs:
        score = _score(job, split)
        if score is not None:
            groups.setdefault(str(job.overrides.get(key)), []).append(score)
    if not groups:
        return None
    rows = sorted(
        (
            (value, statistics.fmean(s), statistics.stdev(s) if len(s) > 1 else 0.0, len(s))
            for value, s in groups.items()
        ),
        key=lambda row: row[1],
    )
    fig, ax = subplots(figsize=(7.0, 0.55 * len(rows) + 1.4), dpi=100)
    ys = np.arange(len(rows))
    ax.errorbar(
        [r[1] for r in rows],
        ys,
        xerr=[r[2] for r in rows],
        fmt="o",
        color="#2463b4",
        ecolor="#8fb0dc",
        elinewidth=3,
        capsize=4,
    )
    for y, (_, mean, std, n) in zip(ys, rows, strict=True):
        ax.annotate(
            f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else "") + f"  (n={n})",
            (mean, y),
            xytext=(8, 6),
            textcoords="offset points",
            fontsize=9,
        )
    ax.set_yticks(ys, [r[0] for r in rows])
    ax.set_ylabel(key)
    ax.set_xlabel(f"{split} mean IoU (mean ± std over the jobs with that value)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    return figure_png(fig)
