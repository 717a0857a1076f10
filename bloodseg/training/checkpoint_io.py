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

from bloodseg.files import OUT_OF_SPACE_ERRNOS, check_free_space, out_of_space, write_atomically

ROOM_FOR = 1.05  # free space asked for beyond the tensors' bytes (pickled structure, zip headers)
FIX = "free space there, or train into another disk (hydra.run.dir=...), then re-run the same command to continue"


def tensor_bytes(value: Any) -> int:
    """Bytes of every tensor in a (nested) checkpoint: about the size torch.save writes."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def save_atomically(checkpoint: dict[str, Any], path: str | Path) -> None:
    """torch.save to a partial file beside ``path``, fsync, then rename over ``path`` (all or nothing)."""
    write_atomically(path, lambda handle: torch.save(checkpoint, handle))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO for local paths that writes through :func:`save_atomically`.

    A checkpoint that does not fit on its disk (checked before writing from the tensors' size, or
    reported by the OS while writing) stops the run with one line naming the folder, the space needed
    and the fix; the previous checkpoint stays intact.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Save the checkpoint dict to ``path`` atomically (``storage_options`` unsupported, as in Lightning)."""
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote: Lightning's own way
            return
        needed = int(tensor_bytes(checkpoint) * ROOM_FOR)
        check_free_space(Path(path), needed, FIX)  # before writing: the previous checkpoint stays whole
        try:
            save_atomically(checkpoint, path)
        except OSError as error:
            if error.errno in OUT_OF_SPACE_ERRNOS:
                raise out_of_space(Path(path), needed, FIX) from None
            raise
