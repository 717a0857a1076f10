"""How unsure a model is about an image: per-pixel entropy and margin of its class probabilities.

Images the model is least sure about are the ones worth labelling next (uncertainty sampling,
the usual active-learning baseline). Per pixel, from the softmax probabilities p (K classes):
entropy = -sum_k p_k ln p_k (0 = certain, ln K = uniform) and margin = 1 - (p_top1 - p_top2)
(0 = certain, 1 = a tie). With ``flip`` the probabilities are the mean of the image's and its
left-right mirror's (test-time augmentation), and ``flip_disagreement`` is the share of pixels
whose class changes when the image is mirrored. An image's scores are the means over its pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from bloodseg.inference import Field, predict_fields

SCORES = ("entropy", "margin")


def entropy_map(probabilities: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy in nats (H x W) of class probabilities (K x H x W); 0 ln 0 = 0."""
    p = probabilities.double()
    return -(p * torch.log(p.clamp_min(1e-300))).sum(0).float()


def margin_map(probabilities: torch.Tensor) -> torch.Tensor:
    """Per-pixel 1 - (top-1 minus top-2 probability) (H x W); 0 for a single class."""
    if probabilities.shape[0] < 2:
        return torch.zeros(probabilities.shape[1:])
    top = probabilities.topk(2, dim=0).values
    return 1 - (top[0] - top[1])


@dataclass
class ImageUncertainty:
    """One image's uncertainty: its mean scores and its entropy map (for the heat map)."""

    name: str
    image: np.ndarray  # HxWx3 uint8, as read
    entropy_map: torch.Tensor  # H x W, nats
    scores: dict[str, float]  # entropy, margin, flip_disagreement (None without flip)


def uncertainty(name: str, image: np.ndarray, logits: list[torch.Tensor]) -> ImageUncertainty:
    """Scores from one or two views' logits (K x H x W each, the second already mirrored back)."""
    probabilities = [torch.softmax(v.float(), 0) for v in logits]
    mean = torch.stack(probabilities).mean(0)
    entropy = entropy_map(mean)
    disagreement = None
    if len(probabilities) > 1:
        disagreement = float((probabilities[0].argmax(0) != probabilities[1].argmax(0)).float().mean())
    scores = {
        "entropy": float(entropy.mean()),
        "margin": float(margin_map(mean).mean()),
        "flip_disagreement": disagreement,
    }
    return ImageUncertainty(name, image, entropy, scores)


def flipped(field_: Field) -> bool:
    """Whether a field is the mirrored view of its image (see views)."""
    return field_.name.endswith("\0flip")


def views(fields: Iterable[Field], mirror) -> Iterator[Field]:
    """Each field, followed (when mirror is a function making a field of a mirrored image) by its mirror."""
    for field_ in fields:
        yield field_
        if mirror is not None:
            yield mirror(field_.name + "\0flip", np.ascontiguousarray(field_.image[:, ::-1]))


def score_fields(
    module, fields: Iterable[Field], tile: tuple[int, int], batch_size: int, device, mirror=None
) -> Iterator[ImageUncertainty]:
    """The uncertainty of each field's image, in order; with mirror (name, image) -> Field, flip-averaged."""
    held: Field | None = None
    for done in predict_fields(module, views(fields, mirror), tile, batch_size, device):
        if mirror is None:
            yield uncertainty(done.name, done.image, [done.logits()])
        elif not flipped(done):
            held = done
        else:
            yield uncertainty(held.name, held.image, [held.logits(), done.logits().flip(-1)])
            held = None


def rank(rows: list[dict], score: str) -> list[dict]:
    """Rows sorted by score, most uncertain first (ties by image name), numbered from rank 1."""
    ordered = sorted(rows, key=lambda r: (-r[score], r["image"]))
    return [{"rank": i + 1, "score": row[score], **row} for i, row in enumerate(ordered)]
