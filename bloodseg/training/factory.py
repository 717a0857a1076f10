"""Turning a composed config into the Lightning objects of a run: trainer, callbacks, loggers, module."""

from __future__ import annotations

import logging
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_method, instantiate
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichModelSummary,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from bloodseg.errors import BloodsegError
from bloodseg.metrics.instances import settings_from_config
from bloodseg.models.registry import build_model
from bloodseg.tracking.csv_log import ResumableCSVLogger
from bloodseg.training.checkpoint_io import AtomicCheckpointIO
from bloodseg.training.divergence import DivergenceGuard
from bloodseg.training.module import SegmentationModule

log = logging.getLogger(__name__)


def uses_cuda(trainer_cfg: DictConfig) -> bool:
    """Whether the trainer will run on CUDA devices."""
    return trainer_cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(trainer_cfg: DictConfig) -> str:
    """``auto`` precision: bf16-mixed on CUDA devices that support it, else 32-true."""
    if trainer_cfg.precision != "auto":
        return str(trainer_cfg.precision)
    if uses_cuda(trainer_cfg) and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def divergence_hint(cfg: DictConfig) -> str:
    """The likely causes of a diverged run of this config, with the overrides that fix them."""
    precision = resolve_precision(cfg.trainer)
    hint = f"Likely cause: the learning rate optimizer.lr={cfg.optimizer.lr} is too high"
    if precision.startswith("16") or precision.startswith("bf16"):
        hint += f", or {precision} precision overflowed"
    return hint + "; fix: lower optimizer.lr (e.g. 10x) or set trainer.precision=32-true"


def build_callbacks(cfg: DictConfig, run_dir: Path, with_loggers: bool) -> list[Callback]:
    """Divergence guard, checkpointing (checkpoints/last.ckpt), progress bar, model summary, lr monitor,
    early stopping."""
    c = cfg.callbacks
    callbacks: list[Callback] = [DivergenceGuard(divergence_hint(cfg))]
    if c.checkpoint.save_last:  # checkpoints/last.ckpt, rewritten every every_n_epochs (resume, preemption)
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_epochs=c.checkpoint.every_n_epochs,
                enable_version_counter=False,
                # at the end of every training epoch (after its validation, if any): Lightning's default
                # saves after validation only once check_val_every_n_epoch > 1, and never without a val split
                save_on_train_epoch_end=True,
            )
        )
    if c.checkpoint.save_top_k and c.checkpoint.monitor:  # plus the k best by the monitored value
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="best-epoch{epoch:03d}",
                auto_insert_metric_name=False,
                monitor=c.checkpoint.monitor,
                mode=c.checkpoint.mode,
                save_top_k=c.checkpoint.save_top_k,
                every_n_epochs=c.checkpoint.every_n_epochs,
            )
        )
    if c.progress_bar == "rich":
        callbacks += [
            progress_bar_on_stderr(),
            RichModelSummary(max_depth=2),
        ]
    elif c.progress_bar == "tqdm":
        callbacks.append(TQDMProgressBar())
    elif c.progress_bar != "none":
        raise BloodsegError(f"callbacks.progress_bar={c.progress_bar} is unknown; use rich, tqdm or none")
    if c.lr_monitor and with_loggers:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if c.early_stopping.monitor:  # stop when the monitored value has not improved for `patience` epochs
        e = c.early_stopping
        callbacks.append(EarlyStopping(monitor=e.monitor, mode=e.mode, patience=e.patience))
    if cfg.logger.wandb is not None and with_loggers:  # W&B media: overlays, confusion matrix, tables
        from bloodseg.training.wandb_media import WandbMedia

        w = cfg.logger.wandb
        callbacks.append(WandbMedia(every_n_epochs=w.log_images_every_n_epochs, num_images=w.num_images))
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path, resume_step: int | None = None) -> list[Logger]:
    """The CSV logger (run_dir/csv/metrics.csv; a resume at ``resume_step`` keeps the rows before it)
    and, when configured, W&B."""
    loggers: list[Logger] = []
    if cfg.logger.csv is not None:
        loggers.append(
            ResumableCSVLogger(
                save_dir=str(run_dir), name=cfg.logger.csv.name, version="", keep_before_step=resume_step
            )
        )
    if cfg.logger.wandb is not None:
        from bloodseg.tracking.wandb_run import build_wandb_logger

        wandb_logger = build_wandb_logger(cfg, run_dir)
        if wandb_logger is not None:
            loggers.append(wandb_logger)
    return loggers


class _DropLitLoggerTip(logging.Filter):
    """Drops Lightning's advertisement for its litlogger package, logged at the start of every fit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_lightning() -> None:
    """Silence two messages Lightning prints on every run that say nothing about the run.

    - the "Tip: ... try installing litlogger" advertisement (Lightning's rank-zero info logger);
    - torch's FutureWarning about ``LeafSpec``, raised by Lightning's own ``utilities/_pytree.py``
      (Lightning's code, not ours: only that warning, only from that module, is ignored).
    """
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
            logger.addFilter(_DropLitLoggerTip())
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


def progress_bar_on_stderr() -> RichProgressBar:
    """Lightning's rich progress bar, drawn on stderr with the logs: stdout carries only results
    (tables, JSON lines), as every command promises."""
    return RichProgressBar(leave=True, console_kwargs={"stderr": True})


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    loggers: list[Logger] | None = None,
    callbacks: list[Callback] | None = None,
    **overrides,
):
    """The Lightning Trainer of cfg.trainer (auto precision/benchmark resolved), with overrides applied."""
    quiet_lightning()
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    kwargs["precision"] = resolve_precision(cfg.trainer)
    if kwargs["benchmark"] is None:
        kwargs["benchmark"] = uses_cuda(cfg.trainer) and not kwargs["deterministic"]
    if kwargs["sync_batchnorm"] and not uses_cuda(cfg.trainer):
        log.warning("trainer.sync_batchnorm works on CUDA devices only; running without it on the CPU")
        kwargs["sync_batchnorm"] = False
    if kwargs["deterministic"] is True:
        # max_unpool2d has no kernel flagged deterministic, yet SegNet's 2x2/stride-2 windows never collide,
        # so its scatter is deterministic: warn-only mode keeps every other op strictly deterministic.
        kwargs["deterministic"] = "warn"
    if loggers is None:
        loggers = build_loggers(cfg, run_dir)
    if callbacks is None:
        callbacks = build_callbacks(cfg, run_dir, with_loggers=bool(loggers))
    if cfg.callbacks.progress_bar == "none":
        kwargs["enable_progress_bar"] = False
    return instantiate(
        kwargs,
        default_root_dir=str(run_dir),
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],  # checkpoints staged beside their target, never in $TMPDIR
        _convert_="all",
    )


def channels_last_for(cfg: DictConfig) -> bool:
    """model.channels_last, or (when null) on for CUDA runs only."""
    if cfg.model.channels_last is None:
        return uses_cuda(cfg.trainer)
    return bool(cfg.model.channels_last)


def _partial(node: DictConfig) -> partial | None:
    """A factory (functools.partial) from an optimizer/scheduler config with _target_, or None."""
    if node is None or node.get("_target_") is None:
        return None
    arguments = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
    return partial(get_method(node._target_), **arguments)


def run_metadata(
    cfg: DictConfig, datamodule, class_weights: torch.Tensor, init_source: str
) -> dict[str, Any]:
    """What a checkpoint must carry to rebuild and describe the model without its run directory."""
    return {
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "class_names": list(datamodule.table.names),
        "class_colors": [list(c) for c in datamodule.table.overlay_colors()],
        "image_size": list(datamodule.image_size),
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "class_weights": [float(w) for w in class_weights],
        "init_source": init_source,
        "split": datamodule.split,
    }


def build_module(cfg: DictConfig, datamodule, class_weights: torch.Tensor) -> SegmentationModule:
    """The network of cfg.model wrapped in the training module for the datamodule's classes."""
    net = build_model(cfg.model, datamodule.num_classes)
    meta = run_metadata(cfg, datamodule, class_weights, getattr(net, "init_source", "random"))
    return SegmentationModule(
        net,
        class_weights=class_weights,
        meta=meta,
        optimizer=_partial(cfg.optimizer),
        scheduler=_partial(cfg.scheduler),
        label_smoothing=cfg.loss.label_smoothing,
        channels_last=channels_last_for(cfg),
        compile=bool(cfg.model.compile),
        bf_tolerance=cfg.evaluation.bf_tolerance,
        metric_semantics=cfg.evaluation.semantics,
        tta=str(cfg.evaluation.tta),
        instances=settings_from_config(cfg.evaluation),
    )
