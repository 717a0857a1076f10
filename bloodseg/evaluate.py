"""``python -m bloodseg.evaluate``: score a checkpoint on its run's split, or folders of index PNGs.

    python -m bloodseg.evaluate ckpt_path=RUN/checkpoints/last.ckpt [data=NAME] [split=test]
    python -m bloodseg.evaluate pred_dir=P gt_dir=G data=NAME [image_dir=I]

Both write metrics.json, metrics.md, confusion_matrix.csv/.png, per_image_metrics.csv and overlays
of the best and worst images, with the same metric code as training (MATLAB semantics), into
output_dir; by default a checkpoint's evaluation goes to a new folder
<run dir>/eval/<split>-<H>x<W>-<time>/, so the training run's own results are never replaced.
A folder already holding metrics.json is refused unless overwrite=true.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from bloodseg.builders import build_trainer, check_checkpoint_classes, load_module
from bloodseg.callbacks import EvaluationArtifacts
from bloodseg.config import CONF_DIR, IGNORE_INDEX, check_config
from bloodseg.data.datamodule import BloodSmearDataModule
from bloodseg.data.imageio import IMAGE_SUFFIXES, read_label, read_rgb
from bloodseg.data.labels import ClassTable, encode_label
from bloodseg.data.loading import describe_stray
from bloodseg.data.sources import pair_by_stem
from bloodseg.errors import BloodsegError, exit_2_on_user_error
from bloodseg.metrics.report import paper_tables, write_evaluation
from bloodseg.metrics.suite import SegmentationMetrics
from bloodseg.outputs import check_output_dir, refuse_overwrite

log = logging.getLogger("bloodseg.evaluate")


FOLDER_MODE_OUTPUT = (
    "outputs/evaluate/%Y-%m-%d_%H-%M-%S"  # pred_dir mode without output_dir (created on success)
)


def default_output_dir(ckpt_path: Path, split: str, image_size) -> Path:
    """A new folder per evaluation, <run dir>/eval/<split>-<H>x<W>-<YYYYmmdd-HHMMSS>, beside the run's own
    results (never over them); the run dir of …/checkpoints/x.ckpt is …, of any other file its folder."""
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    height, width = image_size
    return run_dir / "eval" / f"{split}-{height}x{width}-{datetime.now():%Y%m%d-%H%M%S}"


def evaluate_checkpoint(cfg: DictConfig, output_dir: Path | None = None) -> dict:
    """Evaluate cfg.ckpt_path on cfg.split of its run (or of cfg.data) and write the artifacts."""
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    if output_dir or cfg.output_dir:  # checked before any work
        output_dir = check_output_dir(output_dir or cfg.output_dir)
        if not cfg.overwrite:
            refuse_overwrite(output_dir / "metrics.json")
    module = load_module(ckpt_path, cfg.evaluation.bf_tolerance, cfg.evaluation.semantics)
    meta = module.meta
    module.network_size = list(cfg.network_size or meta["image_size"])
    module.tta = str(cfg.evaluation.tta)
    data_cfg = cfg.data if cfg.data is not None else OmegaConf.create(meta["config"]["data"])
    data_cfg = OmegaConf.merge(
        data_cfg,
        {
            "eval_batch_size": cfg.batch_size,
            "image_size": list(cfg.data.image_size) if cfg.data else meta["image_size"],
        },
    )
    datamodule = BloodSmearDataModule(
        data_cfg, seed=meta["config"]["seed"], split=meta["split"], eval_split=cfg.split
    )
    check_checkpoint_classes(meta, list(datamodule.table.names), ckpt_path)
    out_dir = output_dir or check_output_dir(default_output_dir(ckpt_path, cfg.split, data_cfg.image_size))
    if not cfg.overwrite:  # two evaluations within the same second
        refuse_overwrite(out_dir / "metrics.json")
    artifacts = EvaluationArtifacts(
        out_dir,
        f"{cfg.split} split",
        cfg.evaluation.num_overlays,
        checkpoint=str(ckpt_path),
        test_time_augmentation=str(cfg.evaluation.tta),
    )
    run_cfg = OmegaConf.create(
        {"trainer": OmegaConf.to_container(cfg.trainer), "callbacks": {"progress_bar": "tqdm"}}
    )
    trainer = build_trainer(run_cfg, out_dir, loggers=[], callbacks=[artifacts], logger=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    log.info("evaluation of %s written to %s", ckpt_path, out_dir)
    return artifacts.metrics


def _index_png(path: Path, what: str, table: ClassTable) -> tuple[np.ndarray, dict | None]:
    """Class ids of an index PNG, or of a colour/palette PNG decoded by the class colours (as training
    does), with the latter's colours of no class ({"pixels", "values"}; None when there are none).

    Colours of no class are an error in a prediction and ignore (255) in ground truth.
    """
    raw, alpha = read_label(path)
    if raw.ndim == 2:
        return raw, None
    encoded = None
    if all(c is not None for c in table.colors):
        encoded = encode_label(raw, table, str(path), alpha)
    if encoded is None or (what == "prediction" and encoded.stray_pixels):
        found = f" with colours of no class (e.g. {encoded.stray_examples[:3]})" if encoded else ""
        raise BloodsegError(
            f"{what} {path} is a colour image{found}; fix: save class ids as a single-channel (index) "
            "PNG, or colour it with the colours of data.classes"
        )
    stray = {"pixels": encoded.stray_pixels, "values": encoded.stray_examples}
    return encoded.ids, stray if encoded.stray_pixels else None


def decode_truth(raw: np.ndarray, alpha, table: ClassTable, path: Path) -> tuple[np.ndarray, dict | None]:
    """Ground-truth class ids of a raw label array, and its stray pixels ({"pixels", "values"} or None).

    Labels are decoded with data.classes exactly as training reads them (values for single-channel
    labels, colours for RGB ones). A single-channel label for a table whose classes have no grey
    values (e.g. allidb1's colours) can only hold class ids: it is read as such, 255 = ignore.
    """
    if raw.ndim == 2 and any(v is None for v in table.values):
        k = table.num_classes
        outside = (raw >= k) & (raw != IGNORE_INDEX)
        stray = None
        if outside.any():
            stray = {
                "pixels": int(outside.sum()),
                "values": sorted(int(v) for v in np.unique(raw[outside]))[:8],
            }
        return np.where(outside, IGNORE_INDEX, raw).astype(np.uint8), stray
    encoded = encode_label(raw, table, str(path), alpha)
    stray = (
        {"pixels": encoded.stray_pixels, "values": encoded.stray_examples} if encoded.stray_pixels else None
    )
    return encoded.ids, stray


def evaluate_folders(cfg: DictConfig, output_dir: Path) -> dict:
    """Score predicted index PNGs (class ids) in cfg.pred_dir against ground truth in cfg.gt_dir (same stems).

    Ground truth is decoded with data.classes (each class's value or colour) exactly as training reads
    labels, so e.g. CellaVision's 0/128/255 masks count as background/cytoplasm/nucleus (see decode_truth).
    """
    if cfg.data is None:
        raise BloodsegError(
            "pred_dir mode needs the class table: add data=NAME (e.g. data=synthetic or data=allidb1)"
        )
    if not cfg.gt_dir:
        raise BloodsegError("pred_dir needs gt_dir=FOLDER of ground-truth label images with the same stems")
    table = ClassTable.from_config(cfg.data.classes)
    k = table.num_classes
    pred_dir, gt_dir = Path(cfg.pred_dir).expanduser(), Path(cfg.gt_dir).expanduser()
    for key, folder in (("pred_dir", pred_dir), ("gt_dir", gt_dir)):
        if not folder.is_dir():
            raise BloodsegError(f"{key}={folder} is not a folder")
    listing = lambda d: [p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]  # noqa: E731
    pairs = pair_by_stem(
        listing(pred_dir), listing(gt_dir), pred_dir, gt_dir, allow_unpaired=bool(cfg.data.allow_unpaired)
    )
    images = {}
    if cfg.image_dir:
        images = {p.stem: p for p in listing(Path(cfg.image_dir).expanduser())}
    metrics = SegmentationMetrics(k, cfg.evaluation.bf_tolerance, cfg.evaluation.semantics)
    stray, kept = {}, []
    for row, pair in enumerate(pairs):
        pred, _ = _index_png(pair.image, "prediction", table)
        raw, alpha = read_label(pair.label)  # decoded with data.classes exactly as training reads labels
        if pred.shape != raw.shape[:2]:
            raise BloodsegError(
                f"prediction {pair.image} is {pred.shape[1]}x{pred.shape[0]} but ground truth "
                f"{pair.label} is {raw.shape[1]}x{raw.shape[0]}; they must be the same size"
            )
        if pred.max(initial=0) >= k:
            bad = sorted(int(v) for v in np.unique(pred[pred >= k]))[:8]
            raise BloodsegError(
                f"prediction {pair.image} holds class ids {bad} but data.classes has {k} classes "
                f"(ids 0..{k - 1}); fix: use the data config the predictions were made with"
            )
        truth, stray_values = decode_truth(raw, alpha, table, pair.label)
        if stray_values:
            stray[pair.label.name] = stray_values
        pred_t, truth_t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(truth.astype(np.int64))
        metrics.update(pred_t[None], truth_t[None], torch.tensor([row]))
        kept.append((pair.id, pred, truth))
    warning = describe_stray(stray)
    if warning:
        log.warning("ground truth: %s", warning)
    results = {k_: v for k_, v in metrics.compute().items()}

    def render(row: int):
        stem, pred, truth = kept[row]
        image = read_rgb(images[stem])[0] if stem in images else None
        if image is not None and image.shape[:2] != pred.shape:
            image = None
        return image, truth.astype(np.uint8), pred.astype(np.uint8)

    return write_evaluation(
        output_dir,
        results,
        list(table.names),
        table.overlay_colors(),
        [p.id for p in pairs],
        f"{pred_dir.name} vs {gt_dir.name}",
        {
            "pred_dir": str(pred_dir),
            "gt_dir": str(gt_dir),
            "stray_ground_truth_pixels": sum(v["pixels"] for v in stray.values()),
        },
        render,
        cfg.evaluation.num_overlays,
        cfg.evaluation.semantics,
    )


def evaluate(cfg: DictConfig, hydra_dir: Path) -> dict:
    """Dispatch on the mode: a checkpoint, or folders of predictions."""
    check_config(cfg)
    if cfg.ckpt_path and cfg.pred_dir:
        raise BloodsegError("give either ckpt_path=... or pred_dir=... gt_dir=..., not both")
    if cfg.ckpt_path:
        return evaluate_checkpoint(cfg)
    if cfg.pred_dir:
        output_dir = check_output_dir(cfg.output_dir or hydra_dir)
        if not cfg.overwrite:
            refuse_overwrite(output_dir / "metrics.json")
        return evaluate_folders(cfg, output_dir)
    raise BloodsegError("nothing to evaluate: give ckpt_path=CKPT, or pred_dir=P gt_dir=G data=NAME")


def data_override_without_data(argv: list[str]) -> str | None:
    """The first ``data.KEY=...`` argument when no ``data=NAME`` is given, else None.

    Without data=NAME evaluate reads the checkpoint's own data config, which does not exist yet
    when Hydra applies overrides, so Hydra would fail on such a key with an assertion traceback.
    """
    pairs = [(arg, arg.split("=", 1)[0].lstrip("+~")) for arg in argv if "=" in arg]
    if any(key == "data" for _, key in pairs):
        return None
    return next((arg for arg, key in pairs if key.startswith("data.")), None)


def main() -> float | None:
    """Command-line entry point: rejects data.KEY overrides without data=NAME in one line, then runs."""
    stray = data_override_without_data(sys.argv[1:])
    if stray:
        print(
            f"bloodseg.evaluate: error: {stray} needs data=NAME too (without it the checkpoint's own data "
            "config is used, unchanged); fix: add the data config the checkpoint was trained with, "
            "e.g. data=synthetic or data=cellavision",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return run()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def run(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the mean IoU."""
    with exit_2_on_user_error(log):
        metrics = evaluate(cfg, Path(time.strftime(FOLDER_MODE_OUTPUT)))
    print(paper_tables(metrics, f"{cfg.split} split" if cfg.ckpt_path else "predictions"), flush=True)
    return metrics["dataset"]["mean_iou"] if metrics else None


if __name__ == "__main__":
    main()
