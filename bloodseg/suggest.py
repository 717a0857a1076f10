"""``python -m bloodseg.suggest``: rank unlabelled images by how unsure the model is, to label those next.

    python -m bloodseg.suggest ckpt_path=CKPT input=DIR [n=10] [output_dir=DIR] [suggest.score=entropy|margin]

Writes ``ranking.csv`` (every image, most uncertain first), ``suggested.txt`` (the top n files,
one path a line) and ``<stem>_uncertainty.png`` for those n (per-pixel entropy, black = certain,
bright = unsure). Scores are bloodseg.uncertainty's; images go through the network as in predict.
"""

from __future__ import annotations

import csv
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from bloodseg.builders import load_module
from bloodseg.config import CONF_DIR, ConfigChoice, check_config
from bloodseg.errors import BloodsegError, exit_2_on_user_error
from bloodseg.inference import (
    DEFAULT_MAX_WHOLE_PIXELS,
    FieldPlan,
    PredictMode,
    list_inputs,
    output_stems,
    read_fields,
    resolve_device,
)
from bloodseg.uncertainty import rank, score_fields
from bloodseg.viz import heatmap, save_png

log = logging.getLogger("bloodseg.suggest")

RANKING_COLUMNS = ["rank", "image", "score", "entropy", "margin", "flip_disagreement", "suggested"]


class Score(ConfigChoice):
    entropy = "entropy"
    margin = "margin"


@dataclass
class SuggestSettings:
    score: Score = Score.entropy
    flip: bool = True
    mode: PredictMode = PredictMode.auto
    scale: float = 1.0
    overlap: float = 0.25
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS
    batch_size: int = 8
    device: str = "auto"


@dataclass
class SuggestConfig:
    ckpt_path: str | None = None
    input: str | None = None
    output_dir: str | None = None
    n: int | None = 10
    suggest: SuggestSettings = field(default_factory=SuggestSettings)


ConfigStore.instance().store(name="suggest_schema", node=SuggestConfig)


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
        for result in score_fields(module, fields, tile, s.batch_size, device, mirror):
            rows.append({"image": by_stem[result.name].name, **result.scores})
            maps[by_stem[result.name].name] = (result.name, result.entropy_map.numpy())
            progress.update(1)
    if not rows:
        raise BloodsegError(f"none of the {len(files)} file(s) in input={cfg.input} could be read")
    ranking = rank(rows, s.score.value)
    top = len(ranking) if cfg.n is None else int(cfg.n)
    vmax = math.log(len(module.meta["class_names"]))
    with open(out_dir / "ranking.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RANKING_COLUMNS)
        writer.writeheader()
        for row in ranking:
            row["suggested"] = row["rank"] <= top
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in RANKING_COLUMNS})
    picked = [by_stem[maps[r["image"]][0]] for r in ranking if r["suggested"]]
    (out_dir / "suggested.txt").write_text("".join(f"{p}\n" for p in picked))
    for row in ranking[:top]:
        stem, entropy = maps[row["image"]]
        save_png(heatmap(entropy, vmax), out_dir / f"{stem}_uncertainty.png")
    log.info("ranked %d image(s) by mean %s; outputs in %s", len(ranking), s.score.value, out_dir)
    return ranking


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="suggest")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    with exit_2_on_user_error(log):
        ranking = suggest(cfg, Path(HydraConfig.get().runtime.output_dir))
    top = [r for r in ranking if r["suggested"]]
    print(
        f"ranked {len(ranking)} image(s); label these {len(top)} next: "
        + ", ".join(r["image"] for r in top[:10])
        + (", ..." if len(top) > 10 else ""),
        flush=True,
    )


if __name__ == "__main__":
    main()
