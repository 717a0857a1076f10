"""Cell instances from a binary class mask: one instance per cell, touching cells split apart.

The distance to the mask's edge peaks once inside every roughly round cell, so the peaks seed a
marker watershed that cuts touching or overlapping cells along their neck (peaks closer than
``min_distance`` pixels are one cell). Holes up to ``max_hole_area`` pixels (a pale cell centre
taken for background) are filled first, as they would put false peaks around them; pieces
smaller than ``min_area`` pixels (specks, slivers) are not cells. Counting (predict) and the
instance metrics (evaluate) both take their predicted cells from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from bloodseg.extras import require

COUNTING_NEEDS = ("skimage", "count", "cell counting")  # scikit-image's watershed: the `count` extra


@dataclass(frozen=True)
class CountSettings:
    """How cells are separated and which pieces count (all lengths and areas in output pixels)."""

    min_area: int = 80  # smaller connected pieces are specks, not cells
    min_distance: int = 8  # two cell centres are at least this far apart
    smoothing: float = 1.0  # Gaussian sigma on the distance map before peak finding (0 = off)
    max_hole_area: int = 300  # enclosed holes up to this size belong to the cell around them


COUNTING_KEYS = {  # config key (evaluation.instances.*, predict.*) -> CountSettings field
    "min_cell_area": "min_area",
    "min_distance": "min_distance",
    "smoothing": "smoothing",
    "max_hole_area": "max_hole_area",
}


def resolve_count_settings(given: Callable[[str], Any], fallback: Mapping | None = None) -> CountSettings:
    """How cells are split: each counting key's ``given(key)`` value, else ``fallback[key]`` (the
    evaluation.instances a checkpoint's run scored its cells with), else the CountSettings default."""
    default = CountSettings()
    chosen = {}
    for key, name in COUNTING_KEYS.items():
        value = given(key)
        if value is None:
            value = (fallback or {}).get(key)
        base = getattr(default, name)
        chosen[name] = base if value is None else type(base)(value)
    return CountSettings(**chosen)


def split_cells(mask: np.ndarray, settings: CountSettings = CountSettings()) -> np.ndarray:
    """Instance ids (int32, 0 = not this class) of the cells in a binary mask, touching cells split."""
    require(*COUNTING_NEEDS)
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = fill_small_holes(np.asarray(mask, bool), settings.max_hole_area)
    components = drop_small(ndimage.label(mask)[0], settings.min_area)
    mask = components > 0
    if not mask.any():
        return components
    distance = ndimage.distance_transform_edt(mask)
    if settings.smoothing > 0:
        distance = ndimage.gaussian_filter(distance, settings.smoothing) * mask
    peaks = peak_local_max(
        distance,
        min_distance=max(int(settings.min_distance), 1),
        labels=components,
        exclude_border=False,
    )
    seeds = np.zeros(mask.shape, bool)
    seeds[tuple(peaks.T)] = True
    markers, _ = ndimage.label(seeds)  # touching peak pixels (plateaus) are one marker
    cells = watershed(-distance, markers, mask=mask)
    unseeded = mask & (cells == 0)  # a component whose distance map had no peak: one cell
    if unseeded.any():
        extra, _ = ndimage.label(unseeded)
        cells = np.where(extra > 0, extra + cells.max(), cells)
    return drop_small(cells.astype(np.int32), settings.min_area)


def fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """The mask with enclosed holes (not touching the image edge) of at most max_area pixels filled."""
    if max_area <= 0:
        return mask
    holes, _ = ndimage.label(~mask)
    small = np.bincount(holes.ravel()) <= max_area
    small[0] = False
    edge = np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])
    small[edge] = False
    return mask | small[holes]


def drop_small(cells: np.ndarray, min_area: int) -> np.ndarray:
    """Instances of at least min_area pixels, renumbered 1..n."""
    areas = np.bincount(cells.ravel())
    keep = areas >= min_area
    keep[0] = False
    renumber = np.zeros(len(areas), np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return renumber[cells]
