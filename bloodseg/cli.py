"""What every command shares: ``key=value`` arguments, checks of the folders it writes into, and
ending on a user error with one line and exit status 2 (no traceback).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from bloodseg.errors import BloodsegError


@contextlib.contextmanager
def exit_2_on_user_error(log: logging.Logger) -> Iterator[None]:
    """In an entry point: a BloodsegError raised inside the block is logged as one line on ``log``
    and ends the process with exit status 2, without a traceback."""
    try:
        yield
    except BloodsegError as error:
        log.error("%s", error)
        raise SystemExit(2) from None


def key_value_options(argv: list[str], options: Iterable[str]) -> list[str]:
    """argv with ``key=value`` turned into ``--key value`` for the given option names.

    So ``bloodseg-aggregate DIR out=results.json`` reads as ``--out results.json``; the ``--key``
    form keeps working, and other arguments (folders) pass through unchanged.
    """
    names = set(options)
    converted = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        converted += [f"--{key}", value] if eq and key in names else [arg]
    return converted


def check_output_dir(path: str | Path, key: str = "output_dir") -> Path:
    """Fail naming ``key`` when the folder is a file, or cannot be written or created; creates nothing.

    A folder that does not exist yet is checked through its nearest existing parent, so a command
    whose later checks fail leaves no empty folder behind.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise BloodsegError(f"{key}={path} is a file, not a folder; fix: give a folder path")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BloodsegError(f"{key}={path} cannot be created: {existing} is a file; fix: give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BloodsegError(f"{key}={path} is not writable ({existing}); fix: give a writable folder")
    return path


def refuse_overwrite(results: Path, key: str = "output_dir") -> None:
    """Fail when ``results`` (e.g. metrics.json) already exists, instead of silently replacing it."""
    if results.exists():
        raise BloodsegError(
            f"{key}={results.parent} already holds {results.name} of an earlier evaluation; "
            "fix: choose another output_dir, or add overwrite=true to replace it"
        )
