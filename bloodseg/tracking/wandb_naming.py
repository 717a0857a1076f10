"""Names of a W&B run from the Hydra job: display name, group (one per sweep), tags, the flat config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

MAX_NAME = 128  # W&B display names longer than this are cut
MAX_TAG = 64  # W&B rejects longer tags


@dataclass
class HydraContext:
    """What the Hydra app knows about this job (empty when train() is called outside Hydra)."""

    multirun: bool = False
    sweep_dir: str | None = None
    job_num: int | None = None
    overrides: tuple[str, ...] = ()
    choices: dict[str, Any] | None = None


def hydra_context() -> HydraContext:
    """The running Hydra job's mode, sweep dir, job number and task overrides (hydra.* left out)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return HydraContext()
        hc = HydraConfig.get()
        overrides = tuple(str(o) for o in hc.overrides.task if not str(o).lstrip("+~").startswith("hydra"))
        multirun = hc.mode == RunMode.MULTIRUN
        return HydraContext(
            multirun=multirun,
            sweep_dir=str(hc.sweep.dir) if multirun else None,
            job_num=int(hc.job.num) if multirun and hc.job.get("num") is not None else None,
            overrides=overrides,
            choices=dict(hc.runtime.choices),
        )
    except Exception:  # noqa: BLE001  (a half-set HydraConfig, e.g. in tests): no Hydra context
        return HydraContext()


NAME_SKIP = ("experiment", "logger", "hydra")  # overrides that do not describe the experiment


def run_name(cfg: DictConfig, context: HydraContext) -> str:
    """``<name>`` followed by the command-line overrides, e.g. ``segnet_vgg16 optimizer.lr=0.01 seed=2``."""
    if cfg.logger.wandb.name:
        return str(cfg.logger.wandb.name)
    shown = []
    for override in context.overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.split(".", 1)[0].split("/", 1)[0] in NAME_SKIP:
            continue
        shown.append(override)
    name = " ".join([str(cfg.name), *sorted(shown)])
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


def run_group(cfg: DictConfig, context: HydraContext) -> str:
    """logger.wandb.group, else ``<name>-<sweep dir name>`` for a multirun's jobs, else ``<name>``."""
    if cfg.logger.wandb.group:
        return str(cfg.logger.wandb.group)
    if context.multirun and context.sweep_dir:
        return f"{cfg.name}-{Path(context.sweep_dir).name}"
    return str(cfg.name)


def run_tags(cfg: DictConfig, context: HydraContext) -> list[str]:
    """The experiment name, model, class weighting, multirun / debug markers and logger.wandb.tags."""
    weighting = cfg.loss.class_weighting
    tags = [str(cfg.name), str(cfg.model.name), f"weighting:{getattr(weighting, 'value', weighting)}"]
    if context.multirun:
        tags.append("multirun")
    debug = (context.choices or {}).get("debug")
    if debug:
        tags.append(f"debug:{debug}")
    tags += [str(t) for t in cfg.logger.wandb.tags or []]
    return list(dict.fromkeys(t[:MAX_TAG] for t in tags))


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config with interpolations resolved and enums as strings (as W&B wants it)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception:  # noqa: BLE001  (${hydra:...} outside a Hydra app)
        return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config with nested sections as dotted keys (``optimizer.lr``, ``loss.class_weighting``), the
    form W&B's parallel coordinates, group-by and run table use for the swept keys."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat
