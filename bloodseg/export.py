"""``python -m bloodseg.export``: a checkpoint as a self-describing ONNX or TorchScript model.

    python -m bloodseg.export ckpt_path=CKPT format=onnx|torchscript [output=PATH]

What it writes and how: bloodseg.inference.model_export.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from bloodseg.config import CONF_DIR
from bloodseg.inference.model_export import run_export


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; prints one JSON line describing the exported file."""
    run_export(cfg)


if __name__ == "__main__":
    main()
