"""Predicting folders of smears (the predict command): segment whole smears, separate and count cells, one row per cell.

    python -m bloodseg.predict ckpt_path=CKPT input=FILE_OR_DIR output_dir=DIR [predict.mode=auto|whole|tile|resize]

Per image it writes ``<stem>_labels.png`` (class ids as a palette PNG in the class colours),
``<stem>_overlay.png``, ``<stem>_<class>.png`` per non-background class (only that class's
pixels, the rest white), ``<stem>_instances.png`` (16-bit, one id per cell) and
``<stem>_outlines.png`` (cell outlines and ids); for the run ``counts.csv`` (cells and pixel
area per class), ``cells.csv`` (one row per cell) and ``summary.json``.
How images go through the network (whole, tiled, resized) is bloodseg.inference.tiling's; fields
beyond ``predict.stream_pixels`` (or PIL's limit) are streamed tile by tile
(bloodseg.inference.streaming, bloodseg.inference.stream_sink). A file that cannot be read or predicted is
reported and passed over; the others are written, and the exit status is 1 naming it.
"""

from __future__ import annotations

import csv
import errno
import itertools
import logging
import sys
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from bloodseg.cli import check_output_dir, exit_2_on_user_error
from bloodseg.config import PredictMode, check_config
from bloodseg.data.fieldio import needs_streaming, open_field, probe_size
from bloodseg.data.imageio import read_rgb
from bloodseg.data.labels import palette_label
from bloodseg.errors import BloodsegError
from bloodseg.extras import require
from bloodseg.files import write_atomically, write_json_atomically
from bloodseg.inference.counting import (
    CELL_COLUMNS,
    MICRON_COLUMNS,
    class_counts,
    count_columns,
    count_row,
    in_microns,
    label_cells,
)
from bloodseg.inference.stream_sink import StreamedOutputs, separation
from bloodseg.inference.streaming import plan_stream, stream_field
from bloodseg.inference.tiling import (
    FieldPlan,
    list_inputs,
    output_stems,
    predict_fields,
    read_fields,
    resolve_device,
    training_window,
)
from bloodseg.metrics.cells import COUNTING_KEYS, COUNTING_NEEDS, CountSettings, resolve_count_settings
from bloodseg.termination import exit_status_of, stopped_by
from bloodseg.training.checkpoints import load_module
from bloodseg.viz.pictures import cell_outlines, overlay

log = logging.getLogger("bloodseg.predict")


# ---- outputs -----------------------------------------------------------------------------------
def instance_png(instances: np.ndarray, path: Path) -> None:
    """Write cell ids as a 16-bit greyscale PNG (0 = no cell)."""
    top = int(instances.max(initial=0))
    if top > 65535:
        raise BloodsegError(
            f"{path.name}: {top} cells do not fit a 16-bit PNG; fix: predict smaller crops of the image"
        )
    save_image(Image.fromarray(instances.astype(np.uint16)), path)


def save_image(image: Image.Image, path: Path) -> None:
    """Write ``image`` as PNG under a hidden name and rename it into place: no half-written picture."""
    write_atomically(path, lambda handle: image.save(handle, format="PNG"))


def output_files(out_dir: Path, stem: str, class_names: list[str]) -> list[Path]:
    """Every file predict may write for one image (labels, overlay, class pictures, instances, outlines)."""
    names = ["labels", "overlay", *class_names[1:], "instances", "outlines"]
    return [out_dir / f"{stem}_{name}.png" for name in names]


def write_outputs(
    out_dir: Path,
    stem: str,
    image: np.ndarray,
    labels: np.ndarray,
    cells: tuple[np.ndarray, list[dict]],
    meta: dict,
    settings,
) -> None:
    """Per image: labels (palette PNG), overlay, one picture per non-background class, instances, outlines.

    Each file is renamed into place once complete; when any of them fails, the image's others are
    removed again, so an image has all its outputs or none.
    """
    colors = meta["class_colors"]
    try:
        save_image(palette_label(labels, colors), out_dir / f"{stem}_labels.png")
        save_image(
            Image.fromarray(overlay(image, labels, colors, settings.alpha)), out_dir / f"{stem}_overlay.png"
        )
        for class_id, name in enumerate(meta["class_names"]):
            if class_id > 0:
                save_image(
                    Image.fromarray(separation(image, labels, class_id)), out_dir / f"{stem}_{name}.png"
                )
        instances, rows = cells
        instance_png(instances, out_dir / f"{stem}_instances.png")
        if settings.outlines:
            by_name = dict(zip(meta["class_names"], colors, strict=True))
            outlines = cell_outlines(image, instances, rows, by_name)
            save_image(Image.fromarray(outlines), out_dir / f"{stem}_outlines.png")
    except BaseException:
        for path in output_files(out_dir, stem, list(meta["class_names"])):
            path.unlink(missing_ok=True)
        raise


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
    if s.stream_pixels < 0 or s.max_picture_pixels < 1 or s.max_count_pixels < 0:
        raise BloodsegError(
            f"predict.stream_pixels={s.stream_pixels} and predict.max_count_pixels={s.max_count_pixels} "
            f"must be >= 0, predict.max_picture_pixels={s.max_picture_pixels} >= 1"
        )
    if s.stream_tile < 0 or s.stream_tile % 32:
        raise BloodsegError(
            f"predict.stream_tile={s.stream_tile} must be a multiple of 32 (0 = the training size)"
        )


def counting_settings(settings, meta: dict) -> CountSettings:
    """How cells are split: each predict.* counting key as given, else the value the checkpoint's run
    scored its cells with (evaluation.instances, tuned with the model), else the built-in default."""
    instances = (meta.get("config", {}).get("evaluation") or {}).get("instances") or {}
    return resolve_count_settings(lambda key: getattr(settings, key, None), instances)


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
    module.tta = str(settings.tta)
    device = resolve_device(settings.device)
    module.to(device)
    meta = module.meta
    tile = tuple(int(v) for v in meta["image_size"])
    if settings.mode == PredictMode.resize and settings.scale != 1.0:
        log.warning(
            "predict.scale=%s is ignored in resize mode (images go to the training size)", settings.scale
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    counting = counting_settings(settings, meta)
    log.info(
        "counting: min_cell_area=%d, min_distance=%d, smoothing=%s, max_hole_area=%d",
        counting.min_area,
        counting.min_distance,
        counting.smoothing,
        counting.max_hole_area,
    )
    stems = output_stems(files)
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
    run = PredictRun(out_dir, meta, settings, counting, skipped, results)
    describe = {
        "checkpoint": str(cfg.ckpt_path),
        "input": str(cfg.input),
        "output_dir": str(out_dir),
        "class_names": list(meta["class_names"]),
        "counting": {key: getattr(counting, field) for key, field in COUNTING_KEYS.items()},
    }
    try:
        predict_all(run, module, files, stems, plan, device)
    except BaseException as error:
        stop = run.stopped(error, describe, files)
        if stop is error:  # a bug: its traceback is the report
            raise
        raise stop from None
    order = {str(path): i for i, path in enumerate(files)}
    skipped.sort(key=lambda row: order.get(row["file"], 0))  # in input order, however they failed
    summary = run.summary(describe, files, "complete")
    write_json_atomically(out_dir / "summary.json", summary)
    if not results:
        raise BloodsegError(
            f"none of the {len(files)} file(s) in input={cfg.input} could be read or predicted; "
            "see the messages above"
        )
    return summary


def predict_all(run: PredictRun, module, files: list[Path], stems: dict, plan: FieldPlan, device) -> None:
    """Predict every file into the run's outputs, streamed fields tile by tile, the others in batches."""
    by_stem = {stem: path for path, stem in stems.items()}
    settings, skipped = run.settings, run.skipped
    streamed = {}
    for path in files:  # which fields are streamed: from the header alone
        try:
            streamed[path] = needs_streaming(probe_size(path), settings.stream_pixels)
        except BloodsegError as error:
            run.skip(path, error)
    with (
        open(run.out_dir / "counts.csv", "w", newline="") as handle,
        open(run.out_dir / "cells.csv", "w", newline="") as cell_handle,
        tqdm(total=len(files), desc="predict", unit="image", file=sys.stderr) as progress,
    ):
        run.open_tables(handle, cell_handle)
        run.progress = progress
        progress.update(len(skipped))
        readable = [path for path in files if path in streamed]
        for is_streamed, group in itertools.groupby(readable, key=streamed.get):
            group = list(group)
            if is_streamed:
                for path in group:
                    run.guarded(path, lambda p=path: run.stream(module, p, stems[p], device))
                continue
            fields = read_fields(group, stems, plan, skipped, lambda: progress.update(1))
            finished: set[Path] = set()
            try:
                for done in predict_fields(module, fields, run.window, settings.batch_size, device):
                    path = by_stem[done.name]
                    finished.add(path)
                    run.guarded(path, lambda d=done, p=path: run.finish_whole(d, p))
            except Exception as error:  # noqa: BLE001 - the network failed on a batch that may mix images
                if isinstance(error, OutputsNotWritable):
                    raise
                passed_over = {row["file"] for row in skipped}
                left = [p for p in group if p not in finished and str(p) not in passed_over]
                log.warning(
                    "the network failed on a batch (%s: %s); predicting the %d image(s) left one at a time",
                    type(error).__name__,
                    str(error).splitlines()[0][:200] if str(error) else "",
                    len(left),
                )
                for path in left:
                    run.guarded(path, lambda p=path: run.predict_alone(module, p, stems[p], plan, device))


class OutputsNotWritable(Exception):
    """Writing an image's outputs failed for lack of space or permission: every further image would fail
    the same way, so the run stops (with the image it was writing and the OS error)."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(f"{path.name}: {error.strerror or error}")
        self.path, self.error = path, error


STOPPING_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # a full disk, a quota, a read-only mount


class PredictRun:
    """The state of one predict run: output tables, the progress bar, what was done and what failed."""

    def __init__(self, out_dir: Path, meta: dict, settings, counting: CountSettings, skipped, results):
        self.out_dir, self.meta, self.settings, self.counting = out_dir, meta, settings, counting
        self.skipped, self.results = skipped, results
        self.predicted_files: set[str] = set()
        self.window = training_window(meta)  # batches hold batch_size of these in pixels
        self.progress = None

    def summary(self, describe: dict, files: list[Path], status: str, **why) -> dict:
        """summary.json's record: the run's settings, ``status`` (complete, interrupted, failed) with
        ``why`` (stopped_by, error), the images predicted, those skipped and those not reached."""
        done = {row["file"] for row in self.skipped} | self.predicted_files
        not_reached = [str(path) for path in files if str(path) not in done]
        return {
            **describe,
            "status": status,
            **why,
            "predicted": len(self.results),
            "skipped": self.skipped,
            "not_predicted": not_reached,
            "images": self.results,
        }

    def stopped(self, error: BaseException, describe: dict, files: list[Path]) -> BaseException:
        """After the run stopped on ``error`` before every file was done: write a summary.json that says
        so (or remove an older one when even that cannot be written) and return the one-line error to
        end the process with (the original error when it is a bug)."""
        interrupted = stopped_by(error)
        status = "interrupted" if interrupted else "failed"
        why = {"stopped_by": interrupted} if interrupted else {"error": f"{type(error).__name__}: {error}"}
        record = self.summary(describe, files, status, **why)
        summary = self.out_dir / "summary.json"
        try:
            write_json_atomically(summary, record)
            where = f"{summary} lists them (status: {status})"
        except OSError:
            summary.unlink(missing_ok=True)  # no summary rather than a stale or wrong one
            where = "summary.json could not be written either, and none is left"
        done = f"{record['predicted']} of {len(files)} image(s) have complete outputs and counts.csv rows"
        left = f"{len(record['not_predicted'])} were not predicted"
        if interrupted:
            stop = BloodsegError(
                f"interrupted ({interrupted}): {done}; {left}; {where}; re-run to predict them"
            )
            stop.exit_code = exit_status_of(error)
            return stop
        if isinstance(error, OutputsNotWritable):
            cause = error.error
            stop = BloodsegError(
                f"output_dir={self.out_dir}: writing the outputs of {error} (errno {cause.errno}); {done}; "
                f"{left}; {where}; fix: free space there (df -h {self.out_dir}) or give output_dir= on "
                "another disk, then re-run"
            )
            stop.exit_code = 1
            return stop
        return error

    def open_tables(self, handle, cell_handle) -> None:
        """Start counts.csv and cells.csv (header rows)."""
        self.handle, self.cell_handle = handle, cell_handle
        self.writer = csv.DictWriter(handle, fieldnames=count_columns(self.meta["class_names"]))
        self.writer.writeheader()
        microns = self.settings.pixel_size_um
        self.cell_writer = csv.DictWriter(
            cell_handle, fieldnames=CELL_COLUMNS + (MICRON_COLUMNS if microns else [])
        )
        self.cell_writer.writeheader()

    def skip(self, path: Path, error: Exception) -> None:
        """Report a file passed over (unreadable, or its prediction failed) and go on."""
        reason = (
            str(error) if isinstance(error, BloodsegError) else f"{path}: {type(error).__name__}: {error}"
        )
        log.warning("skipped %s", reason)
        self.skipped.append({"file": str(path), "reason": reason})

    def guarded(self, path: Path, work) -> None:
        """Run one file's work; a failure is reported and the run goes on with the next file."""
        try:
            work()
        except OSError as error:
            if error.errno in STOPPING_ERRNOS:  # the output folder, not this image: stop at the first
                raise OutputsNotWritable(path, error) from error
            log.debug("%s failed", path, exc_info=True)
            self.skip(path, error)
        except Exception as error:  # one bad image never aborts the folder
            log.debug("%s failed", path, exc_info=True)
            self.skip(path, error)
        if self.progress is not None:
            self.progress.update(1)

    def record(self, path: Path, counts: dict, cells: list[dict], entry: dict) -> None:
        """One image's rows in counts.csv and cells.csv and its entry in summary.json."""
        microns = self.settings.pixel_size_um
        self.writer.writerow(count_row(path.name, counts))
        rows = in_microns(cells, microns) if microns else cells
        self.cell_writer.writerows({"image": path.name, **row} for row in rows)
        self.handle.flush()
        self.cell_handle.flush()
        self.results.append({"image": path.name, **entry, "counts": counts})
        self.predicted_files.add(str(path))

    def finish_whole(self, done, path: Path) -> None:
        """Post-process an image predicted in one piece (whole, tiled in memory or resized)."""
        names = list(self.meta["class_names"])
        labels = done.labels()
        cells = label_cells(labels, names, self.counting)
        counts = class_counts(labels, names, cells[1])
        write_outputs(self.out_dir, done.name, done.image, labels, cells, self.meta, self.settings)
        try:
            self.record(path, counts, cells[1], {"mode": done.mode, "tiles": len(done.boxes)})
        except BaseException:  # not in the tables: then not in the folder either
            for output in output_files(self.out_dir, done.name, names):
                output.unlink(missing_ok=True)
            raise

    def predict_alone(self, module, path: Path, stem: str, plan: FieldPlan, device) -> None:
        """Read, predict and post-process one image in batches of its own (after a shared batch failed)."""
        image, _ = read_rgb(path)
        (done,) = predict_fields(
            module, [plan.field(stem, image)], self.window, self.settings.batch_size, device
        )
        self.finish_whole(done, path)

    def stream(self, module, path: Path, stem: str, device) -> None:
        """Predict and post-process one field tile by tile (bloodseg.inference.streaming)."""
        s = self.settings
        reader = open_field(path, s.stream_pixels)
        try:
            if reader.note:
                log.info("%s: %s", path.name, reader.note)
            tile = tuple(int(v) for v in self.meta["image_size"])
            mode = "resize" if s.mode == PredictMode.resize else "tile"
            if s.mode == PredictMode.whole:
                log.info("%s: predict.mode=whole, but the field is streamed: tiles instead", path.name)
            plan = plan_stream(reader.size, mode, tile, s.scale, s.overlap, s.stream_tile)
            sink = StreamedOutputs(self.out_dir, stem, reader, self.meta, s.alpha, s.max_picture_pixels)
            log.info(
                "%s: %dx%d field streamed: %d tile(s) of %dx%d%s; pictures %s; no instances/outlines images",
                path.name,
                *reader.size,
                plan.tiles,
                *plan.tile,
                f" at scale {s.scale}" if mode == "tile" and s.scale != 1 else "",
                "full size" if sink.step == 1 else f"every {sink.step}th pixel (predict.max_picture_pixels)",
            )
            try:
                with tqdm(total=plan.tiles, desc=stem, unit="tile", file=sys.stderr, leave=True) as bar:
                    timing = stream_field(
                        module,
                        reader,
                        plan,
                        device,
                        s.batch_size * self.window[0] * self.window[1],
                        sink,
                        bar.update,
                    )
                count = reader.size[0] * reader.size[1] <= s.max_count_pixels
                if not count:
                    log.warning(
                        "%s: cells not counted: %.0f Mpx is beyond predict.max_count_pixels (%.0f Mpx); "
                        "counts.csv has the pixel areas, cells.csv no rows for it",
                        path.name,
                        reader.size[0] * reader.size[1] / 1e6,
                        s.max_count_pixels / 1e6,
                    )
                counts, cells = sink.finish(self.counting if count else None)
            except BaseException:
                sink.discard()
                raise
            sink.store.remove()
        finally:
            reader.close()
        log.info(
            "%s: %d tiles in %.1f s (%.3f tiles/s)%s",
            path.name,
            timing["tiles"],
            timing["seconds"],
            timing["tiles_per_s"],
            f", {len(cells)} cells counted window by window" if count else "",
        )
        entry = {"mode": plan.mode, "tiles": plan.tiles, "streamed": True, "tile_size": list(plan.tile)}
        self.record(path, counts, cells, {**entry, **timing, "picture_step": sink.step})


def summary_line(summary: dict) -> str:
    """One line for stdout: images done and skipped, cells counted per class, where the outputs are."""
    totals = {}
    for row in summary["images"]:
        for name, value in row["counts"].items():
            totals[name] = totals.get(name, 0) + (value["count"] or 0)
    cells = ", ".join(f"{n} {name}" for name, n in totals.items())
    return (
        f"predicted {summary['predicted']} image(s), skipped {len(summary['skipped'])} (unreadable or failed); "
        f"cells counted: {cells}; outputs and counts.csv in {summary['output_dir']}"
    )


def run_predict(cfg: DictConfig) -> None:
    """One ``python -m bloodseg.predict`` run in Hydra's run dir: predict, print the summary line.

    A BloodsegError ends the process with one log line and exit status 2; files that could not be
    predicted (the others are written) end it with status 1, naming them.
    """
    with exit_2_on_user_error(log):
        summary = predict(cfg, Path(HydraConfig.get().runtime.output_dir))
    print(summary_line(summary), flush=True)
    if summary["skipped"]:  # the others are written; a script must still notice
        names = ", ".join(Path(row["file"]).name for row in summary["skipped"])
        log.error(
            "%d file(s) not predicted: %s (reasons above and in summary.json)", len(summary["skipped"]), names
        )
        raise SystemExit(1)
