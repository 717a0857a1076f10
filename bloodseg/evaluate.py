"""``python -m bloodseg.evaluate``: score a checkpoint on its run's split, or folders of index PNGs.

    python -m bloodseg.evaluate ckpt_path=RUN/checkpoints/last.ckpt [data=NAME] [split=test]
    python -m bloodseg.evaluate pred_dir=P gt_dir=G data=NAME [image_dir=I]

Both write metrics.json, metrics.md, confusion_matrix.csv/.png, per_image_metrics.csv and overlays
of the best and worst images, with the same metric code as training (MATLAB semantics), into
output_dir; by default a checkpoint's evaluation goes to a new folder
<run dir>/eval/<split>-<H>x<W>-<time>/, so the training run's own results are never replaced.
A folder already holding metrics.json is refused unless overwrite=true.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bloodseg.cli import check_command_line
from bloodseg.config import CONF_DIR
from bloodseg.training.testing import check_evaluate_arguments, run_evaluation


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def run(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the mean IoU."""
    return run_evaluation(cfg)


def main() -> float | None:
    """Command-line entry point: rejects data.KEY overrides without data=NAME in one line, then runs."""
    check_command_line(sys.argv[1:], "evaluate", "output_dir")
    check_evaluate_arguments(sys.argv[1:])
    return run()


if __name__ == "__main__":
    main()
