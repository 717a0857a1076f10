"""Cell counts from a class-id label map: one instance per cell, touching cells split apart.

Each non-background class is counted on its own binary mask, its cells split by
:func:`bloodseg.metrics.cells.split_cells` (a distance-transform marker watershed); this module
adds the per-cell table, the per-image counts and counting a field too large for one pass.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bloodseg.extras import require
from bloodseg.metrics.cells import COUNTING_NEEDS, CountSettings, split_cells


def count_cells(
    labels: np.ndarray, class_names: list[str], settings: CountSettings = CountSettings()
) -> dict[str, dict[str, int]]:
    """Per non-background class (ids 1..K-1): {"count": cells, "area_px": pixels of the class}."""
    counts = {}
    for class_id, name in enumerate(class_names):
        if class_id == 0:  # background by convention
            continue
        mask = labels == class_id
        counts[name] = {
            "count": int(split_cells(mask, settings).max(initial=0)),
            "area_px": int(mask.sum()),
        }
    return counts


CELL_COLUMNS = [
    "image",
    "cell_id",
    "class",
    "centroid_y",
    "centroid_x",
    "area_px",
    "equivalent_diameter_px",
    "touching",
]


def label_cells(
    labels: np.ndarray, class_names: list[str], settings: CountSettings = CountSettings()
) -> tuple[np.ndarray, list[dict]]:
    """Every cell of every non-background class as one instance: (instance ids, one row per cell).

    Instance ids (int32, 0 = no cell) run 1..N over the image, class by class. A row holds the
    cell's id, class, centroid (y, x pixels), area, equivalent diameter (of the disc with its
    area) and ``touching``: whether it was cut out of a piece it shared with other cells.
    """
    require(*COUNTING_NEEDS)
    from skimage.measure import regionprops

    instances = np.zeros(labels.shape, np.int32)
    rows: list[dict] = []
    for class_id, name in enumerate(class_names):
        if class_id == 0:  # background by convention
            continue
        cells = split_cells(labels == class_id, settings)
        n = int(cells.max(initial=0))
        if n == 0:
            continue
        pieces, _ = ndimage.label(cells > 0)
        piece_of = np.asarray(ndimage.maximum(pieces, cells, index=np.arange(1, n + 1)), np.int64)
        shared = np.bincount(piece_of)[piece_of] > 1
        offset = len(rows)
        instances[cells > 0] = cells[cells > 0] + offset
        for region, touching in zip(regionprops(cells), shared, strict=True):
            y, x = region.centroid
            rows.append(
                {
                    "cell_id": offset + region.label,
                    "class": name,
                    "centroid_y": round(float(y), 2),
                    "centroid_x": round(float(x), 2),
                    "area_px": int(region.num_pixels),
                    "equivalent_diameter_px": round(float(region.equivalent_diameter_area), 2),
                    "touching": bool(touching),
                }
            )
    return instances, rows


MICRON_COLUMNS = ["area_um2", "equivalent_diameter_um"]


def in_microns(cells: list[dict], pixel_size_um: float) -> list[dict]:
    """label_cells' rows with their area and diameter also in microns (pixel_size_um = microns per pixel)."""
    return [
        {
            **cell,
            "area_um2": round(cell["area_px"] * pixel_size_um**2, 3),
            "equivalent_diameter_um": round(cell["equivalent_diameter_px"] * pixel_size_um, 3),
        }
        for cell in cells
    ]


def class_counts(labels: np.ndarray, class_names: list[str], cells: list[dict]) -> dict[str, dict[str, int]]:
    """count_cells' result from label_cells' rows: cells and pixel area per non-background class."""
    return {
        name: {
            "count": sum(1 for c in cells if c["class"] == name),
            "area_px": int((labels == class_id).sum()),
        }
        for class_id, name in enumerate(class_names)
        if class_id > 0
    }


def count_columns(class_names: list[str]) -> list[str]:
    """The columns of counts.csv: image, then <class>_count and <class>_area_px per non-background class."""
    columns = ["image"]
    for name in class_names[1:]:
        columns += [f"{name}_count", f"{name}_area_px"]
    return columns


def count_row(image: str, counts: dict[str, dict[str, int]]) -> dict[str, object]:
    """One counts.csv row for an image from count_cells' result."""
    row: dict[str, object] = {"image": image}
    for name, value in counts.items():
        row[f"{name}_count"] = value["count"]
        row[f"{name}_area_px"] = value["area_px"]
    return row


# ---- synthetic fields with known counts (to measure the counting error) --------------------------
def disc_field(
    seed: int,
    shape: tuple[int, int],
    radius: tuple[float, float],
    isolated: int,
    touching_pairs: int,
    overlapping_pairs: int,
    overlap: float = 0.2,
    class_id: int = 1,
) -> tuple[np.ndarray, int]:
    """A uint8 label map of discs of class_id (radius drawn from the range) and how many discs it holds.

    Isolated discs, pairs that touch (centres r1 + r2 apart) and pairs that overlap by
    ``overlap`` of their summed radii; groups never touch each other nor the image edge.
    Groups that find no free place are left out of both the map and the count.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    near = np.zeros(shape, bool)  # placed discs grown by 3 px: no new group may reach into it
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    groups = [0.0] * isolated + [1.0] * touching_pairs + [1.0 - overlap] * overlapping_pairs
    rng.shuffle(groups)
    placed = 0
    for spacing in groups:
        for _ in range(200):
            discs = _group(rng, shape, radius, spacing, isolated=spacing == 0.0)
            group = np.zeros(shape, bool)
            for cy, cx, r in discs:
                group |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            if group.all() or not group.any():
                continue
            if not (group & near).any() and _inside(group):
                labels[group] = class_id
                near |= ndimage.binary_dilation(group, iterations=3)
                placed += len(discs)
                break
    return labels, placed


def _group(rng, shape, radius, spacing, isolated):
    """One disc, or two discs whose centres are spacing * (r1 + r2) apart, as (cy, cx, r) tuples."""
    r1 = rng.uniform(*radius)
    cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
    if isolated:
        return [(cy, cx, r1)]
    r2 = rng.uniform(*radius)
    angle = rng.uniform(0, 2 * np.pi)
    d = spacing * (r1 + r2)
    return [(cy, cx, r1), (cy + d * np.sin(angle), cx + d * np.cos(angle), r2)]


def _inside(group: np.ndarray) -> bool:
    """Whether a mask stays off the outermost pixel rows and columns."""
    return not (group[0].any() or group[-1].any() or group[:, 0].any() or group[:, -1].any())


# ---- counting a field too large for one pass, window by window ---------------------------------
COUNT_CORE = 1536  # side of the square of the field each window counts the cells of (pixels)
COUNT_MARGIN = 256  # context around it: cells up to this size are seen whole (pixels)


def cells_in_windows(
    read,
    size: tuple[int, int],
    class_names: list[str],
    settings: CountSettings = CountSettings(),
    core: int = COUNT_CORE,
    margin: int = COUNT_MARGIN,
) -> list[dict]:
    """label_cells' rows for a field of size (H, W) counted window by window, in bounded memory.

    read(y0, y1) gives label rows y0:y1 (all columns). Each window is a core x core square plus
    ``margin`` pixels of context on every side; a cell belongs to the window whose core holds its
    centroid, so each cell is counted once and, when smaller than the margin, exactly as on the
    whole field. Centroids are in field pixels; cell ids run 1..N window by window (no instance
    image is made).
    """
    height, width = size
    rows: list[dict] = []
    for y in range(0, height, core):
        top, bottom = max(0, y - margin), min(height, y + core + margin)
        band = read(top, bottom)
        for x in range(0, width, core):
            left, right = max(0, x - margin), min(width, x + core + margin)
            _, cells = label_cells(band[:, left:right], class_names, settings)
            for cell in cells:
                cy, cx = cell["centroid_y"] + top, cell["centroid_x"] + left
                if y <= cy < y + core and x <= cx < x + core:
                    rows.append(
                        {
                            **cell,
                            "cell_id": len(rows) + 1,
                            "centroid_y": round(cy, 2),
                            "centroid_x": round(cx, 2),
                        }
                    )
    return rows
