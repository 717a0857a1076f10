"""``python -m bloodseg.suggest``: rank unlabelled images by how unsure the model is, to label those next.

    python -m bloodseg.suggest ckpt_path=CKPT input=DIR [n=10] [output_dir=DIR] [suggest.score=entropy|margin]

Writes ``ranking.csv`` (every image, most uncertain first), ``suggested.txt`` (the top n files,
one path a line) and ``<stem>_uncertainty.png`` for those n (per-pixel entropy, black = certain,
bright = unsure). Scores are bloodseg.inference.uncertainty's; images go through the network as in predict.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bloodseg.cli import check_command_line
from bloodseg.config import CONF_DIR
from bloodseg.inference.uncertainty import run_suggest


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="suggest")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_suggest(cfg)


def cli() -> None:
    """``bloodseg-suggest`` / ``python -m bloodseg.suggest``: the command line checked, then the Hydra app."""
    check_command_line(sys.argv[1:], "suggest", "output_dir")
    main()


if __name__ == "__main__":
    cli()
