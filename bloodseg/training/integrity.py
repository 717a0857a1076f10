"""A content hash of a checkpoint's weights, written with it and checked on load, plus a finiteness check.

torch.load does not verify the zip's CRCs, so bytes changed inside a weight tensor (a bad disk, a
partial copy) load silently; the SHA-256 of the weights catches that. Checkpoints written before the
hash existed carry none and are only checked for non-finite weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from bloodseg.errors import BloodsegError

DIGEST_KEY = "bloodseg_weights_sha256"


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def add_digest(checkpoint: dict[str, Any]) -> None:
    """Store the weights' digest in a checkpoint dict about to be saved."""
    checkpoint[DIGEST_KEY] = weights_digest(checkpoint["state_dict"])


def verify_weights(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Fail naming the file when its weights do not match the stored digest or are not all finite."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise BloodsegError(
            f"checkpoint {path} holds no weights (no state_dict); it is damaged or not a model"
        )
    stored = checkpoint.get(DIGEST_KEY)
    if stored is not None and weights_digest(state) != stored:
        raise BloodsegError(
            f"checkpoint {path} is damaged: its weights do not match the hash stored when it was written; "
            "fix: use an intact copy (or another checkpoint of the run)"
        )
    bad = [
        name
        for name, t in state.items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all())
    ]
    if bad:
        raise BloodsegError(
            f"checkpoint {path} holds NaN or infinite weights ({bad[0]}"
            f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}): the training that wrote it diverged; "
            "fix: use a checkpoint from before the divergence"
        )
