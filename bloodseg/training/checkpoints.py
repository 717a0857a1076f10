"""Reading checkpoints back: verified (weights digest, classes, model), loaded as a module, chosen for resuming.

A checkpoint stores its model's ``_target_`` (e.g. ``bloodseg.models.segnet.SegNet``), so the
models package keeps its import paths: checkpoints written by any earlier version load.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bloodseg.config import SegNetConfig
from bloodseg.errors import BloodsegError
from bloodseg.metrics.instances import InstanceSettings
from bloodseg.models.registry import build_model
from bloodseg.training.integrity import verify_weights
from bloodseg.training.module import CHECKPOINT_KEY, SegmentationModule

log = logging.getLogger("bloodseg.train")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A bloodseg checkpoint as a dict, with a clear error if the file is missing or not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BloodsegError(
            f"ckpt_path={path} does not exist; fix: point it at a run's checkpoints/last.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise BloodsegError(
            f"checkpoint {path} cannot be read ({reason}); it is truncated or damaged; "
            "fix: use an intact copy (or another checkpoint of the run)"
        ) from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise BloodsegError(f"ckpt_path={path} is not a bloodseg checkpoint (no '{CHECKPOINT_KEY}' entry)")
    verify_weights(checkpoint, path)
    return checkpoint


def without_pretrained_weights(model_cfg: DictConfig) -> DictConfig:
    """A copy of a model config that never looks for ImageNet weights (random initialisation).

    For networks whose weights come from elsewhere (a checkpoint) or do not matter (throughput).
    """
    model_cfg = model_cfg.copy()
    for key, off in (("pretrained", False), ("encoder_weights", None)):
        if key in model_cfg:
            model_cfg[key] = off
    return model_cfg


def load_module(
    path: str | Path,
    bf_tolerance: float = 0.0075,
    semantics: str = "matlab_current",
    instances: InstanceSettings | None = None,
) -> SegmentationModule:
    """Rebuild the trained module of a checkpoint from the checkpoint alone (no download, no run dir),
    scoring with the BF tolerance, metric rule set (``evaluation.semantics``) and instance-metric
    settings (None: no instance metrics) given."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint[CHECKPOINT_KEY]
    model_cfg = without_pretrained_weights(
        OmegaConf.create(meta["config"]["model"])
    )  # weights: the checkpoint's
    if model_cfg.get("_target_") == SegNetConfig._target_ and "pool_tie_tolerance" not in model_cfg:
        model_cfg.pool_tie_tolerance = 0.0  # trained before the tie-robust pooling existed: classic argmax
    net = build_model(model_cfg, len(meta["class_names"]))
    module = SegmentationModule(
        net,
        torch.tensor(meta["class_weights"]),
        meta,
        bf_tolerance=bf_tolerance,
        metric_semantics=semantics,
        instances=instances,
    )
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def check_checkpoint_model(
    checkpoint: dict[str, Any], module: torch.nn.Module, model_name: str, path
) -> None:
    """Fail clearly when a checkpoint's weights do not fit the configured model (family or shapes)."""
    trained = checkpoint[CHECKPOINT_KEY]["config"]["model"].get("name", "?")
    have, want = checkpoint["state_dict"], module.state_dict()
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shapes = [k for k in sorted(set(want) & set(have)) if tuple(want[k].shape) != tuple(have[k].shape)]
    if not (missing or extra or shapes):
        return
    if shapes:
        k = shapes[0]
        detail = f"{k} is {tuple(have[k].shape)} there but {tuple(want[k].shape)} here"
    else:
        detail = f"parameter {(missing or extra)[0]} is {'missing there' if missing else 'unknown here'}"
    raise BloodsegError(
        f"checkpoint {path} holds a {trained} model that does not fit model={model_name} ({detail}); "
        f"fix: use the model config it was trained with (model={trained}), or a new run directory"
    )


def check_checkpoint_classes(meta: dict[str, Any], class_names: list[str], path) -> None:
    """Fail clearly when a checkpoint was trained for other classes than the data config's."""
    if list(meta["class_names"]) != list(class_names):
        raise BloodsegError(
            f"checkpoint {path} was trained for {len(meta['class_names'])} classes {meta['class_names']} but "
            f"data.classes has {len(class_names)}: {list(class_names)}; fix: use the data config it was trained with"
        )


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint to continue from: ckpt_path, else (auto_resume) the run dir's own last.ckpt."""
    if cfg.ckpt_path:
        return str(cfg.ckpt_path)
    own = run_dir / "checkpoints" / "last.ckpt"
    if not (cfg.auto_resume and own.is_file()):
        return None
    log.info("resuming from this run directory's own checkpoint %s", own)
    return str(own)


def read_resume_checkpoint(ckpt_path: str, own: bool) -> dict[str, Any]:
    """The checkpoint to resume from, verified; a damaged one of the run itself says how to start over."""
    try:
        return read_checkpoint(ckpt_path)
    except BloodsegError as error:
        if not own:
            raise
        raise BloodsegError(
            f"{error}; or, to start this run over, move {ckpt_path} aside (auto_resume would continue from it)"
        ) from None
