"""``job_status.json`` of a run: completed, failed (with the error) or interrupted, for every job.

:class:`JobStatusRecorder` is a Hydra callback writing it into every job's directory, so sweep
reports list failed jobs instead of dropping them.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bloodseg.files import write_json_atomically


def write_job_status(output_dir: Path, status: str, error: BaseException | None = None) -> None:
    """Write job_status.json ({"status", and for a failure "error" and "traceback"}) into output_dir."""
    record: dict[str, Any] = {"status": status}
    if error is not None:
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = "".join(traceback.format_exception(error))[-4000:]
    write_json_atomically(output_dir / "job_status.json", record)


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
