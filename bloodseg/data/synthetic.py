"""Seeded generator of realistic synthetic blood-smear crops with exact labels.

Rendering follows light absorption (Beer-Lambert): every cell adds optical density to
an unevenly lit, noisy background, so overlapping red cells look darker, as in real
smears. Red cells are biconcave discs (dark rim, pale centre), white cells have a
light-violet cytoplasm and a dark purple nucleus of 1-5 lobes, platelets are small
dark dots labelled background. Stain colour, blur, lighting and size vary per image,
and some pockets are left unlabelled (255), like the paper's GIMP labels.

Labels: 0 background, 1 red cell, 2 white cell, 255 unlabelled.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from bloodseg.constants import IGNORE_INDEX

BACKGROUND, RBC, WBC = 0, 1, 2
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SmearSpec:
    """What one generated smear contains, for tests that check the labels."""

    num_rbc: int
    num_wbc: int
    num_platelets: int


def _ellipse_coords(shape, center, radii, angle):
    """Normalised elliptical radius rho (1 on the boundary) over a bounding box, and the box."""
    cy, cx = center
    reach = int(np.ceil(max(radii))) + 3
    y0, y1 = max(0, int(cy) - reach), min(shape[0], int(cy) + reach + 1)
    x0, x1 = max(0, int(cx) - reach), min(shape[1], int(cx) + reach + 1)
    if y0 >= y1 or x0 >= x1:
        return None, None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / radii[1]
    v = (-dx * sin + dy * cos) / radii[0]
    return np.sqrt(u * u + v * v), (slice(y0, y1), slice(x0, x1))


def _smooth_noise(rng, shape, sigma):
    """Zero-mean, unit-std low-frequency noise field."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def _place_centers(rng, shape, count, radius, min_gap, taken):
    """Random centres at least min_gap * (r1 + r2) apart from each other and from `taken`."""
    centers = []
    for _ in range(count * 30):
        if len(centers) == count:
            break
        r = radius * rng.uniform(0.85, 1.15)
        c = (rng.uniform(-0.3 * r, shape[0] + 0.3 * r), rng.uniform(-0.3 * r, shape[1] + 0.3 * r))
        if all(np.hypot(c[0] - o[0], c[1] - o[1]) >= min_gap * (r + o[2]) for o in centers + taken):
            centers.append((c[0], c[1], r))
    return centers


def generate_smear(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, SmearSpec]:
    """Render one smear crop: an HxWx3 uint8 image, its HxW uint8 label map and what it holds."""
    rng = np.random.default_rng(seed)
    shape = (height, width)
    density = np.zeros((3, height, width), np.float32)  # optical density per RGB channel
    label = np.full(shape, BACKGROUND, np.uint8)

    stain = rng.uniform(0.85, 1.15, 3).astype(np.float32)  # per-image stain colour variation
    rbc_od = np.array([0.10, 0.62, 0.42], np.float32) * stain * rng.uniform(0.8, 1.2)
    cyto_od = np.array([0.30, 0.38, 0.10], np.float32) * stain
    nucleus_od = np.array([1.00, 1.35, 0.40], np.float32) * stain * rng.uniform(0.85, 1.15)
    rbc_radius = rng.uniform(16, 24)

    wbc_count = int(rng.choice([0, 1, 1, 2, 2, 3], p=[0.06, 0.3, 0.24, 0.2, 0.12, 0.08]))
    wbcs = _place_centers(rng, shape, wbc_count, rbc_radius * rng.uniform(1.5, 2.1), 1.05, [])
    coverage = rng.uniform(0.25, 0.5)
    rbc_target = int(coverage * height * width / (np.pi * rbc_radius**2))
    rbcs = _place_centers(rng, shape, rbc_target, rbc_radius, rng.uniform(0.72, 0.95), wbcs)

    rbc_mask = np.zeros(shape, bool)
    for cy, cx, r in rbcs:
        radii = (r * rng.uniform(0.82, 1.0), r)
        rho, box = _ellipse_coords(shape, (cy, cx), radii, rng.uniform(0, np.pi))
        if rho is None:
            continue
        edge = np.clip((1.0 - rho) * r / 1.2 + 0.5, 0, 1)  # anti-aliased disc edge (~1 px)
        pallor = rng.uniform(0.35, 0.6)
        thickness = (1 - pallor * np.exp(-((rho / rng.uniform(0.35, 0.5)) ** 2))) * (0.85 + 0.25 * rho**4)
        density[:, box[0], box[1]] += rbc_od[:, None, None] * (thickness * edge)[None]
        rbc_mask[box] |= rho <= 1.0

    wbc_mask = np.zeros(shape, bool)
    for cy, cx, r in wbcs:
        rho, box = _ellipse_coords(shape, (cy, cx), (r * rng.uniform(0.88, 1.0), r), rng.uniform(0, np.pi))
        if rho is None:
            continue
        sub = (rho.shape[0], rho.shape[1])
        edge = np.clip((1.0 - rho) * r / 1.2 + 0.5, 0, 1)
        texture = 1 + 0.12 * _smooth_noise(rng, sub, 2.0)
        density[:, box[0], box[1]] += cyto_od[:, None, None] * (edge * texture)[None]
        lobes = int(rng.integers(1, 6))
        nucleus = np.zeros(sub, np.float32)
        lobe_r = r * (0.62 if lobes == 1 else rng.uniform(0.28, 0.4))
        spread = 0.0 if lobes == 1 else r * 0.4
        for k in range(lobes):
            angle = 2 * np.pi * k / lobes + rng.uniform(-0.4, 0.4)
            ly = cy + spread * np.sin(angle) - box[0].start
            lx = cx + spread * np.cos(angle) - box[1].start
            lrho, lbox = _ellipse_coords(
                sub, (ly, lx), (lobe_r * rng.uniform(0.75, 1.0), lobe_r), rng.uniform(0, np.pi)
            )
            if lrho is not None:
                nucleus[lbox] = np.maximum(nucleus[lbox], np.clip((1.0 - lrho) * lobe_r / 1.5 + 0.5, 0, 1))
        chromatin = 1 + 0.2 * _smooth_noise(rng, sub, 1.2)
        density[:, box[0], box[1]] += nucleus_od[:, None, None] * (nucleus * chromatin * edge)[None]
        wbc_mask[box] |= rho <= 1.0

    platelets = int(rng.integers(0, 7))
    for _ in range(platelets):
        center = (rng.uniform(0, height), rng.uniform(0, width))
        pr = rng.uniform(1.8, 3.5)
        rho, box = _ellipse_coords(shape, center, (pr * rng.uniform(0.7, 1.0), pr), rng.uniform(0, np.pi))
        if rho is not None:
            density[:, box[0], box[1]] += (
                nucleus_od[:, None, None] * 0.7 * np.clip(1.0 - rho, 0, 1)[None] * 1.8
            )

    label[rbc_mask] = RBC
    label[wbc_mask] = WBC

    # Uneven illumination (gradient + vignetting), pale tinted background, blur and sensor noise.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gy, gx = rng.uniform(-0.08, 0.08, 2)
    light = 1 + gy * (yy / height - 0.5) + gx * (xx / width - 0.5)
    light -= rng.uniform(0.03, 0.12) * (((yy / height - 0.5) ** 2 + (xx / width - 0.5) ** 2) * 2)
    light += 0.015 * _smooth_noise(rng, shape, 25.0)
    tint = np.array([238, 228, 222], np.float32) * rng.uniform(0.94, 1.04, 3)
    image = np.clip(tint, 0, 255)[:, None, None] * light[None] * np.exp(-density)
    image = ndimage.gaussian_filter(image, sigma=(0, rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4)))
    image += rng.normal(0, rng.uniform(2.0, 5.0), image.shape)
    image = np.clip(image, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)

    _add_unlabelled_pockets(rng, label)
    return image, label, SmearSpec(len(rbcs), len(wbcs), platelets)


def _add_unlabelled_pockets(rng, label: np.ndarray) -> None:
    """Mark 0-2 blob-shaped regions as unlabelled (255), like areas an annotator skipped."""
    height, width = label.shape
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(15, 45)
        rho, box = _ellipse_coords(
            label.shape, (cy, cx), (radius * rng.uniform(0.5, 1.0), radius), rng.uniform(0, np.pi)
        )
        if rho is not None:
            wobble = 0.15 * _smooth_noise(rng, rho.shape, 3.0)
            label[box][rho + wobble <= 1.0] = IGNORE_INDEX


def generate_dataset(directory: Path, num_images: int, seed: int, min_size, max_size) -> None:
    """Write num_images smears as images/smear_NNN.png and labels/smear_NNN.png under directory."""
    (directory / "images").mkdir(parents=True, exist_ok=True)
    (directory / "labels").mkdir(parents=True, exist_ok=True)
    sizes = np.random.default_rng([seed, 7]).integers(
        min_size, np.asarray(max_size) + 1, size=(num_images, 2)
    )
    for i, (h, w) in enumerate(sizes):
        image, label, _ = generate_smear(seed * 100_003 + i, int(h), int(w))
        Image.fromarray(image).save(directory / "images" / f"smear_{i:03d}.png")
        Image.fromarray(label).save(directory / "labels" / f"smear_{i:03d}.png")


def synthetic_dataset_dir(cache_dir: Path, num_images: int, seed: int, min_size, max_size) -> Path:
    """Folder of the cached synthetic set for these settings, generated on first use.

    Generation writes to a private temporary folder that is renamed into place, so parallel
    jobs of a sweep never see a half-written set.
    """
    key = f"synthetic-v{GENERATOR_VERSION}-n{num_images}-s{seed}-{min_size[0]}x{min_size[1]}-{max_size[0]}x{max_size[1]}"
    target = Path(cache_dir) / key
    if (target / "COMPLETE").exists():
        return target
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        generate_dataset(staging, num_images, seed, min_size, max_size)
        (staging / "COMPLETE").write_text("ok\n")
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "COMPLETE").exists():  # a stale, incomplete folder: replace it
                shutil.rmtree(target, ignore_errors=True)
                os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
