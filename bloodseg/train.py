"""``python -m bloodseg.train experiment=NAME [overrides]``: train a model, then evaluate its test split.

What a run writes and how it resumes: bloodseg.training.run.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bloodseg.config import CONF_DIR
from bloodseg.training.run import run_command, run_job


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``optimized_metric`` (validation mean IoU by default) for sweepers."""
    return run_job(cfg)


def cli() -> None:
    """``bloodseg-train`` / ``python -m bloodseg.train``."""
    run_command(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
