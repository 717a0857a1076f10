"""``python -m bloodseg.report RUN_OR_MULTIRUN_DIR``: one self-contained ``report.html`` of a run or a sweep.

For a run directory: a failure banner when it failed, training curves (summary and per class, train /
val / test, from csv/metrics.csv), the paper's Tables 1 and 2 and the per-image metrics, Figures 4 to 7
(ground truth, class frequencies and weights, confusion matrix, image / ground truth / prediction), the
full config, and where the run's files and W&B data live. For a Hydra multirun directory: one table of
jobs (varying overrides, every dataset metric, a link to each job's section), parallel coordinates of
the swept keys against the score, the heatmap (two keys) or a dot chart with error bars (one key), every
job's curves as small multiples, and each job's own section. Every picture is an embedded PNG and the
style sheet is inline: the file opens in any browser without a network and can be mailed or archived.

A job with a damaged file (truncated or empty ``metrics.json``, a ``job_status.json`` that is not a JSON
object, an ``overrides.yaml`` that is not a YAML list, ...) is listed as unreadable with the file and the
reason (in the page's banner, its table row and its section, and on stderr) and left out of the ranking
and the figures; the page says how many jobs were read. Exit status 0 when at least one job was read (1
with ``--strict`` when any job, or the run's own metrics.json / job_status.json, is unreadable, after
writing the page), 2 when none could be.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloodseg.cli import key_value_options
from bloodseg.html_report.page import write_report_checked
from bloodseg.sweeps.results import NoReadableJob, report_unreadable

OPTIONS = ("out",)  # also accepted as key=value (out=FILE)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
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
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit status 1 when any job is unreadable (a damaged metrics.json, job_status.json or "
        "overrides.yaml), after writing the report of the others; without it such jobs are listed and "
        "the exit status is 0",
    )
    args = parser.parse_args(key_value_options(sys.argv[1:] if argv is None else argv, OPTIONS))
    if not args.path.is_dir():
        print(f"error: {args.path} is not a directory", file=sys.stderr)
        return 2
    try:
        out, unreadable, total = write_report_checked(args.path, args.out)
    except (FileNotFoundError, NoReadableJob) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"error: cannot write {error.filename}: {error.strerror} (choose another --out)", file=sys.stderr
        )
        return 2
    print(out)
    return report_unreadable(unreadable, total, args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
