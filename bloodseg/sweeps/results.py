"""Reading a Hydra multirun: every job's overrides, status and metrics, and the sweep summary files.

Shared by ``bloodseg.sweep_report``, ``bloodseg.report``, ``bloodseg.aggregate`` and the end-of-multirun
summary. Jobs are ranked by their validation mean IoU when every scored job has one (the test split then
plays no part in the choice), else by test mean IoU, and the summary says which. Jobs without metrics are
listed as failed or incomplete, never dropped.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bloodseg.metrics.tables import DATASET_KEYS
from bloodseg.viz.figures import sweep_heatmap


@dataclass
class JobRecord:
    """One job of a multirun: its directory, overrides and outcome."""

    path: Path
    overrides: dict[str, str]
    status: str
    metrics: dict | None = None
    error: str | None = None
    class_iou: dict[str, float | None] = field(default_factory=dict)

    @property
    def mean_iou(self) -> float:
        """Test mean IoU (-inf when missing)."""
        value = (self.metrics or {}).get("dataset", {}).get("mean_iou")
        return float("-inf") if value is None else float(value)

    @property
    def val_mean_iou(self) -> float | None:
        """The last epoch's validation mean IoU, None when the job had no validation split."""
        return ((self.metrics or {}).get("validation") or {}).get("mean_iou")

    def rank_value(self, split: str) -> float:
        """Mean IoU of the ranking split ("val" or "test"); -inf when missing."""
        value = self.val_mean_iou if split == "val" else self.mean_iou
        return float("-inf") if value is None else float(value)


RANKING_TEXT = {
    "val": "Ranked by validation mean IoU (last epoch; the test split plays no part in the choice).",
    "test": "Ranked by TEST mean IoU: these jobs have no validation split, so choosing from this table "
    "selects on the test split and its best score is optimistic; sweep with data.val_fraction=0.2.",
}


def split_to_rank_on(val_mean_ious: list[float | None]) -> str:
    """The split to rank on: val when there are scored jobs (or configurations) and every one has a
    validation mean IoU, else test (choosing on the test split: the best score is then optimistic)."""
    return "val" if val_mean_ious and all(v is not None for v in val_mean_ious) else "test"


def ranking_split(jobs: list[JobRecord]) -> str:
    """The ranking split of a sweep's jobs: "val" when every job with metrics has a validation mean IoU."""
    return split_to_rank_on([job.val_mean_iou for job in jobs if job.metrics is not None])


def _overrides(job_dir: Path) -> dict[str, str]:
    items = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    pairs = {}
    for item in items:
        key, _, value = str(item).lstrip("+~").partition("=")
        pairs[key] = value
    return pairs


def collect_jobs(multirun_dir: Path) -> list[JobRecord]:
    """Every job directory under multirun_dir (those holding .hydra/overrides.yaml), with its outcome."""
    jobs = []
    for overrides_file in sorted(Path(multirun_dir).rglob(".hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        status_file, metrics_file = job_dir / "job_status.json", job_dir / "metrics.json"
        status = json.loads(status_file.read_text()) if status_file.exists() else {}
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
        state = "completed" if metrics is not None else status.get("status", "incomplete")
        if metrics is None and state == "completed":
            state = "completed without metrics"
        record = JobRecord(job_dir, _overrides(job_dir), state, metrics, status.get("error"))
        if metrics:
            record.class_iou = {name: values.get("iou") for name, values in metrics["classes"].items()}
        jobs.append(record)
    return jobs


def varying_keys(jobs: list[JobRecord]) -> list[str]:
    """Override keys whose value differs between jobs (all keys when there is only one job)."""
    keys = sorted({k for job in jobs for k in job.overrides})
    if len(jobs) < 2:
        return keys
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def ranked_jobs(jobs: list[JobRecord], split: str) -> list[JobRecord]:
    """Jobs with metrics best first by the mean IoU of ``split`` ("val" or "test"), then the others;
    ties and the others in folder order."""
    return sorted(jobs, key=lambda j: (j.metrics is None, -j.rank_value(split), str(j.path)))


def class_names(jobs: list[JobRecord]) -> list[str]:
    """The class names of the first job with per-class IoU (empty when none has metrics)."""
    return next((list(job.class_iou) for job in jobs if job.class_iou), [])


def summary_rows(jobs: list[JobRecord]) -> tuple[list[str], list[list]]:
    """The header and rows of the sweep table: completed jobs best first (see ranking_split), then the others."""
    keys = varying_keys(jobs)
    split = ranking_split(jobs)
    classes = class_names(jobs)
    val_column = ["val_mean_iou"] if split == "val" else []
    header = [*keys, *val_column, *DATASET_KEYS, *[f"iou_{c}" for c in classes], "status", "job_dir"]
    rows = []
    for job in ranked_jobs(jobs, split):
        dataset = (job.metrics or {}).get("dataset", {})
        status = job.status if not job.error else f"{job.status}: {job.error}"
        rows.append(
            [
                *[job.overrides.get(k, "") for k in keys],
                *([job.val_mean_iou] if val_column else []),
                *[dataset.get(k) for k in DATASET_KEYS],
                *[job.class_iou.get(c) for c in classes],
                status,
                str(job.path),
            ]
        )
    return header, rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.5f}"
    return str(value)


def write_sweep_summary(multirun_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Write sweep_summary.csv/.md (and sweep_heatmap.png for two-key grids); return their paths."""
    multirun_dir = Path(multirun_dir)
    jobs = collect_jobs(multirun_dir)
    if not jobs:
        raise FileNotFoundError(f"no Hydra job directories (.hydra/overrides.yaml) under {multirun_dir}")
    out_dir = Path(out_dir or multirun_dir)
    header, rows = summary_rows(jobs)
    paths = {"csv": out_dir / "sweep_summary.csv", "md": out_dir / "sweep_summary.md"}
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[_cell(v) for v in row] for row in rows])
    keys = varying_keys(jobs)
    common = sorted({f"{k}={v}" for job in jobs for k, v in job.overrides.items() if k not in keys})
    failed = [job for job in jobs if job.metrics is None]
    lines = [
        f"# Sweep summary: {multirun_dir}",
        "",
        f"{len(jobs)} jobs, {len(jobs) - len(failed)} with metrics, "
        f"{len(failed)} failed or incomplete. Common overrides: {' '.join(common) or 'none'}.",
        "",
        RANKING_TEXT[ranking_split(jobs)],
        "",
        "| " + " | ".join(header[:-1]) + " |",
        "|" + " --- |" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row[:-1]) + " |" for row in rows]
    if failed:
        lines += ["", "## Failed or incomplete jobs", ""]
        lines += [f"- `{job.path}`: {job.status}{': ' + job.error if job.error else ''}" for job in failed]
    paths["md"].write_text("\n".join(lines) + "\n")
    if len(keys) == 2:
        completed = [job for job in jobs if job.metrics is not None]
        if completed:
            paths["heatmap"] = out_dir / "sweep_heatmap.png"
            sweep_heatmap(
                [(j.overrides.get(keys[0]), j.overrides.get(keys[1]), j.mean_iou) for j in completed],
                keys,
                paths["heatmap"],
            )
    return paths


def is_multirun_dir(path: Path) -> bool:
    """A Hydra multirun directory: job sub-directories (with .hydra/overrides.yaml), none at its root."""
    path = Path(path)
    return not (path / ".hydra").is_dir() and any(path.rglob(".hydra/overrides.yaml"))


def not_a_multirun_message(path: Path) -> str:
    """The one-line error for a directory that is not a Hydra multirun directory, with the fix."""
    path = Path(path)
    if (path / ".hydra").is_dir():
        return (
            f"{path} is a single run, not a multirun directory; for its report run "
            f"python -m bloodseg.report {path}, or give the sweep's folder (multirun/<name>/<date>)"
        )
    return (
        f"{path} is not a multirun directory (no job folders with .hydra/overrides.yaml); "
        "give the folder a `python -m bloodseg.train -m ...` sweep wrote (multirun/<name>/<date>)"
    )
