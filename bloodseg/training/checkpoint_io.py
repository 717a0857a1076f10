"""Writing checkpoints atomically beside their target, so a kill never leaves a partial file anywhere.

Lightning's default writer stages the file in $TMPDIR (fsspec's transaction) and then moves it, which
across file systems is a copy: a kill -9 can leave a half-written checkpoint in $TMPDIR or, during
the copy, at the target itself. Here the bytes go to ``.<name>.partial`` in the target's folder, are
flushed to disk, and replace the target in one rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bloodseg.files import write_atomically


def save_atomically(checkpoint: dict[str, Any], path: str | Path) -> None:
    """torch.save to a partial file beside ``path``, fsync, then rename over ``path`` (all or nothing)."""
    write_atomically(path, lambda handle: torch.save(checkpoint, handle))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO for local paths that writes through :func:`save_atomically`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Save the checkpoint dict to ``path`` atomically (``storage_options`` unsupported, as in Lightning)."""
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote: Lightning's own way
            return
        save_atomically(checkpoint, path)
