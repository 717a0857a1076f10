"""Reading images and label images from disk, with clear errors for files that cannot be read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bloodseg.errors import BloodsegError

EXIF_ORIENTATION = 0x0112  # the EXIF tag saying how a camera's pixels are turned for display
TURNED_SIDEWAYS = {5, 6, 7, 8}  # orientations that swap height and width
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except Image.DecompressionBombError:
        raise BloodsegError(
            f"{path} has more pixels than this tool reads whole (PIL's limit of {Image.MAX_IMAGE_PIXELS:,}); "
            "fix: python -m bloodseg.predict streams such fields (save them as TIFF to read them in tiles), "
            "or cut the image into smaller tiles"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BloodsegError(f"cannot read {path}: {error}; fix: re-export it as PNG or remove it") from None
    return upright(image)


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1 = as stored; 2-8 = mirrored and/or turned for display)."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - damaged EXIF: the pixels as stored
        return 1


def upright(image: Image.Image) -> Image.Image:
    """The image as viewers show it: turned and mirrored as its EXIF orientation says (phones and some
    microscope cameras store the pixels sideways), so it matches a mask drawn on what was seen."""
    if exif_orientation(image) in (0, 1):
        return image
    turned = ImageOps.exif_transpose(image)
    turned.info["turned_by_exif"] = True
    return turned


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to 0..255: 8-bit range passes through, 16-bit is divided by 257."""
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    top = float(array.max(initial=0))
    if top <= 255:
        return array.clip(0, 255).astype(np.uint8)
    full = 65535.0 if top <= 65535 else top
    return (array.astype(np.float64) * (255.0 / full)).round().clip(0, 255).astype(np.uint8)


def read_rgb(path: Path) -> tuple[np.ndarray, str | None]:
    """An image file as HxWx3 uint8 RGB, upright as its EXIF orientation says, and a note when it had to
    be turned or converted (else None)."""
    image = _open(path)
    note = "turned upright as its EXIF orientation says" if image.info.get("turned_by_exif") else None
    array, converted = _rgb(image)
    return array, "; ".join(n for n in (note, converted) if n) or None


def _rgb(image: Image.Image) -> tuple[np.ndarray, str | None]:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image), None
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = to_uint8(np.asarray(image))
        return np.repeat(grey[..., None], 3, axis=2), f"{mode} (high bit depth) scaled to 8-bit RGB"
    if mode in ("L", "1"):
        return np.asarray(image.convert("RGB")), "greyscale converted to RGB"
    if mode in ("RGBA", "LA", "PA"):
        return np.asarray(image.convert("RGB")), "alpha channel dropped"
    return np.asarray(image.convert("RGB")), f"{mode} converted to RGB"


def read_label(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A label file as HxW values or HxWx3 colours (raw, not yet class ids), and its alpha if any."""
    image = _open(path)
    mode = image.mode
    alpha = None
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA"):
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() == 255:
            alpha = None
        image = image.convert("RGB" if mode == "RGBA" else "L")
        mode = image.mode
    if mode == "RGB":
        return np.asarray(image), alpha
    if mode == "CMYK" or mode == "YCbCr":
        return np.asarray(image.convert("RGB")), alpha
    if mode == "1":
        return np.asarray(image).astype(np.uint8), alpha
    return np.asarray(image), alpha
