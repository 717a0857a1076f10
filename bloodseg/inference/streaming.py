"""Streamed prediction of a whole field: tiles in, class-id rows out, memory bounded by a band of tiles.

The (scaled) field is cut into overlapping square tiles (``predict.stream_tile``, larger than
the training size: the networks are fully convolutional), read from the field's reader as they
are needed and run in batches. Logits are blended with the smooth window of ``inference`` into
float accumulators that hold only the current row of tiles; rows no later tile touches are
final: divided by their weight, resized back to the field's resolution by the same bilinear
rule as ``torch.nn.functional.interpolate`` (align_corners=False), reduced to class ids and
handed to a sink, top to bottom. Nothing of field size is kept in float.

At ``scale=1`` the tiles are the field's pixels; otherwise each tile is resampled from its
region of the field with the antialiased bilinear filter of whole-image prediction, aligned to
the same output grid (exact when the field size over the scaled size is a ratio of small
integers; otherwise within half a pixel). ``resize`` builds the training-size image once (from
a field in memory exactly as whole-image prediction does; from a TIFF read in tiles through an
area-average by an integer factor first) and streams only the way back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as TF

from bloodseg.data.fieldio import ArrayReader, FieldReader
from bloodseg.inference.tiling import edge_ramp, padded_size, resample, tile_origins

ALIGN_STEP_MAX = 64  # largest field-pixel step at which scaled tiles align exactly (see module doc)
UPSAMPLE_ROWS = 64  # field rows resized and decided per step


@dataclass(frozen=True)
class StreamPlan:
    """The tiles of one streamed field: sizes as (rows, columns)."""

    mode: str  # tile | resize
    size: tuple[int, int]  # the field as read
    work: tuple[int, int]  # the network-side image: scaled field, or the training size (resize)
    tile: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    ramps: tuple[int, int]

    @property
    def tiles(self) -> int:
        """How many tiles go through the network."""
        return len(self.ys) * len(self.xs)


def plan_stream(
    size: tuple[int, int],
    mode: str,
    training: tuple[int, int],
    scale: float,
    overlap: float,
    stream_tile: int,
) -> StreamPlan:
    """Tiles for a field of size (H, W): resize = one training-size input; otherwise square tiles of
    stream_tile pixels (0 = the training size) over the scaled field, overlapping by ``overlap``."""
    if mode == "resize":
        return StreamPlan("resize", size, training, training, (0,), (0,), (0, 0))
    work = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    side = (stream_tile, stream_tile) if stream_tile else training
    padded = padded_size(work)
    tile = (min(side[0], max(padded[0], training[0])), min(side[1], max(padded[1], training[1])))
    ramps = tuple(max(0, min(round(overlap * t), t - 1)) for t in tile)
    ys = tile_origins(max(work[0], tile[0]), tile[0], ramps[0])
    xs = tile_origins(max(work[1], tile[1]), tile[1], ramps[1])
    return StreamPlan("tile", size, work, tile, tuple(ys), tuple(xs), ramps)


def _mirror(crop: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Extend an image crop to rows x columns at the bottom and right by mirroring."""
    pad = (max(0, rows - crop.shape[0]), max(0, columns - crop.shape[1]))
    if not any(pad):
        return crop
    return np.pad(crop, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="symmetric")


def _writable(array: np.ndarray) -> np.ndarray:
    """The array, copied only where it is not C-contiguous and writable (torch wants both)."""
    return np.require(array, requirements=["C", "W"])


def reduced_field(reader: FieldReader, size: tuple[int, int]) -> torch.Tensor:
    """The whole field resampled to size (3 x h x w uint8), never holding a tiled reader's field whole."""
    if isinstance(reader, ArrayReader):
        image = torch.from_numpy(_writable(reader.image)).permute(2, 0, 1)
        return resample(image, size)
    height, width = reader.size
    factor = max(1, min(height // (2 * size[0]), width // (2 * size[1])))
    band = factor * max(1, 2048 // factor)
    rows = []
    for y in range(0, height - height % factor, band):
        y1 = min(y + band, height - height % factor)
        block = reader.read(y, y1, 0, width - width % factor).astype(np.float32)
        block = block.reshape((y1 - y) // factor, factor, -1, factor, 3).mean((1, 3))
        rows.append(np.round(block).astype(np.uint8))
    small = torch.from_numpy(np.concatenate(rows)).permute(2, 0, 1).contiguous()
    return resample(small, size)


class WorkImage:
    """Crops of the network-side image (the field scaled, or resized for ``resize``), read on demand."""

    def __init__(self, reader: FieldReader, plan: StreamPlan):
        self.reader, self.plan = reader, plan
        self.whole = reduced_field(reader, plan.work) if plan.mode == "resize" else None
        (height, width), (h, w) = plan.size, plan.work
        self.steps = [_align_step(height, h), _align_step(width, w)]

    def crop(self, y: int, x: int) -> torch.Tensor:
        """The tile at work position (y, x) as a 3 x tile uint8 tensor (mirrored beyond the border)."""
        th, tw = self.plan.tile
        if self.whole is not None:
            return self.whole
        (height, width), (h, w) = self.plan.size, self.plan.work
        y1, x1 = min(y + th, h), min(x + tw, w)
        if (h, w) == (height, width):
            crop = self.reader.read(y, y1, x, x1)
        else:
            crop = self._scaled(y, y1, x, x1)
        return torch.from_numpy(_writable(_mirror(crop, th, tw))).permute(2, 0, 1)

    def _scaled(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Work rows y0:y1, columns x0:x1 resampled from the field region around them."""
        (height, width), (h, w) = self.plan.size, self.plan.work
        (ya, yb, oy), (xa, xb, ox) = (
            _source_span(y0, y1, height, h, self.steps[0]),
            _source_span(x0, x1, width, w, self.steps[1]),
        )
        region = torch.from_numpy(_writable(self.reader.read(ya, yb, xa, xb))).permute(2, 0, 1)
        out = TF.interpolate(
            region[None],
            scale_factor=(h / height, w / width),
            mode="bilinear",
            align_corners=False,
            antialias=True,
            recompute_scale_factor=False,
        )[0]
        part = out[:, oy : oy + (y1 - y0), ox : ox + (x1 - x0)]
        return part.permute(1, 2, 0).numpy()


def _align_step(length: int, scaled: int) -> int:
    """Field pixels between starts at which a crop's resampling grid matches the whole field's (0 = none)."""
    step = length // math.gcd(length, scaled)
    return step if step <= ALIGN_STEP_MAX else 0


def _source_span(a: int, b: int, length: int, scaled: int, step: int) -> tuple[int, int, int]:
    """Field span [start, end) whose resampling covers work span [a, b), and a's offset in it."""
    ratio = length / scaled
    margin = math.ceil(2 * ratio) + 2
    start = max(0, math.floor(a * ratio) - margin)
    if step:
        start -= start % step  # start * scaled / length is then a whole work pixel
    end = min(length, math.ceil(b * ratio) + margin)
    offset = round(a - start * scaled / length)
    return start, end, offset


class RowUpsampler:
    """Class scores of the work image, pushed in row order, out as class-id rows of the field.

    The bilinear rule is ``interpolate(..., mode="bilinear", align_corners=False)``'s, applied
    separably (columns, then rows), so the decisions equal those of resizing the whole score map.
    """

    def __init__(self, work: tuple[int, int], size: tuple[int, int], sink: Callable[[int, np.ndarray], None]):
        self.work, self.size, self.sink = work, size, sink
        self.rows: torch.Tensor | None = None  # K x n x w: work rows not yet used up
        self.first = 0  # work row of self.rows[:, 0]
        self.next = 0  # next field row to emit
        ratio = work[0] / size[0]
        src = ((np.arange(size[0]) + 0.5) * ratio - 0.5).clip(0, None)
        self.i0 = np.floor(src).astype(np.int64).clip(0, work[0] - 1)
        self.i1 = np.minimum(self.i0 + 1, work[0] - 1)
        self.lam = torch.from_numpy((src - self.i0).astype(np.float32))

    def push(self, scores: torch.Tensor) -> None:
        """Append the next work rows (K x n x w float, already blended and normalised)."""
        if self.work == self.size:
            self.sink(self.next, scores.argmax(0).to(torch.uint8).numpy())
            self.next += scores.shape[1]
            return
        self.rows = scores if self.rows is None else torch.cat([self.rows, scores], 1)
        available = self.first + self.rows.shape[1]
        while self.next < self.size[0] and self.i1[self.next] < available:
            end = self.next
            while end < self.size[0] and end - self.next < UPSAMPLE_ROWS and self.i1[end] < available:
                end += 1
            low = int(self.i0[self.next]) - self.first  # the work rows these field rows need, resized
            wide = self._columns(self.rows[:, low : int(self.i1[end - 1]) - self.first + 1])
            top = torch.from_numpy(self.i0[self.next : end] - self.first - low)
            bottom = torch.from_numpy(self.i1[self.next : end] - self.first - low)
            lam = self.lam[self.next : end][None, :, None]
            rows = wide[:, top] * (1 - lam) + wide[:, bottom] * lam
            self.sink(self.next, rows.argmax(0).to(torch.uint8).numpy())
            self.next = end
        if self.next < self.size[0]:  # drop the work rows no later field row needs
            keep = int(self.i0[self.next]) - self.first
            self.rows, self.first = self.rows[:, keep:], self.first + keep

    def _columns(self, rows: torch.Tensor) -> torch.Tensor:
        """Work rows (K x n x w) resized to the field's width (rows unchanged: an identity along them)."""
        if rows.shape[2] == self.size[1]:
            return rows
        return TF.interpolate(
            rows[None], size=(rows.shape[1], self.size[1]), mode="bilinear", align_corners=False
        )[0]


@torch.inference_mode()
def stream_field(
    module,
    reader: FieldReader,
    plan: StreamPlan,
    device: torch.device,
    batch_pixels: int,
    sink: Callable[[int, np.ndarray], None],
    on_tile: Callable[[int], None] = lambda n: None,
) -> dict:
    """Predict a field tile by tile; every row of class ids (uint8) goes to sink(first_row, rows) in order.

    batch_pixels bounds the pixels of one forward pass (at least one tile). Returns timing figures.
    """
    start = time.perf_counter()
    work = WorkImage(reader, plan)
    (h, w), (th, tw) = plan.work, plan.tile
    full_w = max(w, tw)
    per_batch = max(1, batch_pixels // (th * tw))
    upsampler = RowUpsampler(plan.work, plan.size, sink)
    scores = weight = None
    first = 0  # work row of scores[:, 0]
    columns = [edge_ramp(tw, plan.ramps[1], x > 0, x + tw < full_w) for x in plan.xs]
    for i, y in enumerate(plan.ys):
        rows_window = edge_ramp(th, plan.ramps[0], y > 0, y + th < max(h, th))
        grow = y + th - first - (0 if scores is None else scores.shape[1])
        if grow > 0:
            extra_w = torch.zeros(grow, full_w)
            weight = extra_w if weight is None else torch.cat([weight, extra_w])
            extra = None if scores is None else torch.zeros(scores.shape[0], grow, full_w)
            scores = None if scores is None else torch.cat([scores, extra], 1)
        for b in range(0, len(plan.xs), per_batch):
            xs = plan.xs[b : b + per_batch]
            batch = torch.stack([work.crop(y, x) for x in xs]).to(device)
            logits = module(batch).float().cpu()
            if scores is None:
                scores = torch.zeros(logits.shape[1], weight.shape[0], full_w)
            for j, x in enumerate(xs):
                window = rows_window[:, None] * columns[b + j][None, :]
                scores[:, y - first : y - first + th, x : x + tw] += logits[j] * window
                weight[y - first : y - first + th, x : x + tw] += window
            on_tile(len(xs))
        done = min(plan.ys[i + 1] if i + 1 < len(plan.ys) else h, h) - first
        if done > 0:
            upsampler.push(scores[:, :done, :w] / weight[:done, :w])
            scores, weight, first = scores[:, done:], weight[done:], first + done
    seconds = time.perf_counter() - start
    return {"tiles": plan.tiles, "seconds": round(seconds, 2), "tiles_per_s": round(plan.tiles / seconds, 3)}
