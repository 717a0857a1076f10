"""Writing checkpoints atomically beside their target, so a kill never leaves a partial file anywhere.

Lightning's default writer stages the file in $TMPDIR (fsspec's transaction) and then moves it, which
across file systems is a copy: a kill -9 can leave a half-written checkpoint in $TMPDIR or, during
the copy, at the target itself. Here the bytes go to ``.<name>.partial`` in the target's folder, are
flushed to disk, and replace the target in one rename.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def partial_path(path: Path) -> Path:
    """Where a checkpoint is staged before it replaces ``path`` (same folder, hidden name)."""
    return path.with_name(f".{path.name}.partial")


def save_atomically(checkpoint: dict[str, Any], path: str | Path) -> None:
    """torch.save to a partial file beside ``path``, fsync, then rename over ``path`` (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = partial_path(path)
    try:
        with open(staged, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO for local paths that writes through :func:`save_atomically`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Save the checkpoint dict to ``path`` atomically (``storage_options`` unsupported, as in Lightning)."""
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote: Lightning's own way
            return
        save_atomically(checkpoint, path)
