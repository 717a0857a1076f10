"""The per-image outputs of a streamed field, written as its class-id rows arrive (top to bottom).

``<stem>_labels.png`` is written at full resolution, row band by row band. The overlay and the
per-class pictures are written at full resolution up to ``max_picture_pixels`` and, for larger
fields, subsampled by the smallest whole step that fits (every step-th row and column; the step
is logged and kept in summary.json). The class ids also go to a raw uint8 file beside the
outputs (``.<stem>_labels.raw``, removed at the end) from which the cells are counted window by
window (counting.cells_in_windows). No instance image or outlines picture is written for a
streamed field (a field of millions of cells does not fit a 16-bit PNG).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bloodseg.constants import IGNORE_INDEX
from bloodseg.data.fieldio import FieldReader
from bloodseg.inference.counting import cells_in_windows
from bloodseg.inference.png_rows import PngRows
from bloodseg.metrics.cells import CountSettings
from bloodseg.viz.pictures import overlay


class LabelStore:
    """An H x W uint8 array in a raw file, written and read by row bands with plain file I/O."""

    def __init__(self, path: Path, size: tuple[int, int]):
        self.path, self.size = Path(path), size
        self._file = open(self.path, "w+b")

    def write(self, y0: int, rows: np.ndarray) -> None:
        """Store rows y0:y0+len(rows)."""
        self._file.seek(y0 * self.size[1])
        self._file.write(np.ascontiguousarray(rows, np.uint8).tobytes())

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows y0:y1 (all columns)."""
        self._file.seek(y0 * self.size[1])
        return np.frombuffer(self._file.read((y1 - y0) * self.size[1]), np.uint8).reshape(y1 - y0, -1)

    def remove(self) -> None:
        """Close and delete the file."""
        self._file.close()
        self.path.unlink(missing_ok=True)


def picture_step(size: tuple[int, int], max_pixels: int) -> int:
    """The smallest whole subsampling step that brings a field's pictures within max_pixels."""
    step = 1
    while math.ceil(size[0] / step) * math.ceil(size[1] / step) > max_pixels:
        step += 1
    return step


def separation(image: np.ndarray, labels: np.ndarray, class_id: int) -> np.ndarray:
    """The image with only the pixels of class_id kept and every other pixel white."""
    return np.where((labels == class_id)[..., None], image, np.uint8(255))


class StreamedOutputs:
    """Sink of a streamed field's class-id rows: label PNG, pictures, pixel areas, counting store."""

    def __init__(
        self, out_dir: Path, stem: str, reader: FieldReader, meta: dict, alpha: float, max_picture_pixels: int
    ):
        self.reader, self.meta, self.alpha = reader, meta, alpha
        self.size = reader.size
        self.step = picture_step(self.size, max_picture_pixels)
        colors = meta["class_colors"]
        palette = np.zeros((256, 3), np.uint8)
        palette[: len(colors)] = np.asarray(colors, np.uint8)
        small = (math.ceil(self.size[0] / self.step), math.ceil(self.size[1] / self.step))
        self.paths = [out_dir / f"{stem}_labels.png", out_dir / f"{stem}_overlay.png"]
        self.paths += [out_dir / f"{stem}_{name}.png" for name in meta["class_names"][1:]]
        self.store = LabelStore(out_dir / f".{stem}_labels.raw", self.size)
        self.labels = PngRows(self.paths[0], self.size, palette, transparent=IGNORE_INDEX)
        self.pictures = [PngRows(path, small) for path in self.paths[1:]]
        self.areas = np.zeros(256, np.int64)

    def __call__(self, y0: int, rows: np.ndarray) -> None:
        """Take field rows y0:y0+len(rows) of class ids."""
        self.store.write(y0, rows)
        self.labels.write(rows)
        self.areas += np.bincount(rows.ravel(), minlength=256)
        first = -(-y0 // self.step) * self.step  # the first picture row in this band
        if first >= y0 + len(rows):
            return
        last = y0 + len(rows)
        labels = rows[first - y0 :: self.step, :: self.step]
        image = self.reader.read(first, last, 0, self.size[1])[:: self.step, :: self.step]
        image = np.require(image, requirements=["C", "W"])  # overlay hands it to torch
        self.pictures[0].write(overlay(image, labels, self.meta["class_colors"], self.alpha))
        for class_id, picture in enumerate(self.pictures[1:], start=1):
            picture.write(separation(image, labels, class_id))

    def finish(self, settings: CountSettings | None) -> tuple[dict[str, dict], list[dict]]:
        """Close the pictures and count the cells (settings None: not counted, counts are None);
        returns (counts and pixel areas per class, one row per cell)."""
        for png in [self.labels, *self.pictures]:
            png.close()
        names = list(self.meta["class_names"])
        cells = None if settings is None else cells_in_windows(self.store.read, self.size, names, settings)
        counts = {
            name: {
                "count": None if cells is None else sum(1 for c in cells if c["class"] == name),
                "area_px": int(self.areas[class_id]),
            }
            for class_id, name in enumerate(names)
            if class_id > 0
        }
        return counts, cells or []

    def discard(self) -> None:
        """After a failure: close and delete everything written for this field."""
        for png in [self.labels, *self.pictures]:
            png._file.close()
        for path in self.paths:
            path.unlink(missing_ok=True)
        self.store.remove()
