"""What the HTML report shows of a sweep: the linked job table, the comparison figures, every job's curves
and a section per job (bloodseg.html_report.run_section); a dict for templates/report.html.j2.

An unreadable job (a damaged file, bloodseg.sweeps.results.read_job) is a row whose status names the file
and why, listed in the banner, with its section's failure banner saying the same; it takes no part in the
ranking or the figures, and the table's note says how many of the jobs were read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bloodseg.html_report.run_section import figure, fmt, run_context
from bloodseg.metrics.tables import DATASET_KEYS, DATASET_LABELS
from bloodseg.sweeps.figures import comparison_plan, dot_chart_png, heatmap_png, parallel_coordinates_png
from bloodseg.sweeps.results import (
    RANKING_TEXT,
    NoReadableJob,
    class_names,
    collect_jobs,
    no_readable_job_message,
    ranked_jobs,
    ranking_split,
    read_count_text,
    readable,
    status_text,
    unreadable_lines,
    varying_keys,
)
from bloodseg.tracking.csv_log import read_curves
from bloodseg.viz.curves import sweep_curves_png


def job_anchor(job_dir: Path) -> str:
    """The id of a job's section in the sweep report."""
    return "job-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in job_dir.name)


def job_label(job, keys: list[str]) -> str:
    """A job named by its varying overrides (its folder name when nothing varies or they are unknown)."""
    if not job.overrides_known:
        return job.path.name
    return " ".join(f"{k}={job.overrides.get(k)}" for k in keys) or job.path.name


def sweep_context(multirun_dir: Path) -> dict[str, Any]:
    """The sweep table, comparison figures, every job's curves and every job's section; "unreadable": one
    line per unreadable job. Raises NoReadableJob when no job could be read."""
    jobs = collect_jobs(multirun_dir)
    if jobs and not readable(jobs):
        raise NoReadableJob(no_readable_job_message(jobs, str(multirun_dir)))
    keys = varying_keys(jobs)
    split = ranking_split(jobs)
    ordered = ranked_jobs(jobs, split)
    classes = class_names(jobs)
    has_val = split == "val"
    header = [
        *keys,
        *(["val mean IoU"] if has_val else []),
        *DATASET_LABELS,
        *[f"IoU {c}" for c in classes],
        "status",
    ]
    rows = []
    for rank, job in enumerate(ordered):
        dataset = (job.metrics or {}).get("dataset", {})
        rows.append(
            {
                "anchor": job_anchor(job.path),
                "job": job.path.name,
                "keys": [job.overrides.get(k, "") for k in keys],
                "values": [
                    *([fmt(job.val_mean_iou)] if has_val else []),
                    *[fmt(dataset.get(k)) for k in DATASET_KEYS],
                    *[fmt(job.class_iou.get(c)) for c in classes],
                ],
                "status": status_text(job) if job.unreadable else job.status,
                "error": None if job.unreadable else job.error,
                "best": rank == 0 and job.metrics is not None,
                "failed": job.metrics is None,
            }
        )
    common = sorted({f"{k}={v}" for job in readable(jobs) for k, v in job.overrides.items() if k not in keys})
    figures = [
        figure(
            parallel_coordinates_png(jobs, keys, split),
            "parallel coordinates",
            f"Each job is a line through the values of its swept keys to its {split} mean IoU.",
        )
    ]
    grid, dot_keys = comparison_plan(keys)
    if grid:
        figures.append(
            figure(
                heatmap_png(jobs, grid),
                "sweep heatmap",
                f"Test mean IoU over {grid[0]} x {grid[1]}"
                + (" (mean over seeds)." if "seed" in keys else "."),
            )
        )
    for key in dot_keys:
        figures.append(
            figure(
                dot_chart_png(jobs, key, split),
                f"dot chart {key}",
                f"{split} mean IoU per value of {key}, sorted; bars: ± one standard deviation over "
                "the jobs with that value (seeds and the other keys); n: how many.",
            )
        )
    offline = sorted(Path(multirun_dir).glob("*/wandb/offline-run-*"))
    curves = {j.path: read_curves(j.path) for j in ordered}  # each job's csv read once, for both uses
    return {
        "header": header,
        "num_keys": len(keys),
        "rows": rows,
        "keys": keys,
        "common": " ".join(common) or "none",
        "ranking": (read_count_text(jobs) + " " if len(readable(jobs)) < len(jobs) else "")
        + RANKING_TEXT[split],
        "counts": {
            "jobs": len(jobs),
            "read": len(readable(jobs)),
            "done": sum(1 for j in jobs if j.metrics is not None),
        },
        "unreadable": unreadable_lines(jobs),
        "failed": [row for row in rows if row["failed"]],
        "figures": [f for f in figures if f],
        "curves": figure(
            sweep_curves_png({job_label(j, keys): curves[j.path] for j in ordered}),
            "curves of every job",
            "One row per job (best first): loss and mean IoU per split.",
        ),
        "jobs": [
            run_context(
                j.path,
                job_anchor(j.path),
                f"Job {j.path.name}: {job_label(j, keys)}",
                str(j.path.resolve()),
                curves[j.path],
                damaged=j.problems,
            )
            for j in ordered
        ],
        "offline_runs": len(offline),
        "path": str(Path(multirun_dir).resolve()),
    }
