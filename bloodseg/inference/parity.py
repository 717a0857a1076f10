"""When do two runs of the same model agree? The contract for batch sizes, CPU kernels and runtimes.

Floating-point results depend on the order of the sums: another batch size, CPU instruction
set, thread count or runtime (ONNX Runtime, TorchScript) gives logits that differ in the last
bits, and SegNet's tie-robust pooling keeps those differences that small (no unpooling position
flips; see ``bloodseg.models.pooling``). The contract, checked by ``compare_logits``:

* every logit agrees within ``atol + rtol * |reference logit|`` (1e-3 + 1e-3 |x| by default);
* the predicted class agrees on every *decided* pixel: one whose reference top-two logit margin is
  larger than twice the tolerance there. A pixel whose two best classes are closer than that is
  a genuine tie; either answer is right and rounding may pick either.
"""

from __future__ import annotations

import numpy as np

LOGIT_ATOL = 1e-3
LOGIT_RTOL = 1e-3


def top_two_margin(logits: np.ndarray) -> np.ndarray:
    """Best minus second-best class score per pixel, for logits (N, K, H, W) -> (N, H, W)."""
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2]


def compare_logits(
    reference: np.ndarray, other: np.ndarray, atol: float = LOGIT_ATOL, rtol: float = LOGIT_RTOL
) -> dict[str, float | int | bool]:
    """How far ``other`` logits (N, K, H, W) are from ``reference`` and whether they meet the contract."""
    if reference.shape != other.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {other.shape}")
    reference, other = reference.astype(np.float64), other.astype(np.float64)
    allowed = atol + rtol * np.abs(reference)
    excess = np.abs(other - reference) / allowed
    same_class = reference.argmax(1) == other.argmax(1)
    decided = top_two_margin(reference) > 2 * allowed.max(axis=1)
    return {
        "max_abs_diff": float(np.abs(other - reference).max()),
        "logits_within_tolerance": bool((excess <= 1).all()),
        "argmax_agreement": float(same_class.mean()),
        "undecided_pixels": int((~decided).sum()),
        "decided_pixels_disagreeing": int((decided & ~same_class).sum()),
        "meets_contract": bool((excess <= 1).all() and (same_class | ~decided).all()),
    }
