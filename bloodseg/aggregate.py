"""``python -m bloodseg.aggregate MULTIRUN_DIR... --out results.json [--md tables.md]``: mean, std over seeds.

Jobs of the given multirun directories are grouped by their overrides without ``seed``; each group
becomes one configuration with the mean and standard deviation over its seeds of every dataset
metric (and per-class IoU / BF), the command that reproduces it, and the seeds. The best
configuration (highest mean IoU) is repeated under ``best``::

    {"best": {...}, "runs": [{"experiment", "overrides", "command", "seeds", "num_jobs",
                               "dataset": {...}, "dataset_std": {...}, "classes": {...}}, ...]}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bloodseg.metrics.report import DATASET_KEYS, DATASET_LABELS
from bloodseg.sweep_report import JobRecord, collect_jobs

IGNORED_KEYS = ("seed", "hydra.sweep.dir", "hydra.run.dir")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


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
            [job.metrics["dataset"][key] for job in done]
        )
    names = list(done[0].metrics["classes"]) if done else []
    for name in names:
        entry["classes"][name] = {}
        for key in ("accuracy", "iou", "mean_bf_score"):
            mean, std = _mean_std([job.metrics["classes"][name][key] for job in done])
            entry["classes"][name][key], entry["classes"][name][f"{key}_std"] = mean, std
    if done:
        entry["model_init"] = sorted({job.metrics.get("model_init") or "" for job in done})
    return entry


def aggregate(multirun_dirs: list[Path]) -> dict:
    """Configurations (jobs grouped by overrides without seed) of all multirun dirs, and the best one."""
    groups: dict[tuple, list[JobRecord]] = {}
    for directory in multirun_dirs:
        for job in collect_jobs(Path(directory)):
            key = tuple(sorted((k, v) for k, v in job.overrides.items() if k not in IGNORED_KEYS))
            groups.setdefault(key, []).append(job)
    runs = [configuration(jobs) for jobs in groups.values()]
    scored = [run for run in runs if run["dataset"]["mean_iou"] is not None]
    best = max(scored, key=lambda run: run["dataset"]["mean_iou"]) if scored else None
    return {"best": best, "runs": runs}


def _mean_pm_std(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"


def results_markdown(results: dict) -> str:
    """Markdown tables of results.json: Table 1 (dataset metrics) per configuration, best first, and
    Table 2 (per-class accuracy / IoU / mean BF) of the best configuration; cells are mean ± std."""
    runs = sorted(results["runs"], key=lambda run: -(run["dataset"]["mean_iou"] or float("-inf")))
    common = set.intersection(*(set(run["overrides"]) for run in runs)) if len(runs) > 1 else set()
    lines = [f"Overrides of every configuration: `{' '.join(sorted(common))}`", ""] if common else []
    lines += [
        "| configuration | seeds | " + " | ".join(DATASET_LABELS) + " |",
        "| --- | --- |" + " --- |" * len(DATASET_KEYS),
    ]
    for run in runs:
        label = " ".join(o for o in run["overrides"] if o not in common) or "(defaults)"
        cells = [_mean_pm_std(run["dataset"][key], run["dataset_std"][key]) for key in DATASET_KEYS]
        lines.append(f"| `{label}` | {len(run['seeds'])} | " + " | ".join(cells) + " |")
    best = results["best"]
    if best:
        lines += [
            "",
            "| class (best configuration) | Accuracy | IoU | Mean BF Score |",
            "| --- | --- | --- | --- |",
        ]
        for name, values in best["classes"].items():
            cells = [
                _mean_pm_std(values[key], values[f"{key}_std"])
                for key in ("accuracy", "iou", "mean_bf_score")
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bloodseg.aggregate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("multirun_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="results.json to write")
    parser.add_argument("--md", type=Path, help="also write the tables (mean ± std over seeds) as markdown")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.multirun_dirs if not d.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    results = aggregate(args.multirun_dirs)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{len(results['runs'])} configurations -> {args.out}")
    if args.md:
        args.md.write_text(results_markdown(results))
        print(f"tables -> {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
