"""Reading a Hydra multirun: every job's overrides, status and metrics, and the sweep summary files.

Shared by ``bloodseg.sweep_report``, ``bloodseg.report``, ``bloodseg.aggregate`` and the end-of-multirun
summary. Jobs are ranked by their validation mean IoU when every scored job has one (the test split then
plays no part in the choice), else by test mean IoU, and the summary says which. Jobs without metrics are
listed as failed or incomplete, never dropped. A job with a damaged file (``metrics.json`` or
``job_status.json`` that is not a JSON object of the expected shape, ``.hydra/overrides.yaml`` that is not a
YAML list) is ``unreadable``: listed with the file and the reason, left out of the ranking and of every
mean, and the summary says how many of the jobs were read. Summary files are written all or nothing
(bloodseg.files).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bloodseg.errors import BloodsegError
from bloodseg.files import atomic_text, write_atomically, write_text_atomically
from bloodseg.metrics.tables import CLASS_KEYS, DATASET_KEYS
from bloodseg.viz.figures import sweep_heatmap

UNREADABLE = "unreadable"  # the status of a job with a damaged file


@dataclass
class JobRecord:
    """One job of a multirun: its directory, overrides and outcome."""

    path: Path
    overrides: dict[str, str]
    status: str
    metrics: dict | None = None
    error: str | None = None
    class_iou: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(
        default_factory=list
    )  # one "<file> unreadable: <path>: <why>" per damaged file
    overrides_known: bool = True  # False when .hydra/overrides.yaml itself is damaged

    @property
    def unreadable(self) -> bool:
        """Whether one of the job's files is damaged (the job is then left out of rankings and means)."""
        return bool(self.problems)

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


class UnreadableFile(Exception):
    """A job file that exists but cannot be used; the message is one line: ``<file> unreadable: <path>: <why>``."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{Path(path).name} unreadable: {path}: {' '.join(str(reason).split())}")


class NoReadableJob(BloodsegError):
    """Every job of a sweep has a damaged file: there is nothing to report. Exit status 2."""


KINDS = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", type(None): "null"}


def _kind(value: Any) -> str:
    """What a parsed JSON/YAML value is, in words (for the reason of an unreadable file)."""
    return "a number" if type(value) in (int, float) else KINDS.get(type(value), type(value).__name__)


def read_text_of(path: Path) -> str:
    """A job file's text; UnreadableFile when it cannot be read, is not UTF-8 or is empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile(path, "not UTF-8 text") from None
    except OSError as error:
        raise UnreadableFile(path, error.strerror or str(error)) from None
    if not text.strip():
        raise UnreadableFile(path, "empty file")
    return text


def read_json_object(path: Path) -> dict[str, Any]:
    """A job file holding one JSON object; UnreadableFile naming the file and why otherwise (truncated or
    invalid JSON, empty, not an object)."""
    try:
        value = json.loads(read_text_of(path))
    except ValueError as error:
        raise UnreadableFile(path, f"invalid JSON (truncated?): {error}") from None
    if not isinstance(value, dict):
        raise UnreadableFile(path, f"{_kind(value)}, not a JSON object")
    return value


def _check_numbers(path: Path, where: str, values: Any, keys: tuple[str, ...]) -> None:
    """UnreadableFile unless ``values`` is an object whose ``keys`` (those present) are numbers or null."""
    if not isinstance(values, dict):
        raise UnreadableFile(path, f'"{where}" is {_kind(values)}, not an object')
    for key in keys:
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise UnreadableFile(path, f'"{where}.{key}" is {_kind(value)}, not a number')


def read_metrics_file(path: Path) -> dict[str, Any]:
    """A metrics.json the reports can use: an object with "dataset" (numbers), "classes" (an object per
    class, numbers) and, when present, "validation" (numbers or null); UnreadableFile otherwise."""
    metrics = read_json_object(path)
    for key in ("dataset", "classes"):
        if key not in metrics:
            raise UnreadableFile(path, f'no "{key}" key (a metrics.json holds "dataset" and "classes")')
    _check_numbers(path, "dataset", metrics["dataset"], DATASET_KEYS)
    if metrics.get("validation") is not None:
        _check_numbers(path, "validation", metrics["validation"], DATASET_KEYS)
    if not isinstance(metrics["classes"], dict):
        raise UnreadableFile(path, f'"classes" is {_kind(metrics["classes"])}, not an object')
    for name, values in metrics["classes"].items():
        _check_numbers(path, f"classes.{name}", values, CLASS_KEYS)
    return metrics


def read_status_file(path: Path) -> dict[str, Any]:
    """A job_status.json: an object whose "status" and "error" (when present) are text; UnreadableFile
    otherwise."""
    status = read_json_object(path)
    for key in ("status", "error"):
        if status.get(key) is not None and not isinstance(status[key], str):
            raise UnreadableFile(path, f'"{key}" is {_kind(status[key])}, not text')
    return status


def read_overrides_file(path: Path) -> dict[str, str]:
    """A job's .hydra/overrides.yaml (a YAML list of ``key=value``) as {key: value}; UnreadableFile when it
    is empty, not YAML or not a list of text."""
    try:
        items = yaml.safe_load(read_text_of(path))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UnreadableFile(
            path, f"invalid YAML: {getattr(error, 'problem', None) or error}{where}"
        ) from None
    if items is None:
        items = []
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise UnreadableFile(path, f"{_kind(items)}, not a YAML list of key=value overrides")
    pairs = {}
    for item in items:
        key, _, value = item.lstrip("+~").partition("=")
        pairs[key] = value
    return pairs


def read_job(job_dir: Path) -> JobRecord:
    """One job directory's record: overrides, status and metrics; ``unreadable`` (status) with every
    damaged file listed in ``problems`` when one of them cannot be used (its metrics are then left out)."""
    problems: list[str] = []

    def attempt(reader, path: Path, missing: Any) -> Any:
        if not path.exists():
            return missing
        try:
            return reader(path)
        except UnreadableFile as error:
            problems.append(str(error))
            return missing

    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = attempt(read_overrides_file, overrides_file, None)
    status = attempt(read_status_file, job_dir / "job_status.json", {})
    metrics = attempt(read_metrics_file, job_dir / "metrics.json", None)
    if problems:
        record = JobRecord(job_dir, overrides or {}, UNREADABLE, None, "; ".join(problems), problems=problems)
        record.overrides_known = overrides is not None
        return record
    state = "completed" if metrics is not None else status.get("status") or "incomplete"
    if metrics is None and state == "completed":
        state = "completed without metrics"
    record = JobRecord(job_dir, overrides, state, metrics, status.get("error"))
    if metrics:
        record.class_iou = {name: values.get("iou") for name, values in metrics["classes"].items()}
    return record


def collect_jobs(multirun_dir: Path) -> list[JobRecord]:
    """Every job directory under multirun_dir (those holding .hydra/overrides.yaml), with its outcome; a job
    with a damaged file is kept as ``unreadable`` (see read_job), never raised."""
    return [
        read_job(path.parent.parent) for path in sorted(Path(multirun_dir).rglob(".hydra/overrides.yaml"))
    ]


def readable(jobs: list[JobRecord]) -> list[JobRecord]:
    """The jobs whose files could all be read."""
    return [job for job in jobs if not job.unreadable]


def unreadable_lines(jobs: list[JobRecord]) -> list[str]:
    """One line per unreadable job: ``job <name>: <file> unreadable: <path>: <why>`` (``; `` between files)."""
    return [f"job {job.path.name}: {job.error}" for job in jobs if job.unreadable]


def read_count_text(jobs: list[JobRecord]) -> str:
    """``N of M jobs read; K unreadable (...)``: the sentence a summary opens with when a job is damaged."""
    bad = len(jobs) - len(readable(jobs))
    return (
        f"{len(jobs) - bad} of {len(jobs)} jobs read; {bad} unreadable "
        f"(a damaged file; listed, left out of the ranking and of every mean)."
    )


def no_readable_job_message(jobs: list[JobRecord], where: str) -> str:
    """The one-line error when no job of a sweep could be read, naming the first damaged file."""
    lines = unreadable_lines(jobs)
    return (
        f"none of the {len(jobs)} jobs under {where} could be read (first: {lines[0]}); "
        "fix or remove the damaged files and run again"
    )


def report_unreadable(lines: list[str], total: int | None, strict: bool) -> int:
    """After a tool wrote its report: each unreadable job's line (unreadable_lines) as a warning on stderr,
    then how many of the ``total`` jobs (None: a single run) that is, and the exit status: 0, or 1 with
    ``--strict`` when something was unreadable."""
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)
    if not lines:
        return 0
    what = (
        f"{len(lines)} of {total} jobs unreadable; the report covers the other {total - len(lines)}"
        if total is not None
        else "the run has a damaged file; the report shows the rest"
    )
    then = "--strict: exit status 1" if strict else "--strict would make this exit status 1"
    print(f"{'error' if strict else 'warning'}: {what} ({then})", file=sys.stderr)
    return 1 if strict else 0


def varying_keys(jobs: list[JobRecord]) -> list[str]:
    """Override keys whose value differs between jobs (all keys when there is only one job); jobs whose
    overrides.yaml is damaged play no part."""
    jobs = [job for job in jobs if job.overrides_known]
    keys = sorted({k for job in jobs for k in job.overrides})
    if len(jobs) < 2:
        return keys
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def ranked_jobs(jobs: list[JobRecord], split: str) -> list[JobRecord]:
    """Jobs with metrics best first by the mean IoU of ``split`` ("val" or "test"), then the others, the
    unreadable ones last; ties and the others in folder order."""
    return sorted(jobs, key=lambda j: (j.metrics is None, j.unreadable, -j.rank_value(split), str(j.path)))


def class_names(jobs: list[JobRecord]) -> list[str]:
    """The class names of the first job with per-class IoU (empty when none has metrics)."""
    return next((list(job.class_iou) for job in jobs if job.class_iou), [])


def status_text(job: JobRecord) -> str:
    """A job's status cell: ``completed``, ``failed: <error>``, or for an unreadable job the damaged files
    (``metrics.json unreadable: <path>: <why>``)."""
    if job.unreadable or not job.error:
        return job.error if job.unreadable else job.status
    return f"{job.status}: {job.error}"


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
        status = status_text(job)
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


def summary_markdown(multirun_dir: Path, jobs: list[JobRecord], header: list[str], rows: list[list]) -> str:
    """sweep_summary.md: the counts (N of M jobs read when one is unreadable), the ranking rule, the table,
    then the failed or incomplete jobs and the unreadable ones with their damaged files."""
    keys = varying_keys(jobs)
    good = readable(jobs)
    common = sorted({f"{k}={v}" for job in good for k, v in job.overrides.items() if k not in keys})
    failed = [job for job in good if job.metrics is None]
    lines = [f"# Sweep summary: {multirun_dir}", ""]
    if len(good) < len(jobs):
        lines += [read_count_text(jobs), ""]
    lines += [
        f"{len(jobs)} jobs, {len(good) - len(failed)} with metrics, "
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
        lines += [f"- `{job.path}`: {status_text(job)}" for job in failed]
    if len(good) < len(jobs):
        lines += ["", "## Unreadable jobs (left out of the ranking)", ""]
        lines += [f"- {line}" for line in unreadable_lines(jobs)]
    return "\n".join(lines) + "\n"


def write_sweep_summary(
    multirun_dir: Path, out_dir: Path | None = None, jobs: list[JobRecord] | None = None
) -> dict[str, Path]:
    """Write sweep_summary.csv/.md (and sweep_heatmap.png for two-key grids), each all or nothing; return
    their paths. ``jobs``: those of collect_jobs(multirun_dir) when already read. Raises
    FileNotFoundError without jobs and NoReadableJob when every job is unreadable (nothing written)."""
    multirun_dir = Path(multirun_dir)
    jobs = collect_jobs(multirun_dir) if jobs is None else jobs
    if not jobs:
        raise FileNotFoundError(f"no Hydra job directories (.hydra/overrides.yaml) under {multirun_dir}")
    if not readable(jobs):
        raise NoReadableJob(no_readable_job_message(jobs, str(multirun_dir)))
    out_dir = Path(out_dir or multirun_dir)
    header, rows = summary_rows(jobs)
    paths = {"csv": out_dir / "sweep_summary.csv", "md": out_dir / "sweep_summary.md"}
    with atomic_text(paths["csv"]) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[_cell(v) for v in row] for row in rows])
    write_text_atomically(paths["md"], summary_markdown(multirun_dir, jobs, header, rows))
    keys = varying_keys(jobs)
    completed = [job for job in jobs if job.metrics is not None]
    if len(keys) == 2 and completed:
        paths["heatmap"] = out_dir / "sweep_heatmap.png"
        buffer = io.BytesIO()
        sweep_heatmap(
            [(j.overrides.get(keys[0]), j.overrides.get(keys[1]), j.mean_iou) for j in completed],
            keys,
            buffer,
        )
        write_atomically(paths["heatmap"], lambda handle: handle.write(buffer.getvalue()))
    return paths


def sweep_report_command(multirun_dir: Path, out: Path | None, strict: bool) -> int:
    """The sweep_report command after its arguments: write the summary, print it and the unreadable jobs;
    returns the exit status: 2, with one line on stderr, for a folder that is no multirun, an unwritable
    file or no readable job; else 0, or 1 with ``strict`` when a job was unreadable."""
    if not Path(multirun_dir).is_dir() or not is_multirun_dir(multirun_dir):
        print(f"error: {not_a_multirun_message(multirun_dir)}", file=sys.stderr)
        return 2
    jobs = collect_jobs(multirun_dir)
    try:
        paths = write_sweep_summary(multirun_dir, out, jobs)
    except (FileNotFoundError, NoReadableJob) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"error: cannot write {error.filename}: {error.strerror} (choose another --out)", file=sys.stderr
        )
        return 2
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return report_unreadable(unreadable_lines(jobs), len(jobs), strict)


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
