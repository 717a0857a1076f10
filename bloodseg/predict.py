"""``python -m bloodseg.predict``: segment whole smears, separate and count cells, one row per cell.

    python -m bloodseg.predict ckpt_path=CKPT input=FILE_OR_DIR output_dir=DIR [predict.mode=auto|whole|tile|resize]

Per image it writes ``<stem>_labels.png`` (class ids as a palette PNG in the class colours),
``<stem>_overlay.png``, ``<stem>_<class>.png`` per non-background class (only that class's
pixels, the rest white), ``<stem>_instances.png`` (16-bit, one id per cell) and
``<stem>_outlines.png`` (cell outlines and ids); for the run ``counts.csv`` (cells and pixel
area per class), ``cells.csv`` (one row per cell) and ``summary.json``.
How images go through the network (whole, tiled, resized) is bloodseg.inference's.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from bloodseg.builders import load_module
from bloodseg.config import CONF_DIR, check_config
from bloodseg.counting import (
    CELL_COLUMNS,
    COUNTING_NEEDS,
    MICRON_COLUMNS,
    CountSettings,
    class_counts,
    count_columns,
    count_row,
    in_microns,
    label_cells,
)
from bloodseg.data.labels import palette_label
from bloodseg.errors import BloodsegError, exit_2_on_user_error
from bloodseg.extras import require
from bloodseg.inference import (
    DEFAULT_MAX_WHOLE_PIXELS,
    FieldPlan,
    PredictMode,
    list_inputs,
    output_stems,
    predict_fields,
    read_fields,
    resolve_device,
)
from bloodseg.outputs import check_output_dir
from bloodseg.viz import cell_outlines, overlay, save_png

log = logging.getLogger("bloodseg.predict")


# ---- config ------------------------------------------------------------------------------------
@dataclass
class PredictSettings:
    mode: PredictMode = PredictMode.auto
    scale: float = 1.0
    overlap: float = 0.25
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS
    batch_size: int = 8
    device: str = "auto"
    alpha: float = 0.45
    outlines: bool = True
    pixel_size_um: float | None = None
    min_cell_area: int = 80
    min_distance: int = 8
    smoothing: float = 1.0
    max_hole_area: int = 300


@dataclass
class PredictConfig:
    ckpt_path: str | None = None
    input: str | None = None
    output_dir: str | None = None
    predict: PredictSettings = field(default_factory=PredictSettings)


def register_configs() -> None:
    """Store the predict schema in Hydra's ConfigStore (conf/predict.yaml extends it)."""
    ConfigStore.instance().store(name="predict_schema", node=PredictConfig)


register_configs()


# ---- outputs -----------------------------------------------------------------------------------
def separation(image: np.ndarray, labels: np.ndarray, class_id: int) -> np.ndarray:
    """The image with only the pixels of class_id kept and every other pixel white."""
    return np.where((labels == class_id)[..., None], image, np.uint8(255))


def instance_png(instances: np.ndarray, path: Path) -> None:
    """Write cell ids as a 16-bit greyscale PNG (0 = no cell)."""
    top = int(instances.max(initial=0))
    if top > 65535:
        raise BloodsegError(
            f"{path.name}: {top} cells do not fit a 16-bit PNG; fix: predict smaller crops of the image"
        )
    Image.fromarray(instances.astype(np.uint16)).save(path)


def write_outputs(
    out_dir: Path,
    stem: str,
    image: np.ndarray,
    labels: np.ndarray,
    cells: tuple[np.ndarray, list[dict]],
    meta: dict,
    settings,
) -> None:
    """Per image: labels (palette PNG), overlay, one picture per non-background class, instances, outlines."""
    colors = meta["class_colors"]
    palette_label(labels, colors).save(out_dir / f"{stem}_labels.png")
    save_png(overlay(image, labels, colors, settings.alpha), out_dir / f"{stem}_overlay.png")
    for class_id, name in enumerate(meta["class_names"]):
        if class_id > 0:
            save_png(separation(image, labels, class_id), out_dir / f"{stem}_{name}.png")
    instances, rows = cells
    instance_png(instances, out_dir / f"{stem}_instances.png")
    if settings.outlines:
        by_name = dict(zip(meta["class_names"], colors, strict=True))
        save_png(cell_outlines(image, instances, rows, by_name), out_dir / f"{stem}_outlines.png")


def check_settings(s: DictConfig) -> None:
    """Fail clearly on settings outside their range."""
    if not s.scale > 0:
        raise BloodsegError(f"predict.scale={s.scale} must be > 0 (1.0 = predict at the input's resolution)")
    if not 0 <= s.overlap < 1:
        raise BloodsegError(f"predict.overlap={s.overlap} must be in [0, 1) (a fraction of the tile size)")
    if s.batch_size < 1:
        raise BloodsegError(f"predict.batch_size={s.batch_size} must be at least 1")
    if not 0 <= s.alpha <= 1:
        raise BloodsegError(f"predict.alpha={s.alpha} must be in [0, 1]")
    if s.pixel_size_um is not None and not s.pixel_size_um > 0:
        raise BloodsegError(
            f"predict.pixel_size_um={s.pixel_size_um} must be > 0 (microns per input pixel) or null"
        )
    if s.max_whole_pixels < 1:
        raise BloodsegError(f"predict.max_whole_pixels={s.max_whole_pixels} must be at least 1")


def predict(cfg: DictConfig, hydra_dir: Path) -> dict:
    """Segment, separate and count every image of cfg.input; returns the run summary."""
    check_config(cfg)
    if not cfg.ckpt_path or not cfg.input:
        raise BloodsegError("give ckpt_path=CKPT and input=FILE_OR_DIR (and optionally output_dir=DIR)")
    settings = cfg.predict
    check_settings(settings)
    require(*COUNTING_NEEDS)
    files = list_inputs(cfg.input)
    out_dir = check_output_dir(cfg.output_dir or hydra_dir)  # before any work
    module = load_module(cfg.ckpt_path)
    device = resolve_device(settings.device)
    module.to(device)
    meta = module.meta
    tile = tuple(int(v) for v in meta["image_size"])
    if settings.mode == PredictMode.resize and settings.scale != 1.0:
        log.warning(
            "predict.scale=%s is ignored in resize mode (images go to the training size)", settings.scale
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    counting = CountSettings(
        settings.min_cell_area, settings.min_distance, settings.smoothing, settings.max_hole_area
    )
    stems = output_stems(files)
    by_stem = {stem: path for path, stem in stems.items()}
    skipped: list[dict] = []
    results: list[dict] = []
    log.info(
        "%d image(s) from %s on %s; training size %dx%d (HxW); outputs in %s",
        len(files),
        cfg.input,
        device,
        *tile,
        out_dir,
    )
    plan = FieldPlan(settings.mode, tile, settings.scale, settings.overlap, settings.max_whole_pixels)
    with (
        open(out_dir / "counts.csv", "w", newline="") as handle,
        open(out_dir / "cells.csv", "w", newline="") as cell_handle,
        tqdm(total=len(files), desc="predict", unit="image", file=sys.stderr) as progress,
    ):
        writer = csv.DictWriter(handle, fieldnames=count_columns(meta["class_names"]))
        writer.writeheader()
        microns = settings.pixel_size_um
        cell_writer = csv.DictWriter(
            cell_handle, fieldnames=CELL_COLUMNS + (MICRON_COLUMNS if microns else [])
        )
        cell_writer.writeheader()
        fields = read_fields(files, stems, plan, skipped, lambda: progress.update(1))
        for done in predict_fields(module, fields, tile, settings.batch_size, device):
            labels = done.labels()
            cells = label_cells(labels, list(meta["class_names"]), counting)
            write_outputs(out_dir, done.name, done.image, labels, cells, meta, settings)
            counts = class_counts(labels, list(meta["class_names"]), cells[1])
            path = by_stem[done.name]
            writer.writerow(count_row(path.name, counts))
            rows = in_microns(cells[1], microns) if microns else cells[1]
            cell_writer.writerows({"image": path.name, **row} for row in rows)
            handle.flush()
            cell_handle.flush()
            results.append(
                {"image": path.name, "mode": done.mode, "tiles": len(done.boxes), "counts": counts}
            )
            progress.update(1)
    summary = {
        "checkpoint": str(cfg.ckpt_path),
        "input": str(cfg.input),
        "output_dir": str(out_dir),
        "class_names": list(meta["class_names"]),
        "predicted": len(results),
        "skipped": skipped,
        "images": results,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not results:
        raise BloodsegError(
            f"none of the {len(files)} file(s) in input={cfg.input} could be read; see the warnings above"
        )
    return summary


def summary_line(summary: dict) -> str:
    """One line for stdout: images done and skipped, cells counted per class, where the outputs are."""
    totals = {}
    for row in summary["images"]:
        for name, value in row["counts"].items():
            totals[name] = totals.get(name, 0) + value["count"]
    cells = ", ".join(f"{n} {name}" for name, n in totals.items())
    return (
        f"predicted {summary['predicted']} image(s), skipped {len(summary['skipped'])} unreadable; "
        f"cells counted: {cells}; outputs and counts.csv in {summary['output_dir']}"
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    with exit_2_on_user_error(log):
        summary = predict(cfg, Path(HydraConfig.get().runtime.output_dir))
    print(summary_line(summary), flush=True)


if __name__ == "__main__":
    main()
