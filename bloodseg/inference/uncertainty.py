"""How unsure a model is about an image: per-pixel entropy and margin of its class probabilities.

Images the model is least sure about are the ones worth labelling next (uncertainty sampling,
the usual active-learning baseline). Per pixel, from the softmax probabilities p (K classes):
entropy = -sum_k p_k ln p_k (0 = certain, ln K = uniform) and margin = 1 - (p_top1 - p_top2)
(0 = certain, 1 = a tie). With ``flip`` the probabilities are the mean of the image's and its
left-right mirror's (test-time augmentation), and ``flip_disagreement`` is the share of pixels
whose class changes when the image is mirrored. An image's scores are the means over its pixels.

The suggest command (:func:`suggest`) ranks a folder of unlabelled images by these scores and writes
``ranking.csv`` (every image, most uncertain first), ``suggested.txt`` (the top n files, one path a
line) and ``<stem>_uncertainty.png`` for those n (per-pixel entropy, black = certain, bright = unsure).
"""

from __future__ import annotations

import csv
import logging
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from bloodseg.cli import exit_2_on_user_error
from bloodseg.config import check_config
from bloodseg.errors import BloodsegError
from bloodseg.files import atomic_text, write_text_atomically
from bloodseg.inference.tiling import (
    Field,
    FieldPlan,
    list_inputs,
    output_stems,
    predict_fields,
    read_fields,
    resolve_device,
    training_window,
)
from bloodseg.training.checkpoints import load_module
from bloodseg.viz.pictures import heatmap, save_png


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
    module, fields: Iterable[Field], window: tuple[int, int], batch_size: int, device, mirror=None
) -> Iterator[ImageUncertainty]:
    """The uncertainty of each field's image, in order; with mirror (name, image) -> Field, flip-averaged.
    Batches hold batch_size training windows' worth of pixels (tiling.training_window)."""
    held: Field | None = None
    for done in predict_fields(module, views(fields, mirror), window, batch_size, device):
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


log = logging.getLogger("bloodseg.suggest")


RANKING_COLUMNS = ["rank", "image", "score", "entropy", "margin", "flip_disagreement", "suggested"]


def suggest(cfg: DictConfig, hydra_dir: Path) -> list[dict]:
    """Score every image of cfg.input, write the ranking and the top n's heat maps; returns the ranking."""
    check_config(cfg)
    if not cfg.ckpt_path or not cfg.input:
        raise BloodsegError("give ckpt_path=CKPT and input=DIR (a folder of unlabelled images)")
    if cfg.n is not None and cfg.n < 1:
        raise BloodsegError(f"n={cfg.n} must be at least 1 (or null for every image)")
    s = cfg.suggest
    if not s.scale > 0 or not 0 <= s.overlap < 1 or s.batch_size < 1:
        raise BloodsegError("suggest.scale must be > 0, suggest.overlap in [0, 1), suggest.batch_size >= 1")
    files = list_inputs(cfg.input)
    module = load_module(cfg.ckpt_path)
    device = resolve_device(s.device)
    module.to(device)
    tile = tuple(int(v) for v in module.meta["image_size"])
    plan = FieldPlan(s.mode, tile, s.scale, s.overlap, s.max_whole_pixels)
    out_dir = Path(cfg.output_dir or hydra_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = output_stems(files)
    by_stem = {stem: path for path, stem in stems.items()}
    skipped: list[dict] = []
    rows, maps = [], {}
    with tqdm(total=len(files), desc="suggest", unit="image", file=sys.stderr) as progress:
        fields = read_fields(files, stems, plan, skipped, lambda: progress.update(1))
        mirror = plan.field if s.flip else None
        for result in score_fields(
            module, fields, training_window(module.meta), s.batch_size, device, mirror
        ):
            rows.append({"image": by_stem[result.name].name, **result.scores})
            maps[by_stem[result.name].name] = (result.name, result.entropy_map.numpy())
            progress.update(1)
    if not rows:
        raise BloodsegError(f"none of the {len(files)} file(s) in input={cfg.input} could be read")
    ranking = rank(rows, s.score.value)
    top = len(ranking) if cfg.n is None else int(cfg.n)
    vmax = math.log(len(module.meta["class_names"]))
    for row in ranking[:top]:
        stem, entropy = maps[row["image"]]
        save_png(heatmap(entropy, vmax), out_dir / f"{stem}_uncertainty.png")
    with atomic_text(out_dir / "ranking.csv") as handle:  # the two lists last, each all or nothing
        writer = csv.DictWriter(handle, fieldnames=RANKING_COLUMNS)
        writer.writeheader()
        for row in ranking:
            row["suggested"] = row["rank"] <= top
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in RANKING_COLUMNS})
    picked = [by_stem[maps[r["image"]][0]] for r in ranking if r["suggested"]]
    write_text_atomically(out_dir / "suggested.txt", "".join(f"{p}\n" for p in picked))
    log.info("ranked %d image(s) by mean %s; outputs in %s", len(ranking), s.score.value, out_dir)
    return ranking


def run_suggest(cfg: DictConfig) -> None:
    """One ``python -m bloodseg.suggest`` run in Hydra's run dir: rank, write, print what to label next.

    A BloodsegError ends the process with one log line and exit status 2.
    """
    with exit_2_on_user_error(log):
        ranking = suggest(cfg, Path(HydraConfig.get().runtime.output_dir))
    top = [r for r in ranking if r["suggested"]]
    print(
        f"ranked {len(ranking)} image(s); label these {len(top)} next: "
        + ", ".join(r["image"] for r in top[:10])
        + (", ..." if len(top) > 10 else ""),
        flush=True,
    )
