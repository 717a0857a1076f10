"""Seed aggregation of multirun jobs: each configuration's mean and standard deviation over seeds.

Jobs of the given multirun directories are grouped by their overrides without ``seed``; each group
becomes one configuration with the mean and standard deviation over its seeds of every dataset
metric (and per-class accuracy / IoU / BF / Dice), the command that reproduces it, and the seeds; with a
single seed the standard deviation is null (and the tables show the value alone, n=1).
The best configuration is repeated under ``best``: highest validation mean IoU when every scored
configuration has one (jobs trained with data.val_fraction > 0), else highest test mean IoU;
``ranked_by`` says which (``val/mean_iou`` or ``test/mean_iou``)::

    {"ranked_by": ..., "best": {...}, "runs": [{"experiment", "overrides", "command", "seeds", "num_jobs",
        "dataset": {...}, "dataset_std": {...}, "validation": {...}, "validation_std": {...},
        "classes": {...}}, ...], "jobs_total": M, "jobs_read": N,
        "unreadable": [{"job": "<job dir>", "problems": ["metrics.json unreadable: <path>: <why>", ...]}]}

A job with a damaged file (bloodseg.sweeps.results.read_job) is unreadable: it is listed under
``unreadable`` and left out of every configuration, so the means and standard deviations are over the
jobs that were read; the tables then open with "N of M jobs read". Files are written all or nothing.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from bloodseg.files import write_text_atomically
from bloodseg.metrics.tables import CLASS_KEYS, CLASS_LABELS, DATASET_KEYS, DATASET_LABELS
from bloodseg.sweeps.results import (
    JobRecord,
    collect_jobs,
    no_readable_job_message,
    readable,
    report_unreadable,
    split_to_rank_on,
    unreadable_lines,
)

IGNORED_KEYS = ("seed", "hydra.sweep.dir", "hydra.run.dir")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def configuration(jobs: list[JobRecord]) -> dict:
    """One configuration's summary over its seeds (jobs without metrics are left out and counted)."""
    done = [job for job in jobs if job.metrics is not None]
    overrides = [f"{k}={v}" for k, v in sorted(jobs[0].overrides.items()) if k not in IGNORED_KEYS]
    seeds = sorted({job.overrides.get("seed", "42") for job in done}, key=str)
    entry = {
        "experiment": jobs[0].overrides.get("experiment"),
        "overrides": overrides,
        "command": "python -m bloodseg.train -m "
        + " ".join(overrides)
        + (f" seed={','.join(seeds)}" if seeds else ""),
        "seeds": [int(s) if s.isdigit() else s for s in seeds],
        "num_jobs": len(jobs),
        "failed_jobs": len(jobs) - len(done),
        "dataset": {},
        "dataset_std": {},
        "classes": {},
    }
    for key in DATASET_KEYS:
        entry["dataset"][key], entry["dataset_std"][key] = _mean_std(
            [job.metrics["dataset"].get(key) for job in done]
        )
    validation = [job.metrics.get("validation") or {} for job in done]
    entry["validation"], entry["validation_std"] = {}, {}
    for key in DATASET_KEYS:
        entry["validation"][key], entry["validation_std"][key] = _mean_std([v.get(key) for v in validation])
    names = list(done[0].metrics["classes"]) if done else []
    for name in names:
        entry["classes"][name] = {}
        for key in CLASS_KEYS:
            mean, std = _mean_std([job.metrics["classes"][name].get(key) for job in done])
            entry["classes"][name][key], entry["classes"][name][f"{key}_std"] = mean, std
    if done:
        entry["model_init"] = sorted({job.metrics.get("model_init") or "" for job in done})
    return entry


def collect_all(multirun_dirs: list[Path]) -> list[JobRecord]:
    """The jobs of every multirun dir, in order (unreadable ones included)."""
    return [job for directory in multirun_dirs for job in collect_jobs(Path(directory))]


def aggregate_jobs(jobs: list[JobRecord]) -> dict:
    """Configurations of the readable jobs (grouped by overrides without seed), the best one, and how many
    jobs were read, with the unreadable ones and their damaged files."""
    groups: dict[tuple, list[JobRecord]] = {}
    for job in readable(jobs):
        key = tuple(sorted((k, v) for k, v in job.overrides.items() if k not in IGNORED_KEYS))
        groups.setdefault(key, []).append(job)
    runs = [configuration(group) for group in groups.values()]
    ranked_by = ranking_key(runs)
    scored = [run for run in runs if rank_value(run, ranked_by) is not None]
    best = max(scored, key=lambda run: rank_value(run, ranked_by)) if scored else None
    return {
        "ranked_by": ranked_by,
        "best": best,
        "runs": runs,
        "jobs_total": len(jobs),
        "jobs_read": len(readable(jobs)),
        "unreadable": [{"job": str(job.path), "problems": job.problems} for job in jobs if job.unreadable],
    }


def aggregate(multirun_dirs: list[Path]) -> dict:
    """Configurations (jobs grouped by overrides without seed) of all multirun dirs, and the best one."""
    return aggregate_jobs(collect_all(multirun_dirs))


def ranking_key(runs: list[dict]) -> str:
    """``val/mean_iou`` when every configuration with test metrics also has validation ones, else
    ``test/mean_iou`` (choosing on the test split: the best score is then optimistic)."""
    scored = [run["validation"]["mean_iou"] for run in runs if run["dataset"]["mean_iou"] is not None]
    return f"{split_to_rank_on(scored)}/mean_iou"


def rank_value(run: dict, ranked_by: str) -> float | None:
    """A configuration's mean of the ranking metric (None when it has none)."""
    split, _, key = ranked_by.partition("/")
    return run["validation" if split == "val" else "dataset"].get(key)


def _mean_pm_std(mean: float | None, std: float | None) -> str:
    """``mean ± std``; the mean alone when there is no spread to show (one seed: std is None)."""
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def results_markdown(results: dict) -> str:
    """Markdown tables of results.json: Table 1 (dataset metrics) per configuration, best first, and
    Table 2 (per-class accuracy / IoU / mean BF) of the best configuration; cells are mean ± std over
    seeds, or the value alone for a single seed (the seeds column says n)."""
    ranked_by = results.get("ranked_by", "test/mean_iou")
    by_val = ranked_by.startswith("val/")

    def order(run: dict) -> float:
        value = rank_value(run, ranked_by) if "validation" in run else run["dataset"]["mean_iou"]
        return -(value if value is not None else float("-inf"))

    runs = sorted(results["runs"], key=order)
    common = set.intersection(*(set(run["overrides"]) for run in runs)) if len(runs) > 1 else set()
    unreadable = results.get("unreadable") or []
    lines = (
        [
            f"**{results['jobs_read']} of {results['jobs_total']} jobs read**; {len(unreadable)} unreadable "
            "(a damaged file), left out of every mean and listed at the end.",
            "",
        ]
        if unreadable
        else []
    )
    lines += [f"Overrides of every configuration: `{' '.join(sorted(common))}`", ""] if common else []
    lines += [
        f"Ranked by {'validation' if by_val else 'TEST'} mean IoU (`{ranked_by}`), best first"
        + (
            "; the test columns are reported, not used to choose."
            if by_val
            else ": no validation split, so the best configuration's test score is optimistic "
            "(sweep with data.val_fraction=0.2)."
        ),
        "",
        "| configuration | seeds | "
        + ("Val mean IoU | " if by_val else "")
        + " | ".join(f"Test {label[0].lower()}{label[1:]}" if by_val else label for label in DATASET_LABELS)
        + " |",
        "| --- | --- |" + (" --- |" if by_val else "") + " --- |" * len(DATASET_KEYS),
    ]
    for run in runs:
        label = " ".join(o for o in run["overrides"] if o not in common) or "(defaults)"
        cells = [_mean_pm_std(run["dataset"][key], run["dataset_std"][key]) for key in DATASET_KEYS]
        if by_val:
            cells.insert(0, _mean_pm_std(run["validation"]["mean_iou"], run["validation_std"]["mean_iou"]))
        lines.append(f"| `{label}` | n={len(run['seeds'])} | " + " | ".join(cells) + " |")
    if any(len(run["seeds"]) == 1 for run in runs):
        lines += ["", "A configuration with n=1 seed shows its value alone: one seed has no spread."]
    best = results["best"]
    if best:
        lines += [
            "",
            "| class (best configuration) | " + " | ".join(CLASS_LABELS) + " |",
            "| --- |" + " --- |" * len(CLASS_KEYS),
        ]
        for name, values in best["classes"].items():
            cells = [_mean_pm_std(values.get(key), values.get(f"{key}_std")) for key in CLASS_KEYS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if unreadable:
        lines += ["", "Unreadable jobs (left out of every mean):", ""]
        lines += [f"- job {Path(j['job']).name}: {'; '.join(j['problems'])}" for j in unreadable]
    return "\n".join(lines) + "\n"


def write_aggregate(multirun_dirs: list[Path], out: Path, md: Path | None, strict: bool = False) -> int:
    """The aggregate command after its arguments: results.json at ``out`` (and the tables at ``md``), each
    written all or nothing; returns the exit status: 2, with one line on stderr, for a missing folder, an
    unwritable file or no readable job; else 0, or 1 with ``strict`` when a job was unreadable."""
    missing = [str(d) for d in multirun_dirs if not d.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    jobs = collect_all(multirun_dirs)
    if jobs and not readable(jobs):
        print(f"error: {no_readable_job_message(jobs, ', '.join(map(str, multirun_dirs)))}", file=sys.stderr)
        return 2
    results = aggregate_jobs(jobs)
    try:
        write_text_atomically(out, json.dumps(results, indent=2) + "\n")
        print(
            f"{len(results['runs'])} configurations from {results['jobs_read']} of "
            f"{results['jobs_total']} jobs read -> {out}"
        )
        if md:
            write_text_atomically(md, results_markdown(results))
            print(f"tables -> {md}")
    except OSError as error:
        print(
            f"error: cannot write {error.filename}: {error.strerror} (choose another out=/md= path)",
            file=sys.stderr,
        )
        return 2
    return report_unreadable(unreadable_lines(jobs), len(jobs), strict)
