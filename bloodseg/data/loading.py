"""Decoding a list of labelled files once into resized uint8 tensors, reporting what did not fit."""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from bloodseg.data.imageio import read_label, read_rgb
from bloodseg.data.labels import ClassTable, EncodedLabel, encode_binary_masks, encode_label
from bloodseg.data.sources import SamplePaths
from bloodseg.data.transforms import resize_pair
from bloodseg.errors import BloodsegError

log = logging.getLogger(__name__)


@dataclass
class LoadedImages:
    """Images (N,3,H,W) and class-id masks (N,H,W) as uint8, with their ids and a label report."""

    ids: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    stray: dict[str, dict] = field(default_factory=dict)  # file name -> {"pixels", "values"}
    unlabelled_pixels: int = 0
    label_pixels: int = 0  # label pixels at the files' own size (what the stray counts are a share of)
    overlap_pixels: int = 0  # binary masks: pixels two class masks both claim (the later class kept)
    conversions: dict[str, int] = field(default_factory=dict)


def load_pair(paths: SamplePaths, table: ClassTable, size: list[int]):
    """Read one image and its label, check they match in size, encode and resize them."""
    image, note = read_rgb(paths.image)
    raw, alpha = read_label(paths.label)
    if image.shape[:2] != raw.shape[:2]:
        raise BloodsegError(
            f"label {paths.label} is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image {paths.image} is "
            f"{image.shape[1]}x{image.shape[0]}; fix: export the label at the image's size"
        )
    encoded = encode_paths(paths, raw, alpha, table)
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    mask_t = torch.from_numpy(encoded.ids)
    image_t, mask_t = resize_pair(image_t, mask_t, size)
    return image_t.contiguous(), mask_t.contiguous(), encoded, note


def encode_paths(paths: SamplePaths, raw: np.ndarray, alpha, table: ClassTable) -> EncodedLabel:
    """Class ids of a pair's label: decoded with the class table, or from its binary class masks."""
    if not paths.binary:
        return encode_label(raw, table, str(paths.label), alpha)
    files = [paths.label, *paths.extra_masks]
    raws = [raw] + [read_label(path)[0] for path in paths.extra_masks]
    return encode_binary_masks(raws, table, [str(f) for f in files])


def load_images(pairs: list[SamplePaths], table: ClassTable, size: list[int]) -> LoadedImages:
    """Decode and resize every pair (in threads), then report stray label values once."""
    if not pairs:
        return LoadedImages(
            [], torch.zeros(0, 3, *size, dtype=torch.uint8), torch.zeros(0, *size, dtype=torch.uint8)
        )
    workers = min(8, os.cpu_count() or 1, len(pairs))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: load_pair(p, table, size), pairs))
    loaded = LoadedImages(
        ids=[p.id for p in pairs],
        images=torch.stack([r[0] for r in results]),
        masks=torch.stack([r[1] for r in results]),
    )
    conversions: Counter = Counter()
    for paths, (_, _, encoded, note) in zip(pairs, results, strict=True):
        if encoded.stray_pixels:
            loaded.stray[paths.label.name] = {
                "pixels": encoded.stray_pixels,
                "values": encoded.stray_examples,
            }
        loaded.unlabelled_pixels += encoded.unlabelled_pixels
        loaded.label_pixels += int(encoded.ids.size)
        loaded.overlap_pixels += encoded.overlap_pixels
        if note:
            conversions[note] += 1
    loaded.conversions = dict(conversions)
    for note, count in conversions.items():
        log.info("data: %d image(s): %s", count, note)
    return loaded


def stray_summary(stray: dict[str, dict], label_pixels: int) -> dict:
    """Label pixels of a split that match no class (ignored): {"pixels", "share" of the split's label
    pixels, "files", "worst": the file with the most}, for metrics.json and the result tables."""
    total = sum(v["pixels"] for v in stray.values())
    worst = max(stray, key=lambda name: stray[name]["pixels"]) if stray else None
    return {
        "pixels": total,
        "share": total / label_pixels if label_pixels else 0.0,
        "files": len(stray),
        "worst": worst,
    }


def describe_stray(stray: dict[str, dict]) -> str | None:
    """One warning naming the files whose labels hold values of no class, or None if there are none."""
    if not stray:
        return None
    total = sum(v["pixels"] for v in stray.values())
    worst = sorted(stray.items(), key=lambda kv: -kv[1]["pixels"])
    shown = "; ".join(f"{name}: {v['pixels']} px (values {v['values']})" for name, v in worst[:6])
    more = f"; and {len(worst) - 6} more file(s)" if len(worst) > 6 else ""
    return (
        f"{total} label pixel(s) in {len(stray)} file(s) match no class in data.classes and are ignored (255): "
        f"{shown}{more}. Fix: add those values/colours to data.classes, or clean the labels"
    )
