"""One training process per run directory: a lock file naming its holder (pid, host, start time).

A second run into a directory in use fails naming the holder, before Hydra writes anything there
(:class:`RunDirectoryGuard`). A lock left by a process that died without cleaning up (kill -9, a
crashed node) is recognised when its pid is no longer alive on this host, so re-running the same
command resumes instead of being locked out.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bloodseg.cli import check_output_dir
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


def live_holder(run_dir: Path) -> dict | None:
    """The holder (pid, host, started) of run_dir's lock while it may still run; None when free or stale.

    A holder on another host cannot be checked, so it counts as live.
    """
    holder = _holder(Path(run_dir) / LOCK_NAME)
    if holder is None:
        return None
    me = (os.getpid(), socket.gethostname())
    if (holder.get("pid"), holder.get("host")) == me:
        return None
    if holder.get("host") == me[1] and not _alive(int(holder.get("pid", -1))):
        return None
    return holder


def in_use_error(run_dir: Path, holder: dict) -> RunDirectoryInUse:
    """The error that names a live holder of run_dir and the ways out."""
    return RunDirectoryInUse(
        f"run directory {run_dir} is in use by pid {holder.get('pid')} on {holder.get('host')} "
        f"(since {holder.get('started')}); fix: wait for it or choose another hydra.run.dir; "
        f"if that process is gone, delete {Path(run_dir) / LOCK_NAME}"
    )


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
            holder = live_holder(run_dir)
            if holder is None:  # unreadable (killed while writing it), this very process, or a dead one
                lock.unlink(missing_ok=True)
                continue
            raise in_use_error(run_dir, holder) from None
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


class RunDirectoryGuard(Callback):
    """Hydra callback: refuse (exit 2, one line) to start a run or sweep whose directory a live run holds.

    It runs before Hydra saves ``.hydra/`` and opens ``train.log``, so the running job's config and
    log are left untouched.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_unwritable(Path(config.hydra.run.dir), "hydra.run.dir")
        _refuse_if_held([Path(config.hydra.run.dir)])

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        _refuse_unwritable(sweep, "hydra.sweep.dir")
        _refuse_if_held([lock.parent for lock in sweep.glob(f"*/{LOCK_NAME}")] if sweep.is_dir() else [])


def _refuse_unwritable(folder: Path, key: str) -> None:
    """Exit with status 2 and one line when the run's folder cannot be created or written (a file in the
    way, a read-only disk, no permission), before Hydra tries and fails with a traceback."""
    try:
        check_output_dir(folder, key)
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except BloodsegError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        print(
            f"error: {key}={folder} cannot be written ({error.strerror or error}); fix: give a writable "
            f"folder, e.g. {key}=$HOME/bloodseg-runs/NAME",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def _refuse_if_held(run_dirs: list[Path]) -> None:
    for run_dir in run_dirs:
        holder = live_holder(run_dir)
        if holder is not None:
            print(f"error: {in_use_error(run_dir, holder)}", file=sys.stderr)
            raise SystemExit(2)
