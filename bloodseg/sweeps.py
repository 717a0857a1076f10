"""Sweep support: one GPU per parallel job, and a record of every job's outcome.

- :func:`assign_job_gpu` gives each parallel sweep worker (joblib/loky processes are reused)
  its own GPU, by holding a lock file per GPU id for the life of the worker; it must run before
  CUDA initialises, which is why the train entry point calls it first.
- :class:`JobStatusRecorder` is a Hydra callback writing ``job_status.json`` into every job's
  directory (completed, or failed with the error), so sweep reports list failed jobs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
_held_gpu_lock: Any = None  # the open lock file of the GPU this worker process owns


def assign_job_gpu(gpus: list, lock_dir: Path, job_num: int) -> str:
    """Pin this process to one of gpus (sets CUDA_VISIBLE_DEVICES) and return the id.

    A worker keeps the GPU it got first (CUDA cannot move once initialised); a new worker takes
    the first GPU whose lock no other live worker holds, or job_num % len(gpus) when all are taken.
    """
    global _held_gpu_lock
    if _held_gpu_lock is not None:
        return os.environ["CUDA_VISIBLE_DEVICES"]
    lock_dir.mkdir(parents=True, exist_ok=True)
    chosen = None
    for gpu in gpus:
        handle = open(lock_dir / f"gpu_{gpu}.lock", "w")  # noqa: SIM115 - held open on purpose
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_gpu_lock, chosen = handle, str(gpu)
        break
    if chosen is None:
        chosen = str(gpus[job_num % len(gpus)])
        log.warning(
            "more parallel jobs than launcher_gpus %s: job %d shares GPU %s", list(gpus), job_num, chosen
        )
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen


def write_job_status(output_dir: Path, status: str, error: BaseException | None = None) -> None:
    """Write job_status.json ({"status", and for a failure "error" and "traceback"}) into output_dir."""
    record: dict[str, Any] = {"status": status}
    if error is not None:
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = "".join(traceback.format_exception(error))[-4000:]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "job_status.json").write_text(json.dumps(record, indent=2) + "\n")


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
