"""``python -m bloodseg.predict``: segment whole smears, separate white and red cells, count them.

    python -m bloodseg.predict ckpt_path=CKPT input=FILE_OR_DIR output_dir=DIR [predict.mode=auto|tile|resize]

Per image it writes ``<stem>_labels.png`` (class ids), ``<stem>_overlay.png`` (paper colours),
``<stem>_<class>.png`` per non-background class (only that class's pixels, the rest white), and
for the run ``counts.csv`` (cells and pixel area per class) and ``summary.json``.

Modes: ``resize`` is the paper's (the image is resized to the training size and the prediction
back); ``tile`` resamples by ``predict.scale`` and runs overlapping tiles of the training size
whose logits are blended with a smooth window, so any image size fits in bounded memory;
``auto`` tiles images larger than the training size and resizes the others.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as TF
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from bloodseg.builders import load_module
from bloodseg.config import CONF_DIR, ConfigChoice, check_config
from bloodseg.counting import COUNTING_NEEDS, CountSettings, count_cells, count_columns, count_row
from bloodseg.data.imageio import IMAGE_SUFFIXES, read_rgb
from bloodseg.errors import BloodsegError
from bloodseg.extras import require
from bloodseg.viz import overlay, save_png

log = logging.getLogger("bloodseg.predict")


# ---- config ------------------------------------------------------------------------------------
class PredictMode(ConfigChoice):
    auto = "auto"
    tile = "tile"
    resize = "resize"


@dataclass
class PredictSettings:
    mode: PredictMode = PredictMode.auto
    scale: float = 1.0
    overlap: float = 0.25
    batch_size: int = 8
    device: str = "auto"
    alpha: float = 0.45
    min_cell_area: int = 80
    min_distance: int = 8
    smoothing: float = 1.0
    max_hole_area: int = 300


@dataclass
class PredictConfig:
    ckpt_path: str | None = None
    input: str | None = None
    output_dir: str | None = None
    predict: PredictSettings = field(default_factory=PredictSettings)


def register_configs() -> None:
    """Store the predict schema in Hydra's ConfigStore (conf/predict.yaml extends it)."""
    ConfigStore.instance().store(name="predict_schema", node=PredictConfig)


register_configs()


# ---- inputs ------------------------------------------------------------------------------------
def list_inputs(path: str | Path) -> list[Path]:
    """The image files to predict: the file itself, or a folder's image files (sorted)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BloodsegError(f"input={path} does not exist; fix: give an image file or a folder of images")
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise BloodsegError(
            f"input={path} holds no image files ({', '.join(IMAGE_SUFFIXES)}); fix: point it at a folder of images"
        )
    return files


def output_stems(files: list[Path]) -> dict[Path, str]:
    """A unique output name per file: its stem, or stem_ext where two files share a stem."""
    stems = [p.stem for p in files]
    return {
        p: p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in files
    }


def resolve_device(name: str) -> torch.device:
    """``auto`` = the first CUDA device when there is one, else the CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise BloodsegError(
            f"predict.device={name} is not a device ({error}); use auto, cpu or cuda"
        ) from None


# ---- tiling ------------------------------------------------------------------------------------
def choose_mode(mode: PredictMode, size: tuple[int, int], tile: tuple[int, int]) -> str:
    """``tile`` or ``resize`` for an image of (scaled) size (H, W); auto tiles images larger than the tile."""
    if mode != PredictMode.auto:
        return mode.value
    return "tile" if size[0] > tile[0] or size[1] > tile[1] else "resize"


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread tile starts covering [0, length), neighbours overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def edge_ramp(tile: int, ramp: int, start: bool, end: bool) -> torch.Tensor:
    """A 1-D blending weight: 1 inside, rising/falling as half a Hann window over ``ramp`` px at tapered ends.

    Ends on the image border are not tapered, so no pixel ever has a zero total weight.
    """
    weight = torch.ones(tile)
    if ramp <= 0:
        return weight
    rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(ramp) + 0.5) / ramp)
    if start:
        weight[:ramp] = rise
    if end:
        weight[-ramp:] = rise.flip(0)
    return weight


@dataclass
class Field:
    """One image on its way through the network: its crops go in, blended class scores come out."""

    name: str
    image: np.ndarray  # HxWx3 uint8, as read
    mode: str  # tile | resize
    work: torch.Tensor  # 3xhxw uint8: the resampled (and for tiles, padded) network input
    work_size: tuple[int, int]  # (h, w) of the resampled image before padding
    boxes: list[tuple[int, int]]  # tile origins (y, x) in work
    windows: list[tuple[torch.Tensor, torch.Tensor]]  # each tile's separable blending weight (rows, columns)
    scores: torch.Tensor | None = None  # K x h x w weighted sum of logits
    weight: torch.Tensor | None = None  # h x w sum of weights
    pending: int = 0  # crops not yet scored

    def crops(self, tile: tuple[int, int]) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, 3 x tile uint8 crop) for every tile of the image."""
        for i, (y, x) in enumerate(self.boxes):
            yield i, self.work[:, y : y + tile[0], x : x + tile[1]]

    def add(self, index: int, logits: torch.Tensor) -> None:
        """Accumulate one crop's logits (K x tile) with its blending weight."""
        y, x = self.boxes[index]
        th, tw = logits.shape[-2:]
        if self.scores is None:
            self.scores = torch.zeros(logits.shape[0], *self.work.shape[-2:])
            self.weight = torch.zeros(self.work.shape[-2:])
        rows, columns = self.windows[index]
        window = rows[:, None] * columns[None, :]
        self.scores[:, y : y + th, x : x + tw] += logits * window
        self.weight[y : y + th, x : x + tw] += window
        self.pending -= 1

    def labels(self) -> np.ndarray:
        """Class ids (HxW uint8) at the size of the image as read."""
        h, w = self.work_size
        scores = (self.scores[:, :h, :w] / self.weight[:h, :w]).unsqueeze(0)
        size = self.image.shape[:2]
        if (h, w) != size:  # class scores back to the input size, then the decision
            scores = TF.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        return scores[0].argmax(0).to(torch.uint8).numpy()


def resample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A 3xHxW uint8 image resized (bilinear, antialiased, as in training) to size = (h, w)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def make_field(
    name: str, image: np.ndarray, mode: PredictMode, tile: tuple[int, int], scale: float, overlap: float
) -> Field:
    """Plan an image's network inputs: one resized crop, or overlapping tiles of the scaled image."""
    height, width = image.shape[:2]
    scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
    chosen = choose_mode(mode, scaled, tile)
    tensor = torch.from_numpy(np.array(image, np.uint8, copy=True)).permute(2, 0, 1)
    if chosen == "resize":
        work = resample(tensor, tile)
        flat = (torch.ones(tile[0]), torch.ones(tile[1]))
        return Field(name, image, chosen, work, tile, [(0, 0)], [flat], pending=1)
    work = resample(tensor, scaled)
    pad_h, pad_w = max(0, tile[0] - scaled[0]), max(0, tile[1] - scaled[1])
    if pad_h or pad_w:  # smaller than a tile along one side: mirror the smear to fill it
        padded = np.pad(work.numpy(), ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
        work = torch.from_numpy(padded)
    ramps = [max(0, min(round(overlap * t), t - 1)) for t in tile]
    ys = tile_origins(work.shape[1], tile[0], ramps[0])
    xs = tile_origins(work.shape[2], tile[1], ramps[1])
    boxes, windows = [], []
    for y in ys:
        wy = edge_ramp(tile[0], ramps[0], y > 0, y + tile[0] < work.shape[1])
        for x in xs:
            wx = edge_ramp(tile[1], ramps[1], x > 0, x + tile[1] < work.shape[2])
            boxes.append((y, x))
            windows.append((wy, wx))
    return Field(name, image, chosen, work, scaled, boxes, windows, pending=len(boxes))


# ---- inference ---------------------------------------------------------------------------------
@torch.inference_mode()
def _score(module, batch: list[tuple[Field, int, torch.Tensor]], device: torch.device) -> None:
    """Run one batch of crops through the network and hand each crop's logits to its field."""
    images = torch.stack([crop for _, _, crop in batch]).to(device)
    logits = module(images).float().cpu()
    for (field_, index, _), scores in zip(batch, logits, strict=True):
        field_.add(index, scores)


def predict_fields(
    module, fields: Iterable[Field], tile: tuple[int, int], batch_size: int, device: torch.device
) -> Iterator[Field]:
    """Score the crops of a stream of fields in batches of batch_size; yield each field once complete.

    Crops of consecutive images share batches, and only the fields with crops in the current
    batch are held in memory.
    """
    batch: list[tuple[Field, int, torch.Tensor]] = []
    waiting: list[Field] = []
    for field_ in fields:
        waiting.append(field_)
        for index, crop in field_.crops(tile):
            batch.append((field_, index, crop))
            if len(batch) == batch_size:
                _score(module, batch, device)
                batch = []
                while waiting and waiting[0].pending == 0:
                    yield waiting.pop(0)
    if batch:
        _score(module, batch, device)
    yield from waiting


def predict_image(
    module,
    image: np.ndarray,
    mode: PredictMode = PredictMode.auto,
    scale: float = 1.0,
    overlap: float = 0.25,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Class ids (HxW uint8) of one HxWx3 uint8 image, with a model from builders.load_module."""
    tile = tuple(int(v) for v in module.meta["image_size"])
    field_ = make_field("image", image, mode, tile, scale, overlap)
    (done,) = predict_fields(module, [field_], tile, batch_size, torch.device(device))
    return done.labels()


# ---- outputs -----------------------------------------------------------------------------------
def separation(image: np.ndarray, labels: np.ndarray, class_id: int) -> np.ndarray:
    """The image with only the pixels of class_id kept and every other pixel white."""
    return np.where((labels == class_id)[..., None], image, np.uint8(255))


def write_outputs(
    out_dir: Path, stem: str, image: np.ndarray, labels: np.ndarray, meta: dict, alpha: float
) -> None:
    """<stem>_labels.png, <stem>_overlay.png and <stem>_<class>.png per non-background class."""
    save_png(labels, out_dir / f"{stem}_labels.png")
    save_png(overlay(image, labels, meta["class_colors"], alpha), out_dir / f"{stem}_overlay.png")
    for class_id, name in enumerate(meta["class_names"]):
        if class_id > 0:
            save_png(separation(image, labels, class_id), out_dir / f"{stem}_{name}.png")


def _check_settings(s: DictConfig) -> None:
    """Fail clearly on settings outside their range."""
    if not s.scale > 0:
        raise BloodsegError(f"predict.scale={s.scale} must be > 0 (1.0 = predict at the input's resolution)")
    if not 0 <= s.overlap < 1:
        raise BloodsegError(f"predict.overlap={s.overlap} must be in [0, 1) (a fraction of the tile size)")
    if s.batch_size < 1:
        raise BloodsegError(f"predict.batch_size={s.batch_size} must be at least 1")
    if not 0 <= s.alpha <= 1:
        raise BloodsegError(f"predict.alpha={s.alpha} must be in [0, 1]")


def _fields(files, stems, settings, tile, skipped, progress) -> Iterator[Field]:
    """Read each file into a Field; unreadable files are logged, listed in skipped and passed over."""
    for path in files:
        try:
            image, note = read_rgb(path)
        except BloodsegError as error:
            log.warning("skipped %s", error)
            skipped.append({"file": str(path), "reason": str(error)})
            progress.update(1)
            continue
        if note:
            log.info("%s: %s", path.name, note)
        yield make_field(stems[path], image, settings.mode, tile, settings.scale, settings.overlap)


def predict(cfg: DictConfig, hydra_dir: Path) -> dict:
    """Segment, separate and count every image of cfg.input; returns the run summary."""
    check_config(cfg)
    if not cfg.ckpt_path or not cfg.input:
        raise BloodsegError("give ckpt_path=CKPT and input=FILE_OR_DIR (and optionally output_dir=DIR)")
    settings = cfg.predict
    _check_settings(settings)
    require(*COUNTING_NEEDS)
    files = list_inputs(cfg.input)
    module = load_module(cfg.ckpt_path)
    device = resolve_device(settings.device)
    module.to(device)
    meta = module.meta
    tile = tuple(int(v) for v in meta["image_size"])
    if settings.mode == PredictMode.resize and settings.scale != 1.0:
        log.warning(
            "predict.scale=%s is ignored in resize mode (images go to the training size)", settings.scale
        )
    out_dir = Path(cfg.output_dir or hydra_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    counting = CountSettings(
        settings.min_cell_area, settings.min_distance, settings.smoothing, settings.max_hole_area
    )
    stems = output_stems(files)
    by_stem = {stem: path for path, stem in stems.items()}
    skipped: list[dict] = []
    results: list[dict] = []
    log.info(
        "%d image(s) from %s on %s; tiles of %dx%d (HxW); outputs in %s",
        len(files),
        cfg.input,
        device,
        *tile,
        out_dir,
    )
    with (
        open(out_dir / "counts.csv", "w", newline="") as handle,
        tqdm(total=len(files), desc="predict", unit="image", file=sys.stderr) as progress,
    ):
        writer = csv.DictWriter(handle, fieldnames=count_columns(meta["class_names"]))
        writer.writeheader()
        fields = _fields(files, stems, settings, tile, skipped, progress)
        for done in predict_fields(module, fields, tile, settings.batch_size, device):
            labels = done.labels()
            write_outputs(out_dir, done.name, done.image, labels, meta, settings.alpha)
            counts = count_cells(labels, list(meta["class_names"]), counting)
            path = by_stem[done.name]
            writer.writerow(count_row(path.name, counts))
            handle.flush()
            results.append(
                {"image": path.name, "mode": done.mode, "tiles": len(done.boxes), "counts": counts}
            )
            progress.update(1)
    summary = {
        "checkpoint": str(cfg.ckpt_path),
        "input": str(cfg.input),
        "output_dir": str(out_dir),
        "class_names": list(meta["class_names"]),
        "predicted": len(results),
        "skipped": skipped,
        "images": results,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not results:
        raise BloodsegError(
            f"none of the {len(files)} file(s) in input={cfg.input} could be read; see the warnings above"
        )
    return summary


def summary_line(summary: dict) -> str:
    """One line for stdout: images done and skipped, cells counted per class, where the outputs are."""
    totals = {}
    for row in summary["images"]:
        for name, value in row["counts"].items():
            totals[name] = totals.get(name, 0) + value["count"]
    cells = ", ".join(f"{n} {name}" for name, n in totals.items())
    return (
        f"predicted {summary['predicted']} image(s), skipped {len(summary['skipped'])} unreadable; "
        f"cells counted: {cells}; outputs and counts.csv in {summary['output_dir']}"
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    try:
        summary = predict(cfg, Path(HydraConfig.get().runtime.output_dir))
    except BloodsegError as error:
        log.error("%s", error)
        raise SystemExit(2) from None
    print(summary_line(summary), flush=True)


if __name__ == "__main__":
    main()
