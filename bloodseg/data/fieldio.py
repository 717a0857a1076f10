"""Whole fields read region by region: small images from memory, large TIFF scans tile by tile.

``open_field`` gives a reader with the field's size and ``read(y0, y1, x0, x1)`` (HxWx3 uint8
RGB). Images within PIL's limits are read whole with ``imageio.read_rgb`` (as everywhere else
in bloodseg); TIFF files beyond ``stream_pixels`` or beyond PIL's decompression-bomb limit are
read with tifffile, one region at a time: uncompressed contiguous data row band by row band,
tiled or stripped data segment by segment (decoded segments kept in a small LRU cache), so the
memory does not grow with the scan. Other formats beyond PIL's limit are read whole (3 bytes
per pixel) with the limit lifted for that file only: the user's own image is not a bomb.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from bloodseg.data.imageio import TURNED_SIDEWAYS, exif_orientation, read_rgb
from bloodseg.errors import BloodsegError

TIFF_SUFFIXES = (".tif", ".tiff")
# decoded TIFF tiles/strips kept for neighbouring reads (one row of 512-px tiles of a 30000-px scan: 45 MB)
SEGMENT_CACHE_BYTES = 64 * 2**20


def pil_limit() -> int | None:
    """PIL's decompression-bomb limit in pixels (None = no limit); read at call time."""
    return Image.MAX_IMAGE_PIXELS


@contextlib.contextmanager
def pil_limit_lifted() -> Iterator[None]:
    """PIL's decompression-bomb check switched off for the duration of the block."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


class FieldReader:
    """A field (HxW RGB image) read region by region; ``note`` says how it was converted, if at all."""

    size: tuple[int, int]
    note: str | None = None
    streamed_read: bool = False  # True: read tile by tile from disk (never whole in memory)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows y0:y1 and columns x0:x1 as a (y1-y0) x (x1-x0) x 3 uint8 RGB array."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file (if any)."""


class ArrayReader(FieldReader):
    """A field already in memory."""

    def __init__(self, image: np.ndarray, note: str | None = None):
        self.image = image
        self.size = tuple(image.shape[:2])
        self.note = note

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.image[y0:y1, x0:x1]


class TiffReader(FieldReader):
    """The first page of a TIFF file, read region by region with tifffile."""

    streamed_read = True

    def __init__(self, path: Path):
        import tifffile

        self.path = Path(path)
        try:
            self._tiff = tifffile.TiffFile(self.path)
            page = self._tiff.pages[0]
            shape, dtype = page.shape, np.dtype(page.dtype)
        except Exception as error:  # tifffile raises many types for damaged files
            raise BloodsegError(
                f"cannot read {self.path}: {error}; fix: re-export it as PNG or TIFF, or remove it"
            ) from None
        self._page = page
        if page.planarconfig != 1 and len(shape) == 3:
            self.close()
            raise BloodsegError(
                f"cannot read {self.path}: planar (separate) colour samples; fix: save it as a chunky (contiguous) RGB TIFF"
            )
        if dtype not in (np.uint8, np.uint16) or len(shape) not in (2, 3):
            self.close()
            raise BloodsegError(
                f"cannot read {self.path}: {dtype} samples of shape {shape}; fix: save it as 8- or 16-bit RGB or greyscale"
            )
        self.size = (int(shape[0]), int(shape[1]))
        self.samples = 1 if len(shape) == 2 else int(shape[2])
        self.dtype = dtype.newbyteorder(self._tiff.byteorder)
        notes = []
        if dtype == np.uint16:
            notes.append("16-bit read as value / 257 (8-bit)")
        if self.samples in (1, 2):
            notes.append("greyscale converted to RGB")
        if self.samples in (2, 4):
            notes.append("alpha channel dropped")
        self.note = ", ".join(notes) or None
        self._contiguous = page.compression == 1 and page.is_contiguous
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        if not self._contiguous:
            self._chunk = (int(page.chunks[0]), int(page.chunks[1]))
            self._grid = (int(page.chunked[0]), int(page.chunked[1]))

    def _rgb(self, raw: np.ndarray) -> np.ndarray:
        """Raw samples (h x w x samples) as uint8 RGB."""
        if raw.dtype != np.uint8:
            raw = ((raw.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        if self.samples in (1, 2):
            return np.repeat(raw[..., :1], 3, axis=2)
        return np.ascontiguousarray(raw[..., :3])

    def _segment(self, index: int) -> np.ndarray:
        """One decoded tile or strip (chunk rows x chunk columns x samples), cached."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        handle = self._tiff.filehandle
        handle.seek(self._page.dataoffsets[index])
        data = handle.read(self._page.databytecounts[index])
        try:
            decoded = self._page.decode(data, index)[0]
        except Exception as error:
            raise BloodsegError(
                f"cannot read {self.path}: segment {index} does not decode ({error}); the file is damaged"
            ) from None
        decoded = decoded.reshape(decoded.shape[-3], decoded.shape[-2], -1)
        self._cache[index] = decoded
        self._cached_bytes += decoded.nbytes
        while self._cached_bytes > SEGMENT_CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.nbytes
        return decoded

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        height, width = self.size
        y0, y1, x0, x1 = max(0, y0), min(height, y1), max(0, x0), min(width, x1)
        if self._contiguous:
            row = width * self.samples * self.dtype.itemsize
            handle = self._tiff.filehandle
            handle.seek(self._page.dataoffsets[0] + y0 * row)
            data = handle.read((y1 - y0) * row)
            if len(data) != (y1 - y0) * row:
                raise BloodsegError(f"cannot read {self.path}: the file is truncated")
            raw = np.frombuffer(data, self.dtype).reshape(y1 - y0, width, self.samples)[:, x0:x1]
            return self._rgb(raw)
        out = np.empty((y1 - y0, x1 - x0, self.samples), self.dtype)
        (ch, cw), (ny, nx) = self._chunk, self._grid
        for r in range(y0 // ch, min(ny, math.ceil(y1 / ch))):
            for c in range(x0 // cw, min(nx, math.ceil(x1 / cw))):
                segment = self._segment(r * nx + c)
                top, left = r * ch, c * cw
                a, b = max(y0, top), min(y1, top + segment.shape[0], height)
                d, e = max(x0, left), min(x1, left + segment.shape[1], width)
                out[a - y0 : b - y0, d - x0 : e - x0] = segment[a - top : b - top, d - left : e - left]
        return self._rgb(out)

    def close(self) -> None:
        self._cache.clear()
        self._tiff.close()


def probe_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding its pixels."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tiff:
                shape = tiff.pages[0].shape
                if tiff.pages[0].planarconfig == 2 and len(shape) == 3:
                    shape = shape[1:]
                return int(shape[0]), int(shape[1])
        except Exception:
            pass  # not a TIFF tifffile understands: PIL may still read it
    try:
        with pil_limit_lifted(), Image.open(path) as image:
            sideways = exif_orientation(image) in TURNED_SIDEWAYS  # read_rgb turns it upright
            return (image.width, image.height) if sideways else (image.height, image.width)
    except Exception as error:
        raise BloodsegError(f"cannot read {path}: {error}; fix: re-export it as PNG or remove it") from None


def needs_streaming(size: tuple[int, int], stream_pixels: int) -> bool:
    """Whether a field of this size is predicted streamed: beyond stream_pixels or PIL's limit."""
    pixels = size[0] * size[1]
    limit = pil_limit()
    return pixels > stream_pixels or (limit is not None and pixels > limit)


def open_field(path: Path, stream_pixels: int) -> FieldReader:
    """A reader for one image file: TIFF beyond stream_pixels or PIL's limit tile by tile, the rest whole."""
    path = Path(path)
    size = probe_size(path)
    if needs_streaming(size, stream_pixels) and path.suffix.lower() in TIFF_SUFFIXES:
        return TiffReader(path)
    limit = pil_limit()
    if limit is not None and size[0] * size[1] > limit:
        with pil_limit_lifted():
            image, note = read_rgb(path)
        extra = f"{size[0] * size[1] / 1e6:.0f} Mpx, beyond PIL's limit: read whole (save as TIFF to read it in tiles)"
        return ArrayReader(image, f"{note}; {extra}" if note else extra)
    return ArrayReader(*read_rgb(path))
