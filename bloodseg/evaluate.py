"""``python -m bloodseg.evaluate``: score a checkpoint on its run's split, or folders of index PNGs.

    python -m bloodseg.evaluate ckpt_path=RUN/checkpoints/last.ckpt [data=NAME] [split=test]
    python -m bloodseg.evaluate pred_dir=P gt_dir=G data=NAME [image_dir=I]

Both write metrics.json, metrics.md, confusion_matrix.csv/.png, per_image_metrics.csv and overlays
of the best and worst images, with the same metric code as training (MATLAB semantics).
"""

from __future__ import annotations

import logging
import time
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
from bloodseg.errors import BloodsegError
from bloodseg.metrics.report import paper_tables, write_evaluation
from bloodseg.metrics.suite import SegmentationMetrics

log = logging.getLogger("bloodseg.evaluate")


FOLDER_MODE_OUTPUT = (
    "outputs/evaluate/%Y-%m-%d_%H-%M-%S"  # pred_dir mode without output_dir (created on success)
)


def default_output_dir(ckpt_path: Path, split: str) -> Path:
    """A checkpoint's run dir (…/checkpoints/x.ckpt -> …), or eval_<split> inside it for other splits."""
    run_dir = (
        ckpt_path.parent.parent
        if ckpt_path.parent.name == "checkpoints"
        else ckpt_path.parent / f"eval_{ckpt_path.stem}"
    )
    return run_dir if split == "test" else run_dir / f"eval_{split}"


def evaluate_checkpoint(cfg: DictConfig, output_dir: Path | None = None) -> dict:
    """Evaluate cfg.ckpt_path on cfg.split of its run (or of cfg.data) and write the artifacts."""
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    module = load_module(ckpt_path, cfg.evaluation.bf_tolerance, cfg.evaluation.semantics)
    meta = module.meta
    module.network_size = list(cfg.network_size or meta["image_size"])
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
    out_dir = Path(output_dir or cfg.output_dir or default_output_dir(ckpt_path, cfg.split))
    artifacts = EvaluationArtifacts(
        out_dir, f"{cfg.split} split", cfg.evaluation.num_overlays, checkpoint=str(ckpt_path)
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


def evaluate_folders(cfg: DictConfig, output_dir: Path) -> dict:
    """Score predicted index PNGs in cfg.pred_dir against ground truth in cfg.gt_dir (same stems)."""
    if cfg.data is None:
        raise BloodsegError(
            "pred_dir mode needs the class table: add data=NAME (e.g. data=synthetic or data=allidb1)"
        )
    if not cfg.gt_dir:
        raise BloodsegError("pred_dir needs gt_dir=FOLDER of ground-truth index PNGs with the same stems")
    table = ClassTable.from_config(cfg.data.classes)
    k = table.num_classes
    pred_dir, gt_dir = Path(cfg.pred_dir).expanduser(), Path(cfg.gt_dir).expanduser()
    for key, folder in (("pred_dir", pred_dir), ("gt_dir", gt_dir)):
        if not folder.is_dir():
            raise BloodsegError(f"{key}={folder} is not a folder")
    listing = lambda d: [p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]  # noqa: E731
    pairs = pair_by_stem(listing(pred_dir), listing(gt_dir), pred_dir, gt_dir, allow_unpaired=False)
    images = {}
    if cfg.image_dir:
        images = {p.stem: p for p in listing(Path(cfg.image_dir).expanduser())}
    metrics = SegmentationMetrics(k, cfg.evaluation.bf_tolerance, cfg.evaluation.semantics)
    stray, kept = {}, []
    for row, pair in enumerate(pairs):
        pred, _ = _index_png(pair.image, "prediction", table)
        truth, colour_stray = _index_png(pair.label, "ground truth", table)
        if colour_stray:
            stray[pair.label.name] = colour_stray
        if pred.shape != truth.shape:
            raise BloodsegError(
                f"prediction {pair.image} is {pred.shape[1]}x{pred.shape[0]} but ground truth "
                f"{pair.label} is {truth.shape[1]}x{truth.shape[0]}; they must be the same size"
            )
        if pred.max(initial=0) >= k:
            bad = sorted(int(v) for v in np.unique(pred[pred >= k]))[:8]
            raise BloodsegError(
                f"prediction {pair.image} holds class ids {bad} but data.classes has {k} classes "
                f"(ids 0..{k - 1}); fix: use the data config the predictions were made with"
            )
        outside = (truth >= k) & (truth != IGNORE_INDEX)
        if outside.any():
            stray[pair.label.name] = {
                "pixels": int(outside.sum()),
                "values": sorted(int(v) for v in np.unique(truth[outside]))[:8],
            }
        truth = np.where(outside, IGNORE_INDEX, truth)
        pred_t, truth_t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(truth.astype(np.int64))
        metrics.update(pred_t[None], truth_t[None], torch.tensor([row]))
        kept.append((pair.id, pred, truth))
    warning = describe_stray(stray)
    if warning:
        log.warning("ground truth: %s", warning.replace("data.classes", f"ids 0..{k - 1}"))
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
        return evaluate_folders(cfg, Path(cfg.output_dir or hydra_dir))
    raise BloodsegError("nothing to evaluate: give ckpt_path=CKPT, or pred_dir=P gt_dir=G data=NAME")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the mean IoU."""
    try:
        metrics = evaluate(cfg, Path(time.strftime(FOLDER_MODE_OUTPUT)))
    except BloodsegError as error:
        log.error("%s", error)
        raise SystemExit(2) from None
    print(paper_tables(metrics, f"{cfg.split} split" if cfg.ckpt_path else "predictions"), flush=True)
    return metrics["dataset"]["mean_iou"] if metrics else None


if __name__ == "__main__":
    main()
