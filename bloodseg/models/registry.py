"""Building the network named by the ``model`` config group."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

# Keys of the model config that steer how the network runs, not how it is built.
RUNTIME_KEYS = ("name", "compile", "channels_last")


def build_model(model_cfg: DictConfig, num_classes: int) -> nn.Module:
    """Instantiate the network of model_cfg (its ``_target_`` and arguments) for num_classes classes."""
    arguments = {
        k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k not in RUNTIME_KEYS
    }
    return instantiate(arguments, num_classes=num_classes)
