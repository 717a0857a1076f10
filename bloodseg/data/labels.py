"""The class table of a dataset and the conversion of label images to class ids.

Class ids are ``0..K-1`` in the order of the config's ``classes`` list; 255 is ignore.
RGB label images are matched on each class's ``color`` (as GIMP writes them), single-
channel ones on its ``value``. Transparent pixels of RGBA labels, and the value 255 in
single-channel labels (unless a class claims it), are unlabelled on purpose; any other
pixel that matches no class is a stray value: it becomes ignore and is counted, so that
nothing is lost silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from bloodseg.constants import IGNORE_INDEX
from bloodseg.errors import BloodsegError

# Overlay colours for classes whose config gives none (after the paper's three).
FALLBACK_COLORS = [
    (255, 255, 0),
    (0, 0, 255),
    (0, 255, 0),
    (255, 0, 0),
    (255, 0, 255),
    (0, 255, 255),
    (128, 0, 128),
    (255, 128, 0),
    (128, 128, 128),
    (0, 128, 0),
]


@dataclass(frozen=True)
class ClassTable:
    """Names, overlay colours and label encodings of the K classes, in class-id order."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int] | None, ...]
    values: tuple[int | None, ...]

    @classmethod
    def from_config(cls, classes: Sequence) -> ClassTable:
        """Build the table from the ``data.classes`` list, checking it for mistakes."""
        if not classes:
            raise BloodsegError(
                "data.classes is empty: list each class as {name: ..., color: [r, g, b], value: v}"
            )
        if len(classes) > 254:
            raise BloodsegError(
                f"data.classes has {len(classes)} classes; at most 254 fit beside the ignore label 255"
            )
        names, colors, values = [], [], []
        for i, spec in enumerate(classes):
            name = spec.get("name") if hasattr(spec, "get") else None
            if not name:
                raise BloodsegError(f"data.classes[{i}] has no name: give each class a name")
            color = spec.get("color")
            if color is not None:
                color = tuple(int(c) for c in color)
                if len(color) != 3 or not all(0 <= c <= 255 for c in color):
                    raise BloodsegError(
                        f"data.classes[{i}] ({name}): color must be [r, g, b] with 0..255, got {list(color)}"
                    )
            value = spec.get("value")
            if value is not None and not 0 <= int(value) <= 255:
                raise BloodsegError(
                    f"data.classes[{i}] ({name}): value must be a label pixel value 0..255, got {value}"
                )
            names.append(str(name))
            colors.append(color)
            values.append(None if value is None else int(value))
        for what, items in (("name", names), ("color", colors), ("value", values)):
            seen = [x for x in items if x is not None]
            dupes = sorted({str(x) for x in seen if seen.count(x) > 1})
            if dupes:
                raise BloodsegError(
                    f"data.classes: two classes share the {what} {', '.join(dupes)}; each must be unique"
                )
        return cls(tuple(names), tuple(colors), tuple(values))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def overlay_colors(self) -> list[tuple[int, int, int]]:
        """One RGB colour per class: the configured one, else a fixed fallback."""
        return [
            c if c is not None else FALLBACK_COLORS[i % len(FALLBACK_COLORS)]
            for i, c in enumerate(self.colors)
        ]


@dataclass
class EncodedLabel:
    """A label image as class ids, with what did not match the class table."""

    ids: np.ndarray
    stray_pixels: int = 0
    stray_examples: list = field(default_factory=list)
    unlabelled_pixels: int = 0  # marked unlabelled on purpose (transparent, or the value 255)
    overlap_pixels: int = 0  # binary masks: pixels two class masks both claim (the later class kept)


def encode_label(
    raw: np.ndarray, table: ClassTable, source: str, alpha: np.ndarray | None = None
) -> EncodedLabel:
    """Map a raw label array (HxW values or HxWx3 colours) to class ids; unmatched pixels become 255."""
    colour = raw.ndim == 3
    if colour and all(c is None for c in table.colors):
        if (
            all(v is not None for v in table.values)
            and np.array_equal(raw[..., 0], raw[..., 1])
            and np.array_equal(raw[..., 0], raw[..., 2])
        ):
            raw, colour = raw[..., 0], False  # a grey label saved as RGB
    keys_needed = table.colors if colour else table.values
    missing = [table.names[i] for i, k in enumerate(keys_needed) if k is None]
    if missing:
        kind, key = ("an RGB", "color: [r, g, b]") if colour else ("a single-channel", "value: v")
        raise BloodsegError(
            f"label {source} is {kind} image but class(es) {', '.join(missing)} in data.classes have no "
            f"{key.split(':')[0]}; fix: add `{key}` to each class"
        )
    ids = np.full(raw.shape[:2], IGNORE_INDEX, np.uint8)
    matched = np.zeros(raw.shape[:2], bool)
    if colour:
        flat = (
            (raw[..., 0].astype(np.int32) << 16)
            | (raw[..., 1].astype(np.int32) << 8)
            | raw[..., 2].astype(np.int32)
        )
        for class_id, (r, g, b) in enumerate(table.colors):
            hit = flat == ((r << 16) | (g << 8) | b)
            ids[hit], matched[hit] = class_id, True
    else:
        flat = raw
        for class_id, value in enumerate(table.values):
            hit = raw == value
            ids[hit], matched[hit] = class_id, True
    unlabelled = ~matched
    on_purpose = np.zeros(raw.shape[:2], bool)
    if not colour and IGNORE_INDEX not in table.values:
        on_purpose |= raw == IGNORE_INDEX
    if alpha is not None:
        on_purpose |= alpha == 0
        ids[alpha == 0] = IGNORE_INDEX
    unlabelled &= ~on_purpose
    stray = int(unlabelled.sum())
    examples = []
    if stray:
        values = np.unique(flat[unlabelled])[:8]
        examples = [[int(v >> 16), int((v >> 8) & 255), int(v & 255)] if colour else int(v) for v in values]
    return EncodedLabel(ids, stray, examples, int(on_purpose.sum()))


BINARY_FIX = "fix: save it as a binary mask, 0 where the class is absent and 255 where it is present"


def binary_mask(raw: np.ndarray, source: str) -> np.ndarray:
    """A binary mask file's raw values (HxW, or HxWx3 with equal channels) as a bool array.

    Allowed values are 0 and 255 (or 0 and 1, as 1-bit images read); anything else fails naming the file.
    """
    if raw.ndim == 3:
        if not (np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2])):
            raise BloodsegError(f"mask {source} has colour (its RGB channels differ); {BINARY_FIX}")
        raw = raw[..., 0]
    values = np.unique(raw)
    if set(values.tolist()) <= {0, 255}:
        return raw == 255
    if set(values.tolist()) <= {0, 1}:
        return raw == 1
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    raise BloodsegError(f"mask {source} holds the values {shown}, not only 0 and 255; {BINARY_FIX}")


def encode_binary_masks(
    masks: Sequence[np.ndarray], table: ClassTable, sources: Sequence[str]
) -> EncodedLabel:
    """Class ids from one binary mask per non-background class: mask i marks class i + 1, the rest is 0.

    Where masks overlap, the later mask's class wins (ALL-IDB1: a white cell over a red one); the
    pixels claimed twice are counted in ``overlap_pixels``.
    """
    if len(masks) != table.num_classes - 1:
        raise BloodsegError(
            f"{len(masks)} binary mask(s) ({', '.join(sources)}) for {table.num_classes} classes in data.classes; "
            "fix: list the background and then one class per mask"
        )
    ids = np.zeros(masks[0].shape[:2], np.uint8)
    covered = np.zeros(masks[0].shape[:2], bool)
    overlap = 0
    for class_id, (raw, source) in enumerate(zip(masks, sources, strict=True), start=1):
        if raw.shape[:2] != ids.shape:
            raise BloodsegError(
                f"mask {source} is {raw.shape[1]}x{raw.shape[0]} (WxH) but {sources[0]} is "
                f"{ids.shape[1]}x{ids.shape[0]}; fix: export the masks of one field at one size"
            )
        hit = binary_mask(raw, source)
        overlap += int((hit & covered).sum())
        ids[hit], covered = class_id, covered | hit
    return EncodedLabel(ids, overlap_pixels=overlap)


def palette_label(ids: np.ndarray, colors: Sequence[Sequence[int]]) -> Image.Image:
    """Class ids (HxW) as a palette (mode P) image: pixel value = class id, palette = class colours.

    Image editors (GIMP) show and edit it in the class colours, and the data loaders read it back
    by colour (``data=folder`` / ``allidb1``) to the same ids. Ignore (255) is the transparent index.
    """
    ids = np.asarray(ids, np.uint8)
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8)
    image = Image.fromarray(ids)
    image.putpalette(palette.ravel().tolist())
    image.info["transparency"] = IGNORE_INDEX
    return image


def class_pixel_counts(masks: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: labelled pixels, and labelled pixels of the images that contain the class (ignore excluded)."""
    pixel_count = torch.zeros(num_classes, dtype=torch.float64)
    image_pixel_count = torch.zeros(num_classes, dtype=torch.float64)
    for mask in masks:
        labelled = mask[mask != IGNORE_INDEX].long().flatten()
        counts = torch.bincount(labelled, minlength=num_classes)[:num_classes].double()
        pixel_count += counts
        image_pixel_count += (counts > 0).double() * counts.sum()
    return pixel_count, image_pixel_count
