"""The evaluation record (metrics.json's content) and the paper's Tables 1 and 2 as text and Markdown.

Pure computations over the metric values: nothing here reads or writes files.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bloodseg.metrics.instances import InstanceSettings, instances_block, instances_markdown
from bloodseg.metrics.semantics import MATLAB_CURRENT, RELEASES, check_semantics

# The paper's Table 1 (MATLAB's DataSetMetrics), then mean Dice, which is not MATLAB's: it is reported
# beside them because the white-cell literature compares on it.
DATASET_KEYS = ("global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score", "mean_dice")


DATASET_LABELS = (
    "Global accuracy",
    "Mean accuracy",
    "Mean IoU",
    "Weighted IoU",
    "Mean BF Score",
    "Mean Dice (not MATLAB's)",
)


CLASS_KEYS = ("accuracy", "iou", "dice", "mean_bf_score")  # per-class entries of metrics.json, Table 2


CLASS_LABELS = ("Accuracy", "IoU", "Dice", "Mean BF Score")


# metrics.json "metrics_version": 2 = BF and means as MATLAB forms them (zero-padded boundary,
# strict tolerance, NaN for an empty boundary, rule set named by "semantics"); absent = older.
METRICS_VERSION = 2


def json_number(value) -> float | None:
    """A plain float for JSON, None for a missing or NaN value."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _isnan(value) -> bool:
    return value is not None and math.isnan(float(value))


def nan_notes(
    results: dict[str, Any], class_names: list[str], image_ids: list[str], semantics: str
) -> list[str]:
    """One sentence per NaN in the results saying where it comes from (empty: no NaN).

    A class accuracy is NaN when the class has no labelled pixel in the ground truth (0/0); a
    class IoU or Dice when the class is in neither truth nor prediction; a BF score when the true
    or the predicted boundary is empty. Under matlab_current the mean accuracy / IoU / Dice keep
    such NaN (per dataset and per image); the dataset mean BF is NaN when an image has NaN for
    every class (both rule sets).
    """
    notes = []
    keep = semantics == MATLAB_CURRENT
    rule = (
        "the mean keeps NaN as current MATLAB does (evaluation.semantics=matlab_2017 skips it)"
        if keep
        else "left out of the mean (matlab_2017 rules)"
    )
    if _isnan(results.get("global_accuracy")):
        notes.append("Global accuracy is NaN: the ground truth has no labelled pixel at all.")
    absent = [n for i, n in enumerate(class_names) if _isnan(results["class_accuracy"][i])]
    if absent:
        notes.append(
            f"Accuracy of {_names(absent)} is NaN: no labelled pixel of that class in the ground "
            f"truth (0/0); {rule}."
        )
    neither = [n for i, n in enumerate(class_names) if _isnan(results["class_iou"][i])]
    if neither:
        notes.append(
            f"IoU and Dice of {_names(neither)} are NaN: the class is in neither the ground truth "
            f"nor the prediction; {rule}."
        )
    if not keep and _isnan(results.get("weighted_iou")) and neither:
        notes.append("Weighted IoU is NaN: MATLAB's 2017 rules add the NaN IoU term of such a class.")
    if "class_bf_score" in results:
        no_bf = [n for i, n in enumerate(class_names) if _isnan(results["class_bf_score"][i])]
        if no_bf:
            notes.append(
                f"Mean BF of {_names(no_bf)} is NaN: in every image its true or predicted boundary is "
                "empty (the BF of an image is NaN then and skipped)."
            )
        image_bf = results.get("image_bf_score")
        if image_bf is not None:
            empty = [image_ids[i] for i, v in enumerate(image_bf.tolist()) if math.isnan(v)]
            if empty:
                notes.append(
                    f"Mean BF Score is NaN: image(s) {_names(empty)} have NaN BF for every class (an "
                    "empty true or predicted boundary each), and MATLAB's mean over images keeps NaN."
                )
    for key, what in (("image_mean_accuracy", "mean accuracy"), ("image_mean_iou", "mean IoU")):
        values = results.get(key)
        if values is None:
            continue
        bad = [image_ids[i] for i, v in enumerate(values.tolist()) if math.isnan(v)]
        if bad:
            cause = (
                "a class absent from its truth"
                if key == "image_mean_accuracy"
                else "a class in neither its truth nor its prediction"
            )
            why = f"{cause}; kept NaN per image as current MATLAB does" if keep else "every class NaN there"
            notes.append(f"{len(bad)} image(s) have NaN {what} ({why}): {_names(bad)}.")
    return notes


def build_metrics(
    results: dict[str, Any],
    class_names: list[str],
    num_images: int,
    semantics: str = MATLAB_CURRENT,
    image_ids: list[str] | None = None,
    instance_settings: InstanceSettings | None = None,
    **extra,
) -> dict[str, Any]:
    """The metrics.json document from evaluation results.

    dataset: the paper's Table 1 values plus mean_dice; classes: accuracy, IoU, Dice and mean BF
    per class; the confusion matrix (counts and row-normalised percentages); the rule set
    (``semantics``, with the MATLAB release it reproduces), ``metrics_version`` and ``nan_notes``
    (why a value is NaN); with ``instance_rows`` in the results, ``instances`` (cells as objects,
    scored with ``instance_settings``). NaN is written as null.
    """
    check_semantics(semantics)
    counts = results["counts"].double()
    rows = counts.sum(1, keepdim=True)
    percent = torch.where(rows > 0, 100.0 * counts / rows.clamp_min(1), torch.zeros_like(counts))
    class_bf = results.get("class_bf_score")
    class_dice = results.get("class_dice")
    ids = list(image_ids) if image_ids is not None else [str(i) for i in range(num_images)]
    document = {
        "dataset": {key: json_number(results.get(key)) for key in DATASET_KEYS},
        "classes": {
            name: {
                "accuracy": json_number(results["class_accuracy"][i]),
                "iou": json_number(results["class_iou"][i]),
                "dice": json_number(class_dice[i]) if class_dice is not None else None,
                "mean_bf_score": json_number(class_bf[i]) if class_bf is not None else None,
            }
            for i, name in enumerate(class_names)
        },
        "semantics": semantics,
        "semantics_release": RELEASES[semantics],
        "metrics_version": METRICS_VERSION,
        "nan_notes": nan_notes(results, class_names, ids, semantics),
        "confusion_matrix": {
            "classes": list(class_names),
            "counts": counts.long().tolist(),
            "normalized_percent": [[round(float(v), 4) for v in row] for row in percent],
        },
        "num_images": int(num_images),
        **extra,
    }
    if "instance_rows" in results and instance_settings is not None:
        document["instances"] = instances_block(
            results["instance_rows"].numpy(), list(class_names), ids, instance_settings
        )
    return document


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.5f}"


def _table1_rows(metrics: dict[str, Any]) -> list[tuple[str, float | None]]:
    return [
        (label, metrics["dataset"].get(key)) for key, label in zip(DATASET_KEYS, DATASET_LABELS, strict=True)
    ]


def rules_line(metrics: dict[str, Any]) -> str:
    """The line naming the metric rule set of a metrics.json document (or saying it predates them)."""
    semantics = metrics.get("semantics")
    if semantics is None:
        return "Rules: not recorded (metrics written before metrics_version 2: BF not as MATLAB's)"
    return f"Rules: evaluation.semantics={semantics} ({RELEASES.get(semantics, '?')})"


def paper_tables(metrics: dict[str, Any], title: str = "test") -> str:
    """Table 1 (dataset metrics, then mean Dice) and Table 2 (per-class accuracy / IoU / Dice /
    mean BF) in the paper's layout, the rule set used and the notes on any NaN, as text."""
    width = max(len(n) for n in [*metrics["classes"], *DATASET_LABELS]) + 2
    lines = [f"Table 1. Semantic segmentation metrics ({title}, {metrics['num_images']} images)"]
    lines += [f"  {label:<{width}}{_fmt(value)}" for label, value in _table1_rows(metrics)]
    lines.append("Table 2. Class metrics")
    lines.append(f"  {'':<{width}}" + "".join(f"{label:<15}" for label in CLASS_LABELS).rstrip())
    for name, values in metrics["classes"].items():
        cells = "".join(f"{_fmt(values.get(key)):<15}" for key in CLASS_KEYS).rstrip()
        lines.append(f"  {name:<{width}}{cells}")
    lines.append(rules_line(metrics))
    lines += [f"NaN: {note}" for note in metrics.get("nan_notes", [])]
    if stray_line(metrics):
        lines.append(stray_line(metrics))
    return "\n".join(lines)


def stray_line(metrics: dict[str, Any]) -> str | None:
    """The sentence under the tables saying how many label pixels matched no class and were ignored;
    None when all did."""
    stray = metrics.get("stray_labels") or {}
    if not stray.get("pixels"):
        return None
    return (
        f"Ignored: {stray['pixels']:,} label pixel(s), {100 * stray['share']:.2f}% of this split's, in "
        f"{stray['files']} file(s) (most in {stray['worst']}) match no class in data.classes and are not scored"
    )


def paper_tables_markdown(metrics: dict[str, Any], title: str = "test") -> str:
    """The same two tables, the rule set and the NaN notes as Markdown (metrics.md)."""
    lines = [
        f"### Table 1. Semantic segmentation metrics ({title}, {metrics['num_images']} images)",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    lines += [f"| {label} | {_fmt(value)} |" for label, value in _table1_rows(metrics)]
    lines += [
        "",
        "### Table 2. Class metrics",
        "",
        "| class | " + " | ".join(CLASS_LABELS) + " |",
        "| --- |" + " --- |" * len(CLASS_KEYS),
    ]
    lines += [
        f"| {n} | " + " | ".join(_fmt(v.get(key)) for key in CLASS_KEYS) + " |"
        for n, v in metrics["classes"].items()
    ]
    lines += ["", rules_line(metrics)]
    notes = metrics.get("nan_notes", [])
    if notes:
        lines += ["", "NaN values:", ""] + [f"- {note}" for note in notes]
    if stray_line(metrics):
        lines += ["", stray_line(metrics)]
    if "instances" in metrics:
        lines += ["", instances_markdown(metrics["instances"]).rstrip()]
    return "\n".join(lines) + "\n"
