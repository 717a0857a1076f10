"""``python -m bloodseg.report RUN_OR_MULTIRUN_DIR``: one self-contained ``report.html`` of a run or a sweep.

For a run directory: training curves (loss, mean IoU, BF score, learning rate; from csv/metrics.csv), the
paper's Tables 1 and 2 and the per-image metrics (metrics.json, per_image_metrics.csv), the confusion
matrix, the best/worst overlays, and where the run's W&B data lives. For a Hydra multirun directory: the
sweep table and heatmap (bloodseg.sweep_report), every job's curves in one plot, and the sections above
for the best job. Every picture is an embedded PNG (``data:`` URI) and the style sheet is inline: the file
opens in any browser without a network and can be mailed or archived as is.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import html
import io
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bloodseg.arguments import key_value_options
from bloodseg.metrics.report import CLASS_KEYS, CLASS_LABELS, DATASET_KEYS, DATASET_LABELS, rules_line
from bloodseg.sweep_report import (
    RANKING_TEXT,
    collect_jobs,
    ranking_split,
    summary_rows,
    varying_keys,
    write_sweep_summary,
)
from bloodseg.viz import plt  # matplotlib with the Agg backend

SECTIONS_RUN = [
    ("curves", "Training curves"),
    ("metrics", "Metrics"),
    ("confusion", "Confusion matrix"),
    ("overlays", "Best and worst test images"),
    ("files", "Files and W&B"),
]
SECTIONS_SWEEP = [("sweep", "Sweep table"), ("heatmap", "Heatmap"), *SECTIONS_RUN]

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d2330;
       background: #f6f7f9; }
header { background: #243447; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header .sub { opacity: .8; font-size: 13px; word-break: break-all; }
nav { background: #fff; border-bottom: 1px solid #dde1e7; padding: 8px 32px; position: sticky; top: 0; }
nav a { margin-right: 18px; color: #2463b4; text-decoration: none; font-size: 14px; }
main { padding: 8px 32px 40px 32px; max-width: 1400px; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 14px 20px; margin: 18px 0; }
h2 { font-size: 18px; margin: 4px 0 12px 0; }
h3 { font-size: 15px; margin: 14px 0 8px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px 0; }
th, td { border: 1px solid #dde1e7; padding: 4px 9px; text-align: right; }
th { background: #eef1f5; }
td.l, th.l { text-align: left; }
tr.best td { background: #eaf6ea; }
img { max-width: 100%; height: auto; border: 1px solid #dde1e7; }
img.square { max-width: 560px; }
figure { margin: 8px 0 16px 0; }
figcaption { font-size: 12px; color: #5a6372; }
code { background: #eef1f5; padding: 1px 4px; border-radius: 3px; font-size: 12px; }
.note { color: #5a6372; font-size: 13px; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; }
details { margin: 8px 0; }
"""


# ---- small helpers -----------------------------------------------------------------------------------
def esc(value: Any) -> str:
    """HTML-escaped text; "://" is written as character references, so the file's source holds no URL."""
    return html.escape(str(value)).replace("://", ":&#47;&#47;")


def fmt(value: Any, digits: int = 5) -> str:
    """A number for a table cell ("n/a" for missing or NaN)."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def img_tag(png: bytes, alt: str, caption: str | None = None, css: str = "") -> str:
    tag = f'<img src="{data_uri(png)}" alt="{esc(alt)}"' + (f' class="{css}"' if css else "") + ">"
    if caption is None:
        return tag
    return f"<figure>{tag}<figcaption>{esc(caption)}</figcaption></figure>"


def table(header: list[str] | None, rows: list[list[Any]], left: int = 1, row_class=None) -> str:
    """An HTML table; the first ``left`` columns are left-aligned text, the rest formatted numbers."""
    out = ["<table>"]
    if header:
        out.append("<tr>")
        out += [f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header)]
        out.append("</tr>")
    for r, row in enumerate(rows):
        css = f' class="{row_class(r)}"' if row_class and row_class(r) else ""
        cells = [
            f'<td class="l">{esc(v)}</td>' if i < left or isinstance(v, str) else f"<td>{esc(fmt(v))}</td>"
            for i, v in enumerate(row)
        ]
        out.append(f"<tr{css}>{''.join(cells)}</tr>")
    out.append("</table>")
    return "".join(out)


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---- training curves ------------------------------------------------------------------------------------
CURVE_PANELS = [
    ("Loss", ["train/loss_epoch", "val/loss", "test/loss"]),
    ("Mean IoU", ["train/mean_iou", "val/mean_iou", "test/mean_iou"]),
    ("Mean BF score", ["val/mean_bf_score", "test/mean_bf_score"]),
]


def read_curves(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Per-epoch series of csv/metrics.csv: {key: [(epoch, value), ...]} (the learning rate included)."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        epoch = row.get("epoch") or ""
        for key, text in row.items():
            if key in ("epoch", "step") or key is None or text in ("", None):
                continue
            try:
                value = float(text)
            except ValueError:
                continue
            if key.startswith("lr-"):  # LearningRateMonitor rows carry a step, no epoch: one per epoch
                series.setdefault(key, []).append((float(len(series.get(key, []))), value))
            elif epoch != "" and not key.endswith("_step"):
                series.setdefault(key, []).append((float(epoch), value))
    return series


def curves_png(runs: dict[str, dict[str, list[tuple[float, float]]]]) -> bytes | None:
    """Loss, mean IoU, mean BF (and learning rate) against the epoch, one line per run and split."""
    if not any(runs.values()):
        return None
    has_lr = any(k.startswith("lr-") for series in runs.values() for k in series)
    panels = CURVE_PANELS + ([("Learning rate", ["lr-"])] if has_lr else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, keys) in zip(axes, panels, strict=True):
        plotted = False
        for r, (label, series) in enumerate(runs.items()):
            for k, key in enumerate(keys):
                matches = [
                    name for name in series if name == key or (key == "lr-" and name.startswith("lr-"))
                ]
                for name in matches:
                    points = sorted(series[name])
                    xs, ys = [p[0] for p in points], [p[1] for p in points]
                    split = name.split("/")[0]
                    text = f"{label} {name}" if len(runs) > 1 else name
                    style = {"train": "-", "val": "--", "test": ""}.get(split, "-")
                    marker = (
                        "o" if split == "test" or len(points) == 1 else ("." if len(points) < 30 else None)
                    )
                    ax.plot(
                        xs,
                        ys,
                        linestyle=style or "none",
                        marker=marker,
                        color=colors[(r * 3 + k) % len(colors)],
                        label=text,
                    )
                    plotted = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    return figure_png(fig)


# ---- one run ------------------------------------------------------------------------------------------
def run_config(run_dir: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


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


def metrics_body(run_dir: Path, metrics: dict[str, Any] | None) -> str:
    """Tables 1 and 2 and the per-image metrics of a run; a failed run shows its error instead."""
    if metrics is None:
        status = read_json(run_dir / "job_status.json") or {}
        if status.get("status") == "failed":
            return (
                f'<p class="note"><b>This run failed</b>: {esc(status.get("error", "unknown error"))}</p>'
                f"<details><summary>Traceback</summary><pre>{esc(status.get('traceback', ''))}</pre></details>"
            )
        return '<p class="note">No metrics.json in this run directory (no test evaluation yet).</p>'
    parts = [
        f"<h3>Table 1. Semantic segmentation metrics (test, {esc(metrics.get('num_images', '?'))} images)</h3>"
    ]
    parts.append(
        table(
            ["metric", "value"],
            [
                [label, metrics["dataset"].get(key)]
                for key, label in zip(DATASET_KEYS, DATASET_LABELS, strict=True)
            ],
        )
    )
    parts.append("<h3>Table 2. Class metrics</h3>")
    parts.append(
        table(
            ["class", *CLASS_LABELS],
            [[n, *[v.get(key) for key in CLASS_KEYS]] for n, v in metrics["classes"].items()],
        )
    )
    parts.append(f'<p class="note">{esc(rules_line(metrics))}</p>')
    parts += [f'<p class="note">NaN: {esc(note)}</p>' for note in metrics.get("nan_notes", [])]
    extra = []
    for key in ("model_init", "class_weighting"):
        if key in metrics:
            extra.append([key.replace("_", " "), str(metrics[key])])
    if isinstance(metrics.get("class_weights"), dict):
        extra.append(
            ["class weights", ", ".join(f"{k}={fmt(v, 4)}" for k, v in metrics["class_weights"].items())]
        )
    if extra:
        parts.append(table(None, extra, left=2))
    per_image = run_dir / "per_image_metrics.csv"
    if per_image.is_file():
        with open(per_image, newline="") as handle:
            rows = list(csv.reader(handle))
        if len(rows) > 1:
            body = [[r[0], *[float(x) if x else None for x in r[1:]]] for r in rows[1:]]
            parts.append(
                f"<details><summary>Per-image metrics ({len(body)} images)</summary>{table(rows[0], body)}</details>"
            )
    return "".join(parts)


def confusion_body(run_dir: Path, metrics: dict[str, Any] | None) -> str:
    parts = []
    png = run_dir / "confusion_matrix.png"
    if png.is_file():
        parts.append(
            img_tag(
                png.read_bytes(), "confusion matrix", "Rows: true class; columns: predicted class.", "square"
            )
        )
    if metrics and "confusion_matrix" in metrics:
        cm = metrics["confusion_matrix"]
        names = cm["classes"]
        rows = [
            [name, *[f"{p:.2f}% ({c:,})" for p, c in zip(pct, counts, strict=True)]]
            for name, pct, counts in zip(names, cm["normalized_percent"], cm["counts"], strict=True)
        ]
        parts.append(table(["true \\ predicted", *names], rows, left=len(names) + 1))
    return "".join(parts) or '<p class="note">No confusion matrix in this run directory.</p>'


def overlays_body(run_dir: Path) -> str:
    parts = []
    for kind in ("best", "worst"):
        files = sorted(run_dir.glob(f"overlay_{kind}_*.png"))
        for path in files:
            image_id = path.stem.split("_", 2)[2]
            parts.append(
                img_tag(
                    path.read_bytes(),
                    path.stem,
                    f"{kind} by mean IoU: {image_id} (image | ground truth | prediction)",
                )
            )
    return "".join(parts) or '<p class="note">No overlays in this run directory.</p>'


def wandb_runs(run_dir: Path) -> list[Path]:
    return (
        sorted(p for p in (run_dir / "wandb").glob("*run-*") if p.is_dir())
        if (run_dir / "wandb").is_dir()
        else []
    )


def files_body(run_dir: Path) -> str:
    rows = [["run directory", str(run_dir.resolve())]]
    for name in (
        "metrics.json",
        "metrics.md",
        "confusion_matrix.csv",
        "per_image_metrics.csv",
        "csv/metrics.csv",
        "checkpoints/last.ckpt",
        "split.json",
    ):
        if (run_dir / name).exists():
            rows.append([name, "present"])
    run_id = (
        (run_dir / "wandb_run_id.txt").read_text().strip()
        if (run_dir / "wandb_run_id.txt").is_file()
        else None
    )
    parts = [table(None, rows, left=2)]
    runs = wandb_runs(run_dir)
    if runs:
        items = []
        for path in runs:
            offline = path.name.startswith("offline-")
            line = f"<li><code>{esc(path.resolve())}</code>"
            if offline:
                line += f" (offline; upload with <code>wandb sync {esc(path.resolve())}</code>)"
            items.append(line + "</li>")
        parts.append(f"<h3>W&amp;B run {esc(run_id or '')}</h3><ul>{''.join(items)}</ul>")
    else:
        parts.append(
            '<p class="note">No W&amp;B run in this directory (logger=csv, or W&amp;B could not start).</p>'
        )
    return "".join(parts)


def run_sections(run_dir: Path, curves: bytes | None, note: str = "") -> list[str]:
    metrics = read_json(run_dir / "metrics.json")
    cfg = run_config(run_dir)
    curves_html = (img_tag(curves, "training curves") if curves else "") or (
        '<p class="note">No csv/metrics.csv in this run directory.</p>'
    )
    settings = config_rows(cfg)
    if settings:
        of = f" of job {run_dir.name}" if note else ""
        curves_html += f"<h3>Settings{esc(of)}</h3>" + table(["setting", "value"], settings, left=2)
    prefix = f'<p class="note">{esc(note)}</p>' if note else ""
    bodies = {
        "curves": curves_html,
        "metrics": prefix + metrics_body(run_dir, metrics),
        "confusion": prefix + confusion_body(run_dir, metrics),
        "overlays": prefix + overlays_body(run_dir),
        "files": prefix + files_body(run_dir),
    }
    return [section(sid, title, bodies[sid]) for sid, title in SECTIONS_RUN]


# ---- a sweep ------------------------------------------------------------------------------------------
def sweep_sections(multirun_dir: Path) -> tuple[list[str], Path | None]:
    """The sweep table and heatmap sections, and the best completed job's directory."""
    jobs = collect_jobs(multirun_dir)
    header, rows = summary_rows(jobs)
    keys = varying_keys(jobs)
    completed = [job for job in jobs if job.metrics is not None]
    split = ranking_split(jobs)
    best = max(completed, key=lambda job: job.rank_value(split)).path if completed else None
    shown = [[*row[:-1], Path(row[-1]).name] for row in rows]
    table_html = table(
        [*header[:-1], "job"], shown, left=len(keys), row_class=lambda r: "best" if r == 0 and best else ""
    )
    common = sorted({f"{k}={v}" for job in jobs for k, v in job.overrides.items() if k not in keys})
    done = len(completed)
    offline = sorted(multirun_dir.glob("*/wandb/offline-run-*"))
    sync = (
        f'<p class="note">{len(offline)} offline W&amp;B runs (one per job, group named after the sweep); upload '
        f"them with <code>wandb sync {esc(multirun_dir.resolve())}/*/wandb/offline-run-*</code></p>"
        if offline
        else ""
    )
    intro = sync + (
        f'<p class="note">{len(jobs)} jobs, {done} with metrics, best first (green). {esc(RANKING_TEXT[split])} '
        f"Varying: {esc(', '.join(keys) or 'nothing')}. Common overrides: {esc(' '.join(common) or 'none')}.</p>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_sweep_summary(multirun_dir, Path(tmp))
        heatmap = paths["heatmap"].read_bytes() if "heatmap" in paths else None
    if heatmap is not None:
        heat_html = img_tag(heatmap, "sweep heatmap", f"Test mean IoU over {keys[0]} x {keys[1]}.")
    elif len(keys) == 1 and done:
        heat_html = img_tag(
            bar_png(jobs, keys[0]),
            "sweep bar chart",
            f"One swept key ({keys[0]}): test mean IoU per value (a heatmap needs two keys).",
        )
    else:
        heat_html = (
            f'<p class="note">A heatmap needs exactly two swept keys; this sweep varies {len(keys)}.</p>'
        )
    return [
        section("sweep", "Sweep table", intro + table_html),
        section("heatmap", "Heatmap", heat_html),
    ], best


def bar_png(jobs, key: str) -> bytes:
    done = sorted((j for j in jobs if j.metrics is not None), key=lambda j: str(j.overrides.get(key)))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(done) + 2), 3.2), dpi=100)
    ax.bar([str(j.overrides.get(key)) for j in done], [j.mean_iou for j in done], color="#2463b4")
    for i, job in enumerate(done):
        ax.text(i, job.mean_iou, f"{job.mean_iou:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel(key)
    ax.set_ylabel("test mean IoU")
    fig.tight_layout()
    return figure_png(fig)


# ---- the document -------------------------------------------------------------------------------------
def is_multirun_dir(path: Path) -> bool:
    """A Hydra multirun directory: job sub-directories (with .hydra/overrides.yaml), none at its root."""
    return not (path / ".hydra").is_dir() and any(path.rglob(".hydra/overrides.yaml"))


def render(path: Path) -> str:
    """The report of a run directory or multirun directory, as one HTML document."""
    path = Path(path)
    if is_multirun_dir(path):
        sweep, best = sweep_sections(path)
        jobs = collect_jobs(path)
        keys = varying_keys(jobs)
        runs = {
            " ".join(f"{k}={job.overrides.get(k)}" for k in keys) or job.path.name: read_curves(job.path)
            for job in jobs
        }
        target = best or jobs[0].path
        note = f"Job {target.name} ({'best by test mean IoU' if best else 'no job has metrics'}): {target}"
        body = sweep + run_sections(target, curves_png(runs), note)
        sections, kind = SECTIONS_SWEEP, "Sweep"
    else:
        if not any((path / name).exists() for name in ("metrics.json", "csv", ".hydra")):
            raise FileNotFoundError(f"{path} is neither a bloodseg run directory nor a multirun directory")
        body = run_sections(path, curves_png({path.name: read_curves(path)}))
        sections, kind = SECTIONS_RUN, "Run"
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title in sections)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>bloodseg report: {esc(path.name)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>bloodseg {kind.lower()} report</h1><div class="sub">{esc(path.resolve())} '
        f"&middot; generated {esc(stamp)}</div></header><nav>{nav}</nav><main>{''.join(body)}</main></body></html>\n"
    )


def write_report(path: Path, out: Path | None = None) -> Path:
    """Write report.html (default: inside ``path``) and return its path."""
    out = Path(out) if out else Path(path) / "report.html"
    document = render(Path(path))
    out.write_text(document, encoding="utf-8")
    return out


OPTIONS = ("out",)  # also accepted as key=value (out=FILE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bloodseg.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options also as key=value, as in the other tools: out=FILE is --out FILE.",
    )
    parser.add_argument(
        "path", type=Path, help="a run directory (outputs/...) or a multirun directory (multirun/...)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the HTML (default: PATH/report.html)"
    )
    args = parser.parse_args(key_value_options(sys.argv[1:] if argv is None else argv, OPTIONS))
    if not args.path.is_dir():
        print(f"error: {args.path} is not a directory", file=sys.stderr)
        return 2
    try:
        out = write_report(args.path, args.out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
