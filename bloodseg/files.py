"""Writing result files all or nothing: a reader (or a kill) never sees half a file.

The bytes go to ``.<name>.partial`` in the target's folder, are flushed to disk, and replace the
target in one rename (atomic on POSIX file systems within one folder). Every result file of a run
(metrics.json, job_status.json, split.json, summary.json, the CSV log, checkpoints) is written so.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


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
