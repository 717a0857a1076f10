"""``python -m bloodseg.export``: a checkpoint as a self-describing ONNX or TorchScript model.

    python -m bloodseg.export ckpt_path=CKPT format=onnx|torchscript [output=PATH]

What it writes and how: bloodseg.inference.model_export.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bloodseg.cli import check_command_line
from bloodseg.config import CONF_DIR
from bloodseg.inference.model_export import run_export


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; prints one JSON line describing the exported file."""
    run_export(cfg)


def cli() -> None:
    """``bloodseg-export`` / ``python -m bloodseg.export``: the command line checked, then the Hydra app."""
    check_command_line(sys.argv[1:], "export", "output")
    main()


if __name__ == "__main__":
    cli()
