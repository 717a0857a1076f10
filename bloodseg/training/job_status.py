"""``job_status.json`` of a run: completed, failed (with the error) or interrupted, for every job.

:class:`JobStatusRecorder` is a Hydra callback writing it into every job's directory, so sweep
reports list failed jobs instead of dropping them.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bloodseg.files import write_json_atomically

log = logging.getLogger("bloodseg.train")


def write_job_status(
    output_dir: Path, status: str, error: BaseException | None = None, stopped_by: str | None = None
) -> None:
    """Write job_status.json into output_dir: {"status"}, plus "error" and "traceback" for a failure and
    "stopped_by" (``Ctrl-C``, ``SIGTERM``) for an interruption."""
    record: dict[str, Any] = {"status": status}
    if stopped_by is not None:
        record["stopped_by"] = stopped_by
    if error is not None:
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = "".join(traceback.format_exception(error))[-4000:]
    try:
        write_json_atomically(output_dir / "job_status.json", record)
    except OSError as write_error:  # e.g. a full disk: the reason the run stopped is reported anyway
        log.warning("job_status.json (%s) could not be written in %s: %s", status, output_dir, write_error)


def mark_unfinished_jobs(sweep_dir: Path, stopped_by: str) -> list[Path]:
    """After a multirun was interrupted: every job folder of ``sweep_dir`` that started (has ``.hydra/``)
    but recorded no status (a worker process killed with its launcher) is marked interrupted. Returns them."""
    marked = []
    for job_dir in sorted(Path(sweep_dir).glob("*/.hydra")):
        job_dir = job_dir.parent
        if not (job_dir / "job_status.json").exists():
            write_job_status(job_dir, "interrupted", stopped_by=stopped_by)
            marked.append(job_dir)
    return marked


class JobStatusRecorder(Callback):
    """Hydra callback: write job_status.json (status, error) in each job's output directory.

    A single run that fails with a bloodseg error exits before Hydra's job end; the train entry
    point records that failure itself with :func:`write_job_status`.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        failed = job_return.status == JobStatus.FAILED
        write_job_status(
            Path(config.hydra.runtime.output_dir),
            job_return.status.name.lower(),
            job_return._return_value if failed else None,
        )
