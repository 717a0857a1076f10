"""Scoring folders of predicted index PNGs against ground-truth label images (no model).

``python -m bloodseg.evaluate pred_dir=P gt_dir=G data=NAME``: files are paired by stem, the
ground truth is decoded with the data config's class table (stray values are counted and reported,
never silently dropped), and the same metric code as training scores them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from bloodseg.constants import IGNORE_INDEX
from bloodseg.data.imageio import IMAGE_SUFFIXES, read_label, read_rgb
from bloodseg.data.labels import ClassTable, encode_binary_masks, encode_label
from bloodseg.data.loading import describe_stray, stray_summary
from bloodseg.data.sources import pair_by_stem
from bloodseg.errors import BloodsegError
from bloodseg.evaluation.artifacts import write_evaluation
from bloodseg.metrics.instances import settings_from_config
from bloodseg.metrics.suite import SegmentationMetrics

log = logging.getLogger("bloodseg.evaluate")


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


def decode_truth(
    raw: np.ndarray, alpha, table: ClassTable, path: Path, binary: bool = False
) -> tuple[np.ndarray, dict | None]:
    """Ground-truth class ids of a raw label array, and its stray pixels ({"pixels", "values"} or None).

    binary: the labels are binary masks of class 1 (0/255, as data=smear_fields reads them); any
    other value fails naming the file.

    Labels are decoded with data.classes exactly as training reads them (values for single-channel
    labels, colours for RGB ones). A single-channel label for a table whose classes have no grey
    values (e.g. allidb1's colours) can only hold class ids: it is read as such, 255 = ignore.
    """
    if binary:
        return encode_binary_masks([raw], table, [str(path)]).ids, None
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
    source = str(getattr(cfg.data.source, "value", cfg.data.source))
    if source == "allidb1_masks":
        raise BloodsegError(
            "data=allidb1_masks keeps two mask files per field, but gt_dir= takes one label per image; fix: "
            "evaluate a checkpoint (ckpt_path=... data=allidb1_masks), or write merged index PNGs into gt_dir"
        )
    binary = source == "smear_fields"
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
    instances = settings_from_config(cfg.evaluation)
    metrics = SegmentationMetrics(k, cfg.evaluation.bf_tolerance, cfg.evaluation.semantics, instances)
    stray, kept, label_pixels = {}, [], 0
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
        truth, stray_values = decode_truth(raw, alpha, table, pair.label, binary)
        label_pixels += int(truth.size)
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
            "stray_labels": stray_summary(stray, label_pixels),
        },
        render,
        cfg.evaluation.num_overlays,
        cfg.evaluation.semantics,
        instance_settings=instances,
    )
