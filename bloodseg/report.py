"""``python -m bloodseg.report RUN_OR_MULTIRUN_DIR``: one self-contained ``report.html`` of a run or a sweep.

For a run directory: a failure banner when it failed, training curves (summary and per class, train /
val / test, from csv/metrics.csv), the paper's Tables 1 and 2 and the per-image metrics, Figures 4 to 7
(ground truth, class frequencies and weights, confusion matrix, image / ground truth / prediction), the
full config, and where the run's files and W&B data live. For a Hydra multirun directory: one table of
jobs (varying overrides, every dataset metric, a link to each job's section), parallel coordinates of
the swept keys against the score, the heatmap (two keys) or a dot chart with error bars (one key), every
job's curves as small multiples, and each job's own section. Every picture is an embedded PNG and the
style sheet is inline: the file opens in any browser without a network and can be mailed or archived.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloodseg.cli import key_value_options
from bloodseg.html_report.page import write_report

OPTIONS = ("out",)  # also accepted as key=value (out=FILE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bloodseg.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options also as key=value, as in the other tools: out=FILE is --out FILE.",
    )
    parser.add_argument(
        "path", type=Path, help="a run directory (outputs/...) or a multirun directory (multirun/...)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the HTML (default: PATH/report.html)"
    )
    args = parser.parse_args(key_value_options(sys.argv[1:] if argv is None else argv, OPTIONS))
    if not args.path.is_dir():
        print(f"error: {args.path} is not a directory", file=sys.stderr)
        return 2
    try:
        out = write_report(args.path, args.out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
