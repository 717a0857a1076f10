"""PNG files written row band by row band, so a picture of any size never sits whole in memory.

PIL needs the whole image to write a PNG; a streamed field's label map (up to gigapixels) and
pictures are written here instead, rows top to bottom, deflate-compressed as they come. A
palette PNG with a transparent index reads back in PIL exactly like ``labels.palette_label``'s.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


class PngRows:
    """An 8-bit PNG (palette when palette is given, else RGB) of size (H, W), written by ``write(rows)``.

    palette: up to 256 RGB colours; transparent: a palette index shown transparent (tRNS).
    ``close()`` checks that exactly H rows came and finishes the file.
    """

    def __init__(
        self,
        path: Path,
        size: tuple[int, int],
        palette: np.ndarray | None = None,
        transparent: int | None = None,
        level: int = 6,
    ):
        self.path, self.size, self.rows = Path(path), size, 0
        self.channels = 1 if palette is not None else 3
        self._file = open(self.path, "wb")
        self._deflate = zlib.compressobj(level)
        colour_type = 3 if palette is not None else 2
        self._file.write(b"\x89PNG\r\n\x1a\n")
        self._file.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", size[1], size[0], 8, colour_type, 0, 0, 0)))
        if palette is not None:
            self._file.write(_chunk(b"PLTE", np.asarray(palette, np.uint8).reshape(-1, 3).tobytes()))
            if transparent is not None:
                alpha = np.full(transparent + 1, 255, np.uint8)
                alpha[transparent] = 0
                self._file.write(_chunk(b"tRNS", alpha.tobytes()))

    def write(self, rows: np.ndarray) -> None:
        """Append rows (n x W for palette, n x W x 3 for RGB, uint8) below those written so far."""
        rows = np.asarray(rows, np.uint8).reshape(len(rows), -1)
        if rows.shape[1] != self.size[1] * self.channels or self.rows + len(rows) > self.size[0]:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape} do not fit a {self.size} PNG")
        filtered = np.zeros((len(rows), rows.shape[1] + 1), np.uint8)  # filter type 0 (none) per row
        filtered[:, 1:] = rows
        self._emit(self._deflate.compress(filtered.tobytes()))
        self.rows += len(rows)

    def _emit(self, data: bytes) -> None:
        if data:
            self._file.write(_chunk(b"IDAT", data))

    def close(self) -> None:
        """Finish the file (all rows must have been written)."""
        if self._file.closed:
            return
        try:
            if self.rows != self.size[0]:
                raise ValueError(f"{self.path.name}: {self.rows} of {self.size[0]} rows written")
            self._emit(self._deflate.flush())
            self._file.write(_chunk(b"IEND", b""))
        finally:
            self._file.close()
