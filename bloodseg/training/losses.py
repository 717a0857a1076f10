"""Class-weighting schemes against class imbalance, and the weighted cross entropy.

All schemes work from training-label statistics with ignore (255) excluded (bloodseg.data.labels.
class_pixel_counts): ``pixel_count[c]`` = labelled pixels of class c; ``image_pixel_count[c]`` =
labelled pixels of the training images that contain c.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bloodseg.constants import IGNORE_INDEX
from bloodseg.errors import BloodsegError

SCHEMES = ("none", "inverse_frequency", "median_frequency", "enet_log")


def class_weights(scheme: str, pixel_count: torch.Tensor, image_pixel_count: torch.Tensor) -> torch.Tensor:
    """Per-class loss weights (float32) for one of SCHEMES.

    - none: all 1.
    - inverse_frequency: 1 / p_c with p_c = n_c / sum(n), rescaled to mean 1.
    - median_frequency (SegNet; MATLAB's SegNet example; the paper): freq_c = n_c / image_pixel_count_c,
      w_c = median(freq) / freq_c.
    - enet_log (ENet): 1 / ln(1.02 + p_c).

    A class absent from the training labels gets weight 0 (it cannot be learned), with a clear
    error if no class is present at all.
    """
    scheme = getattr(scheme, "value", scheme)
    if scheme not in SCHEMES:
        raise BloodsegError(f"loss.class_weighting={scheme} is unknown; use one of {', '.join(SCHEMES)}")
    pixel_count = pixel_count.double()
    present = pixel_count > 0
    if not present.any():
        raise BloodsegError("the training labels contain no labelled pixel (all 255?); check data.classes")
    if scheme == "none":
        return torch.ones_like(pixel_count, dtype=torch.float32)
    share = pixel_count / pixel_count.sum()
    weights = torch.zeros_like(pixel_count)
    if scheme == "inverse_frequency":
        weights[present] = 1.0 / share[present]
        weights[present] /= weights[present].mean()
    elif scheme == "median_frequency":
        freq = pixel_count[present] / image_pixel_count.double()[present]
        weights[present] = float(np.median(freq.numpy())) / freq  # numpy's median averages the middle pair
    else:  # enet_log
        weights = 1.0 / torch.log(1.02 + share)
        weights[~present] = 0.0
    return weights.float()


class WeightedCrossEntropy(nn.Module):
    """Pixel-wise cross entropy weighted per class, ignoring pixels labelled 255.

    The loss is sum_i w[y_i] * CE_i / sum_i w[y_i] over labelled pixels (PyTorch's weighted 'mean'),
    except that a batch without any labelled pixel gives 0 instead of NaN.
    """

    def __init__(self, weights: torch.Tensor, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", weights.float().clone())
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted mean cross entropy of logits (N,K,H,W) against class ids (N,H,W)."""
        total = F.cross_entropy(
            logits.float(),
            target,
            weight=self.weight,
            ignore_index=IGNORE_INDEX,
            reduction="sum",
            label_smoothing=self.label_smoothing,
        )
        valid = target != IGNORE_INDEX
        norm = torch.where(valid, self.weight[torch.where(valid, target, 0)], 0.0).sum()
        return total / norm.clamp_min(1e-12)
