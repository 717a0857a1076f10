"""One training process per run directory: a lock file naming its holder (pid, host, start time).

A second run into a directory in use fails naming the holder. A lock left by a process that died
without cleaning up (kill -9, a crashed node) is recognised when its pid is no longer alive on this
host, so re-running the same command resumes instead of being locked out.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from bloodseg.errors import BloodsegError

LOCK_NAME = "run.lock"


class RunDirectoryInUse(BloodsegError):
    """Another live process trains into this run directory (its files are not this run's to touch)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None


def acquire_run_lock(run_dir: Path) -> Path:
    """Create run_dir/run.lock for this process, replacing a stale one; fail naming a live holder."""
    lock = Path(run_dir) / LOCK_NAME
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is None or holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                lock.unlink(missing_ok=True)  # unreadable (killed while writing it) or this very process
                continue
            if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
                lock.unlink(missing_ok=True)  # its process is gone: a stale lock
                continue
            raise RunDirectoryInUse(
                f"run directory {run_dir} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                f"(since {holder.get('started')}); fix: wait for it or choose another hydra.run.dir; "
                f"if that process is gone, delete {lock}"
            ) from None
        with os.fdopen(handle, "w") as file:
            json.dump(me, file)
        return lock
    raise BloodsegError(f"cannot take the lock {lock}; fix: delete it if no run is using {run_dir}")


def release_run_lock(lock: Path) -> None:
    """Remove the lock if this process still holds it."""
    holder = _holder(lock)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)


@contextmanager
def run_lock(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold run_dir's lock for the duration of the block (``enabled=False``: other DDP ranks)."""
    lock = acquire_run_lock(run_dir) if enabled else None
    try:
        yield
    finally:
        if lock is not None:
            release_run_lock(lock)
