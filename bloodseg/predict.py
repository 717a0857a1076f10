"""``python -m bloodseg.predict``: segment whole smears, separate and count cells, one row per cell.

    python -m bloodseg.predict ckpt_path=CKPT input=FILE_OR_DIR output_dir=DIR [predict.mode=auto|whole|tile|resize]

What it writes and how: bloodseg.inference.predict_run.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bloodseg.cli import check_command_line
from bloodseg.config import CONF_DIR
from bloodseg.inference.predict_run import run_predict


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_predict(cfg)


def cli() -> None:
    """``bloodseg-predict`` / ``python -m bloodseg.predict``: the command line checked, then the Hydra app."""
    check_command_line(sys.argv[1:], "predict", "output_dir")
    main()


if __name__ == "__main__":
    cli()
