"""Up-front checks of the folders a command writes into: usable, and not holding results it would replace."""

from __future__ import annotations

import os
from pathlib import Path

from bloodseg.errors import BloodsegError


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
