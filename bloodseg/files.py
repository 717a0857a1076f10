"""Writing result files all or nothing: a reader (or a kill) never sees half a file.

The bytes go to ``.<name>.partial`` in the target's folder, are flushed to disk, and replace the
target in one rename (atomic on POSIX file systems within one folder). Every result file of a run
(metrics.json, job_status.json, split.json, summary.json, the CSV log, checkpoints) is written so.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from bloodseg.errors import BloodsegError

OUT_OF_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class OutOfSpace(BloodsegError):
    """A result file does not fit on its disk; the previous version of the file is kept. Exit status 1."""

    exit_code = 1


def out_of_space(path: Path, needed_bytes: int | None, fix: str) -> OutOfSpace:
    """The one-line error for ``path`` not fitting: the folder, the space needed and free, and ``fix``."""
    folder = Path(path).parent
    free = shutil.disk_usage(folder).free if folder.is_dir() else 0
    need = f"needs about {needed_bytes / 2**20:.0f} MiB, " if needed_bytes else ""
    return OutOfSpace(
        f"no space left for {Path(path).name} in {folder}: it {need}{free / 2**20:.0f} MiB are free; "
        f"fix: {fix}"
    )


def check_free_space(path: Path, needed_bytes: int, fix: str) -> None:
    """Raise :class:`OutOfSpace` before writing when ``path``'s disk has less than ``needed_bytes`` free."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(folder).free < needed_bytes:
        raise out_of_space(path, needed_bytes, fix)


def partial_path(path: Path) -> Path:
    """Where a file is staged before it replaces ``path`` (same folder, hidden name)."""
    return path.with_name(f".{path.name}.partial")


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(handle)`` on a staged binary file beside ``path``, fsync it, then rename it over ``path``.

    On any failure the staged file is removed and ``path`` keeps its previous content (or stays absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = partial_path(path)
    try:
        with open(staged, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` all or nothing."""
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomically(path: str | Path, record: Any, allow_nan: bool = True) -> None:
    """Write ``record`` as indented JSON (and a final newline) to ``path`` all or nothing.

    The record is serialised before anything is written, so a value JSON cannot hold leaves the
    previous file untouched.
    """
    write_text_atomically(path, json.dumps(record, indent=2, allow_nan=allow_nan) + "\n")


@contextlib.contextmanager
def atomic_text(path: str | Path) -> Iterator[io.StringIO]:
    """A text handle (newlines untranslated, as ``open(path, "w", newline="")``) whose content replaces
    ``path`` all or nothing when the block ends; an exception in the block leaves ``path`` as it was."""
    buffer = io.StringIO(newline="")
    yield buffer
    write_text_atomically(path, buffer.getvalue())
