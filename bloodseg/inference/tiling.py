"""Running a trained network over whole images of any size: whole, tiled or resized, in batches.

``whole`` runs the (scaled) image in one forward pass, padded by mirroring to a multiple of 32
(five 2x poolings) and cropped back; ``tile`` runs overlapping tiles of the training size whose
logits are blended with a smooth window, so any image fits in bounded memory; ``resize`` is the
paper's (the image is resized to the training size and the scores back); ``auto`` predicts an
image whole when its scaled size is at most ``max_whole_pixels`` and tiles it otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as TF
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from bloodseg.config import PredictMode
from bloodseg.constants import DEFAULT_MAX_WHOLE_PIXELS
from bloodseg.data.imageio import IMAGE_SUFFIXES, read_rgb
from bloodseg.errors import BloodsegError

log = logging.getLogger("bloodseg.predict")


STRIDE = 32  # the networks pool five times: whole-image inputs are padded to a multiple of this


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
        device = torch.device(name)
    except RuntimeError as error:
        raise BloodsegError(
            f"predict.device={name} is not a device ({error}); use auto, cpu or cuda"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BloodsegError(
            f"predict.device={name}, but no CUDA GPU is available here; fix: predict.device=cpu"
        )
    return device


# ---- planning ----------------------------------------------------------------------------------
def choose_mode(
    mode: PredictMode, size: tuple[int, int], max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS
) -> str:
    """``whole``, ``tile`` or ``resize`` for an image of (scaled) size (H, W).

    auto predicts the image whole while its padded size holds at most max_whole_pixels (the memory
    budget of one forward pass) and tiles it beyond.
    """
    if mode != PredictMode.auto:
        return mode.value
    padded = padded_size(size)
    return "whole" if padded[0] * padded[1] <= max_whole_pixels else "tile"


def padded_size(size: tuple[int, int], stride: int = STRIDE) -> tuple[int, int]:
    """(H, W) rounded up to multiples of stride."""
    return tuple(-(-int(s) // stride) * stride for s in size)


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
    mode: str  # whole | tile | resize
    work: torch.Tensor  # 3xhxw uint8: the resampled (and for tiles and whole, padded) network input
    work_size: tuple[int, int]  # (h, w) of the resampled image before padding
    boxes: list[tuple[int, int]]  # crop origins (y, x) in work
    windows: list[tuple[torch.Tensor, torch.Tensor]]  # each crop's separable blending weight (rows, columns)
    crop_size: tuple[int, int]  # (h, w) of every crop
    scores: torch.Tensor | None = None  # K x h x w weighted sum of logits
    weight: torch.Tensor | None = None  # h x w sum of weights
    pending: int = 0  # crops not yet scored

    def crops(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, 3 x crop_size uint8 crop) for every crop of the image."""
        th, tw = self.crop_size
        for i, (y, x) in enumerate(self.boxes):
            yield i, self.work[:, y : y + th, x : x + tw]

    def add(self, index: int, logits: torch.Tensor) -> None:
        """Accumulate one crop's logits (K x crop) with its blending weight."""
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

    def logits(self) -> torch.Tensor:
        """Class scores (K x H x W float) at the size of the image as read."""
        h, w = self.work_size
        scores = (self.scores[:, :h, :w] / self.weight[:h, :w]).unsqueeze(0)
        size = self.image.shape[:2]
        if (h, w) != size:  # class scores back to the input size, then the decision
            scores = TF.interpolate(scores, size=size, mode="bilinear", align_corners=False)
        return scores[0]

    def labels(self) -> np.ndarray:
        """Class ids (HxW uint8) at the size of the image as read."""
        return self.logits().argmax(0).to(torch.uint8).numpy()


def resample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A 3xHxW uint8 image resized (bilinear, antialiased, as in training) to size = (h, w)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def _mirror_pad(work: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Extend a 3xhxw image to at least size at the bottom and right by mirroring the smear."""
    pad_h, pad_w = max(0, size[0] - work.shape[1]), max(0, size[1] - work.shape[2])
    if not (pad_h or pad_w):
        return work
    return torch.from_numpy(np.pad(work.numpy(), ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric"))


def make_field(
    name: str,
    image: np.ndarray,
    mode: PredictMode,
    tile: tuple[int, int],
    scale: float,
    overlap: float,
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS,
) -> Field:
    """Plan an image's network inputs: the whole scaled image, one resized crop, or overlapping tiles."""
    height, width = image.shape[:2]
    scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
    chosen = choose_mode(mode, scaled, max_whole_pixels)
    tensor = torch.from_numpy(np.array(image, np.uint8, copy=True)).permute(2, 0, 1)
    if chosen == "resize":
        work = resample(tensor, tile)
        flat = (torch.ones(tile[0]), torch.ones(tile[1]))
        return Field(name, image, chosen, work, tile, [(0, 0)], [flat], tile, pending=1)
    work = resample(tensor, scaled)
    if chosen == "whole":
        size = padded_size(scaled)
        flat = (torch.ones(size[0]), torch.ones(size[1]))
        return Field(name, image, chosen, _mirror_pad(work, size), scaled, [(0, 0)], [flat], size, pending=1)
    work = _mirror_pad(work, tile)  # smaller than a tile along one side: mirror the smear to fill it
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
    return Field(name, image, chosen, work, scaled, boxes, windows, tile, pending=len(boxes))


@dataclass(frozen=True)
class FieldPlan:
    """How every image of a run goes through the network (the predict.* settings make_field needs)."""

    mode: PredictMode
    tile: tuple[int, int]
    scale: float = 1.0
    overlap: float = 0.25
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS

    def field(self, name: str, image: np.ndarray) -> Field:
        """The Field of one image under this plan."""
        return make_field(name, image, self.mode, self.tile, self.scale, self.overlap, self.max_whole_pixels)


def read_fields(
    files: list[Path],
    stems: dict[Path, str],
    plan: FieldPlan,
    skipped: list[dict],
    on_skip: Callable[[], None] = lambda: None,
) -> Iterator[Field]:
    """Read each file into a Field (named by stems); unreadable files are logged, listed in skipped, passed over."""
    for path in files:
        try:
            image, note = read_rgb(path)
        except BloodsegError as error:
            log.warning("skipped %s", error)
            skipped.append({"file": str(path), "reason": str(error)})
            on_skip()
            continue
        if note:
            log.info("%s: %s", path.name, note)
        yield plan.field(stems[path], image)


# ---- inference ---------------------------------------------------------------------------------
@torch.inference_mode()
def _score(module, batch: list[tuple[Field, int, torch.Tensor]], device: torch.device) -> None:
    """Run one batch of crops through the network and hand each crop's logits to its field."""
    images = torch.stack([crop for _, _, crop in batch]).to(device)
    logits = module(images).float().cpu()
    for (field_, index, _), scores in zip(batch, logits, strict=True):
        field_.add(index, scores)


def training_window(meta: dict) -> tuple[int, int]:
    """The size (H, W) of what the network saw per sample in training: the random window of a run trained
    on crops (data.crop_size), else the training size. Batches of predict and suggest are sized by it."""
    crop = ((meta.get("config") or {}).get("data") or {}).get("crop_size")
    return tuple(int(v) for v in (crop or meta["image_size"]))


def predict_fields(
    module, fields: Iterable[Field], window: tuple[int, int], batch_size: int, device: torch.device
) -> Iterator[Field]:
    """Score the crops of a stream of fields in batches; yield each field once complete.

    A batch holds crops of one shape and at most batch_size training windows' worth of pixels (see
    training_window; a whole image larger than that goes alone, so whole fields of a model trained on
    small windows go one at a time). Crops of consecutive images share batches, and only the fields
    with crops in the current batch are held in memory.
    """
    budget = batch_size * window[0] * window[1]
    batch: list[tuple[Field, int, torch.Tensor]] = []
    waiting: list[Field] = []

    def flush() -> Iterator[Field]:
        _score(module, batch, device)
        batch.clear()
        while waiting and waiting[0].pending == 0:
            yield waiting.pop(0)

    for field_ in fields:
        waiting.append(field_)
        pixels = field_.crop_size[0] * field_.crop_size[1]
        for index, crop in field_.crops():
            if batch and (batch[0][2].shape != crop.shape or (len(batch) + 1) * pixels > budget):
                yield from flush()
            batch.append((field_, index, crop))
    if batch:
        yield from flush()
    yield from waiting


def predict_logits(
    module,
    image: np.ndarray,
    mode: PredictMode = PredictMode.auto,
    scale: float = 1.0,
    overlap: float = 0.25,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS,
) -> torch.Tensor:
    """Class scores (K x H x W) of one HxWx3 uint8 image, with a model from builders.load_module."""
    tile = tuple(int(v) for v in module.meta["image_size"])
    field_ = make_field("image", image, mode, tile, scale, overlap, max_whole_pixels)
    (done,) = predict_fields(module, [field_], training_window(module.meta), batch_size, torch.device(device))
    return done.logits()


def predict_image(module, image: np.ndarray, *args, **kwargs) -> np.ndarray:
    """Class ids (HxW uint8) of one HxWx3 uint8 image (arguments as predict_logits)."""
    return predict_logits(module, image, *args, **kwargs).argmax(0).to(torch.uint8).numpy()
