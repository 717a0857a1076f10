"""One GPU per parallel sweep job.

:func:`assign_job_gpu` gives each parallel sweep worker (joblib/loky processes are reused) its own
GPU, by holding a lock file per GPU id for the life of the worker; it must run before CUDA
initialises, which is why a training job calls it first.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any

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
