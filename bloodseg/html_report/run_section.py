"""What the HTML report shows of one run directory: curves, Tables 1 and 2, Figures 4 to 7, the config,
the failure (if any), the files and the W&B run; a dict per run for templates/report.html.j2.

A damaged ``metrics.json`` or ``job_status.json`` (bloodseg.sweeps.results.read_job) is shown as the run's
failure banner naming the file and why, and its content is not used."""

from __future__ import annotations

import base64
import csv
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bloodseg.data.labels import FALLBACK_COLORS
from bloodseg.metrics.tables import CLASS_KEYS, CLASS_LABELS, DATASET_KEYS, DATASET_LABELS, rules_line
from bloodseg.sweeps.results import UnreadableFile, read_metrics_file, read_status_file
from bloodseg.tracking.csv_log import Series, read_curves
from bloodseg.viz.curves import per_class_curves_png, summary_curves_png
from bloodseg.viz.paper import FIGURE4, FIGURE5, UNLABELLED_COLOR, hex_color

FILES = (
    "metrics.json",
    "metrics.md",
    "confusion_matrix.csv",
    "per_image_metrics.csv",
    "csv/metrics.csv",
    "checkpoints/last.ckpt",
    "split.json",
    FIGURE4,
    FIGURE5,
)


# ---- small helpers -----------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 5) -> str:
    """A number for a table cell ("n/a" for missing or NaN)."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def data_uri(png: bytes | None) -> str | None:
    """A PNG as a ``data:`` URI (None stays None)."""
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes | None, alt: str, caption: str = "", css: str = "", legend=None) -> dict | None:
    """A figure for the template: embedded image, alt text, caption, optional class-colour legend."""
    return (
        None
        if png is None
        else {"src": data_uri(png), "alt": alt, "caption": caption, "css": css, "legend": legend}
    )


# ---- one run ------------------------------------------------------------------------------------------
def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's .hydra/config.yaml ({} when missing)."""
    try:
        return yaml.safe_load((Path(run_dir) / ".hydra" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def class_legend(cfg: dict[str, Any], names: list[str]) -> list[dict[str, str]]:
    """Class colour swatches ({name, color}) for the overlays, "unlabelled" last."""
    configured = {c.get("name"): c.get("color") for c in (cfg.get("data", {}) or {}).get("classes") or []}
    items = []
    for i, name in enumerate(names):
        color = configured.get(name) or FALLBACK_COLORS[i % len(FALLBACK_COLORS)]
        items.append({"name": name, "color": hex_color(color)})
    items.append({"name": "unlabelled (image shows through)", "color": "transparent"})
    return items


def read_checked(reader: Callable[[Path], Any], path: Path, problems: list[str]) -> Any:
    """``reader(path)``; None when the file is missing, and None with the reason (``<file> unreadable:
    <path>: <why>``) appended to ``problems`` when it is damaged."""
    if not Path(path).exists():
        return None
    try:
        return reader(Path(path))
    except UnreadableFile as error:
        problems.append(str(error))
        return None


def failure_of(run_dir: Path, status: dict[str, Any] | None = None) -> dict[str, str] | None:
    """{"status", "error", "traceback"} of a failed or interrupted run (its job_status.json, or ``status``
    when already read), else None; a damaged job_status.json counts as none (see with_damage)."""
    if status is None:
        status = read_checked(read_status_file, Path(run_dir) / "job_status.json", []) or {}
    if status.get("status") in ("failed", "interrupted"):
        return {
            "status": "failed" if status["status"] == "failed" else "was interrupted",
            "error": status.get("error", "interrupted (Ctrl-C): re-run the same command to continue"),
            "traceback": status.get("traceback", ""),
        }
    return None


def with_damage(failure: dict[str, str] | None, problems: list[str]) -> dict[str, str] | None:
    """The run's failure banner with its damaged files added (``has a damaged file`` when it did not fail)."""
    if not problems:
        return failure
    if failure is None:
        return {"status": "has a damaged file", "error": "; ".join(problems), "traceback": ""}
    return {**failure, "error": "; ".join([failure["error"], *problems])}


def read_per_image(run_dir: Path) -> tuple[list[str], list[list[str]]]:
    """per_image_metrics.csv as its header and rows of text (both empty when missing or without rows)."""
    path = Path(run_dir) / "per_image_metrics.csv"
    if not path.is_file():
        return [], []
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return (rows[0], rows[1:]) if len(rows) > 1 else ([], [])


OVERLAY_NAME = re.compile(r"overlay_(best|worst|only\d+|most\d+)_(.+)")


def overlay_kind(kind: str, names: list[str]) -> str:
    """What an overlay file's kind means: best / worst by mean IoU, or the image showing one class best."""
    if kind in ("best", "worst"):
        return f"{kind} test image by mean IoU"
    showcase, index = re.fullmatch(r"(only|most)(\d+)", kind).groups()
    k = int(index)
    name = names[k] if k < len(names) else f"class {k}"
    return (
        f"test image with only {name} among the cell classes"
        if showcase == "only"
        else f"best {name} test image"
    )


def overlay_caption(kind: str, image_id: str, per_image: dict[str, dict[str, str]], names: list[str]) -> str:
    """Figure 7's caption: which image, and the IoU of each class on it."""
    values = per_image.get(image_id, {})
    ious = ", ".join(f"{n} {fmt(_float(values.get(f'iou_{n}')), 3)}" for n in names if f"iou_{n}" in values)
    return (
        f"{overlay_kind(kind, names)}: {image_id} (image | ground truth | prediction). "
        f"Per-class IoU: {ious or 'n/a'}"
    )


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def wandb_dirs(run_dir: Path) -> list[dict[str, Any]]:
    """The run's W&B run folders, with the commands to view and upload the offline ones."""
    folder = Path(run_dir) / "wandb"
    found = sorted(p for p in folder.glob("*run-*") if p.is_dir()) if folder.is_dir() else []
    return [{"path": str(p.resolve()), "offline": p.name.startswith("offline-")} for p in found]


def run_context(
    run_dir: Path,
    anchor: str,
    title: str,
    note: str = "",
    series: Series | None = None,
    damaged: list[str] | None = None,
) -> dict[str, Any]:
    """Everything the template shows of one run directory; ``series``: its curves when already read;
    ``damaged``: its damaged files when the caller read them (else found here: metrics.json and
    job_status.json), listed under "unreadable" and in the failure banner."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    metrics = read_checked(read_metrics_file, run_dir / "metrics.json", problems)
    status = read_checked(read_status_file, run_dir / "job_status.json", problems) or {}
    problems = problems if damaged is None else damaged
    cfg = run_config(run_dir)
    series = read_curves(run_dir) if series is None else series
    names = (
        list(metrics["classes"])
        if metrics
        else [c.get("name") for c in cfg.get("data", {}).get("classes", [])]
    )
    legend = class_legend(cfg, names)
    header, raw_rows = read_per_image(run_dir)
    image_rows = [[r[0], *[fmt(float(x)) if x else "n/a" for x in r[1:]]] for r in raw_rows]
    per_image = {row[0]: dict(zip(header, row, strict=False)) for row in raw_rows}
    overlays = []
    order = {"best": 0, "worst": 1}
    found = [(m, p) for p in run_dir.glob("overlay_*.png") if (m := OVERLAY_NAME.fullmatch(p.stem))]
    for match, path in sorted(found, key=lambda mp: (order.get(mp[0][1], 2), mp[0][1], mp[1].name)):
        kind, image_id = match[1], match[2]
        overlays.append(
            figure(
                path.read_bytes(), path.stem, overlay_caption(kind, image_id, per_image, names), legend=legend
            )
        )
    context: dict[str, Any] = {
        "anchor": anchor,
        "title": title,
        "note": note,
        "path": str(run_dir.resolve()),
        "failure": with_damage(failure_of(run_dir, status), problems),
        "unreadable": problems,
        "curves": figure(
            summary_curves_png(series),
            "training curves",
            "Per-epoch values from csv/metrics.csv; train line, val dashed, test dots.",
        ),
        "class_curves": figure(
            per_class_curves_png(series),
            "per-class curves",
            "Every per-class metric, one column per class, one line per split.",
        ),
        "metrics": None,
        "figure4": _file_figure(
            run_dir / FIGURE4,
            "Figure 4",
            "Figure 4. Ground truth overlaid on a training "
            "image in the class colours (legend in the figure); unlabelled pixels hatched in magenta.",
        ),
        "figure5": _file_figure(
            run_dir / FIGURE5,
            "Figure 5",
            "Figure 5. Labelled pixels per class in the "
            "training split, beside the class weights used by the loss.",
        ),
        "figure6": _file_figure(
            run_dir / "confusion_matrix.png",
            "Figure 6 confusion matrix",
            "Figure 6. Normalised confusion matrix of the test split; rows: true class, "
            "columns: predicted class.",
            css="square",
        ),
        "overlays": overlays,
        "config_yaml": yaml.safe_dump(cfg, sort_keys=False) if cfg else "",
        "settings": config_rows(cfg),
        "files": [[name, "present"] for name in FILES if (run_dir / name).exists()],
        "wandb": wandb_dirs(run_dir),
        "wandb_run_id": _text(run_dir / "wandb_run_id.txt"),
        "unlabelled_color": hex_color(UNLABELLED_COLOR),
    }
    if metrics is not None:
        context["metrics"] = metrics_context(metrics, header, image_rows)
    return context


def _text(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def _file_figure(path: Path, alt: str, caption: str, css: str = "", legend=None) -> dict | None:
    return figure(path.read_bytes(), alt, caption, css, legend) if path.is_file() else None


def metrics_context(metrics: dict[str, Any], image_header: list[str], image_rows: list[list[str]]) -> dict:
    """Tables 1 and 2, the rules line, class weights and the per-image table of metrics.json."""
    weights = metrics.get("class_weights")
    cm = metrics.get("confusion_matrix")
    return {
        "num_images": metrics.get("num_images", "?"),
        "table1": [
            [label, fmt(metrics["dataset"].get(key))]
            for key, label in zip(DATASET_KEYS, DATASET_LABELS, strict=True)
        ],
        "class_header": ["class", *CLASS_LABELS],
        "table2": [[n, *[fmt(v.get(key)) for key in CLASS_KEYS]] for n, v in metrics["classes"].items()],
        "rules": rules_line(metrics),
        "nan_notes": metrics.get("nan_notes", []),
        "extra": [
            [k.replace("_", " "), str(metrics[k])] for k in ("model_init", "class_weighting") if k in metrics
        ]
        + (
            [["class weights", ", ".join(f"{k}={fmt(v, 4)}" for k, v in weights.items())]]
            if isinstance(weights, dict)
            else []
        ),
        "image_header": image_header,
        "image_rows": image_rows,
        "confusion": None
        if not cm
        else {
            "header": ["true \\ predicted", *cm["classes"]],
            "rows": [
                [name, *[f"{p:.2f}% ({c:,})" for p, c in zip(pct, counts, strict=True)]]
                for name, pct, counts in zip(
                    cm["classes"], cm["normalized_percent"], cm["counts"], strict=True
                )
            ],
        },
    }


def config_rows(cfg: dict[str, Any]) -> list[list[str]]:
    """The settings a reader wants first, from the run's .hydra/config.yaml."""

    def get(path: str):
        node: Any = cfg
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    wanted = [
        ("experiment", "name"),
        ("model", "model.name"),
        ("class weighting", "loss.class_weighting"),
        ("optimizer", "optimizer._target_"),
        ("learning rate", "optimizer.lr"),
        ("max epochs", "trainer.max_epochs"),
        ("batch size", "data.batch_size"),
        ("image size", "data.image_size"),
        ("data source", "data.source"),
        ("seed", "seed"),
    ]
    return [[label, str(get(key))] for label, key in wanted if get(key) is not None]
