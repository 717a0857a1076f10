"""Up-front checks of the folders a command writes into: usable, and not holding results it would replace."""

from __future__ import annotations

import os
from pathlib import Path

from bloodseg.errors import BloodsegError


def check_output_dir(path: str | Path, key: str = "output_dir") -> Path:
    """Create the folder if needed; fail naming ``key`` when it is a file, cannot be made or is read-only."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise BloodsegError(f"{key}={path} is a file, not a folder; fix: give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BloodsegError(
            f"{key}={path} cannot be created ({error.strerror}); fix: give a writable folder"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise BloodsegError(f"{key}={path} is not writable; fix: give a writable folder")
    return path


def refuse_overwrite(results: Path, key: str = "output_dir") -> None:
    """Fail when ``results`` (e.g. metrics.json) already exists, instead of silently replacing it."""
    if results.exists():
        raise BloodsegError(
            f"{key}={results.parent} already holds {results.name} of an earlier evaluation; "
            "fix: choose another output_dir, or add overwrite=true to replace it"
        )
