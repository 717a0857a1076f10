"""The end of a multirun: the sweep summary on the console with the commands to view the sweep, and a
``wandb/`` folder in the sweep directory that ``wandb leet`` browses, one link per job named after the
job's overrides.

``wandb leet`` lists the runs of a folder by their folder names and only finds names holding
``run-YYYYMMDD_HHMMSS-``; each link is therefore ``run-<the job's W&B start time>-<job>-<overrides>``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bloodseg.sweeps.results import JobRecord, collect_jobs, varying_keys, write_sweep_summary

log = logging.getLogger("bloodseg.sweep_end")
RUN_FOLDER = re.compile(r"(?:offline-)?run-(\d{8}_\d{6})-")
MAX_LINK_NAME = 120


def job_wandb_run(job_dir: Path) -> Path | None:
    """The latest W&B run folder of a job (``<job>/wandb/offline-run-*`` or ``run-*``), None without one."""
    folder = Path(job_dir) / "wandb"
    runs = (
        [p for p in folder.glob("*run-*") if p.is_dir() and RUN_FOLDER.match(p.name)]
        if folder.is_dir()
        else []
    )
    return max(runs, key=lambda p: RUN_FOLDER.match(p.name).group(1)) if runs else None


def readable_name(job: JobRecord, keys: list[str]) -> str:
    """``<job>-<key>=<value>,...`` with each swept key's last dotted part (``lr=0.01``), safe as a file name."""
    parts = [f"{k.rsplit('.', 1)[-1]}={job.overrides.get(k, '')}" for k in keys]
    text = f"job{job.path.name}" + ("-" + ",".join(parts) if parts else "")
    return re.sub(r"[^A-Za-z0-9=,._+-]", "_", text)


def link_wandb_runs(sweep_dir: Path) -> list[Path]:
    """Make ``<sweep_dir>/wandb/run-<time>-<job>-<overrides>`` links to every job's W&B run (links of an
    earlier call replaced) and return them; ``wandb leet <sweep_dir>/wandb`` then lists every job."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    keys = varying_keys(jobs) if len(jobs) > 1 else []
    found = [(job, run) for job in jobs if (run := job_wandb_run(job.path)) is not None]
    if not found:
        return []
    folder = sweep_dir / "wandb"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        if old.is_symlink():
            old.unlink()
    links = []
    for job, run in found:
        stamp = RUN_FOLDER.match(run.name).group(1)
        link = folder / f"run-{stamp}-{readable_name(job, keys)}"[:MAX_LINK_NAME]
        link.symlink_to(os.path.relpath(run, folder), target_is_directory=True)
        links.append(link)
    return links


def sweep_end_text(sweep_dir: Path, links: list[Path], title: str = "bloodseg: sweep finished") -> str:
    """The console block printed at the end of a multirun: the sweep table and how to view the sweep."""
    sweep_dir = Path(sweep_dir).resolve()
    paths = write_sweep_summary(sweep_dir)
    rule = "=" * 78
    lines = [rule, title, rule, paths["md"].read_text().rstrip(), ""]
    lines.append(
        f"Summary files : {paths['csv']}  {paths['md']}"
        + (f"  {paths['heatmap']}" if "heatmap" in paths else "")
    )
    lines.append(f"Sweep table   : python -m bloodseg.sweep_report {sweep_dir}")
    lines.append(f"HTML report   : python -m bloodseg.report {sweep_dir}")
    if links:
        lines.append(
            f"W&B offline   : wandb leet {sweep_dir / 'wandb'}   ({len(links)} runs, named after their overrides)"
        )
        lines.append(f"                upload later: wandb sync {sweep_dir}/*/wandb/offline-run-*")
    lines.append(rule)
    return "\n".join(lines)


_running: Path | None = None  # the sweep directory of the multirun this process runs (between start and end)


def print_sweep_end(sweep_dir: Path, title: str = "bloodseg: sweep finished") -> None:
    """Link the jobs' W&B runs into ``<sweep_dir>/wandb`` and print the sweep summary; a warning, never an
    exception, when that fails (a summary must not turn a finished sweep into a failure)."""
    try:
        links = link_wandb_runs(sweep_dir)
        print(sweep_end_text(sweep_dir, links, title), flush=True)
    except Exception as error:  # noqa: BLE001
        log.warning(
            "could not write the sweep summary of %s (%s: %s)", sweep_dir, type(error).__name__, error
        )


def running_sweep() -> Path | None:
    """The directory of the multirun in progress in this process; None outside one."""
    return _running


def summarise_stopped_sweep(why: str = "a job failed") -> None:
    """After a multirun stopped on a failed job or an interruption (Hydra then skips ``on_multirun_end``):
    the summary of the jobs that ran, failed ones listed with their errors. Does nothing outside a multirun."""
    global _running
    sweep_dir, _running = _running, None
    if sweep_dir is not None and sweep_dir.is_dir() and collect_jobs(sweep_dir):
        print_sweep_end(sweep_dir, f"bloodseg: sweep stopped ({why}; the jobs that ran are below)")


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, link the jobs' W&B runs into ``<sweep dir>/wandb`` and
    print the sweep summary with the commands to view it (see also summarise_stopped_sweep)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _running
        _running = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _running
        _running = None
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            print_sweep_end(sweep_dir)
