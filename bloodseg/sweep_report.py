"""``python -m bloodseg.sweep_report MULTIRUN_DIR``: one table of every job of a Hydra multirun.

Reads each job's ``.hydra/overrides.yaml``, ``metrics.json`` and ``job_status.json`` and writes
``sweep_summary.csv`` and ``sweep_summary.md`` (columns: the overrides that vary between jobs, the
validation mean IoU when the jobs had a validation split, every test dataset metric, per-class IoU),
plus ``sweep_heatmap.png`` (test mean IoU) when exactly two keys vary. Jobs are ranked by their
validation mean IoU when every scored job has one (the test split then plays no part in the choice),
else by test mean IoU, and the summary says which. Jobs without metrics are listed as failed or
incomplete, never dropped.

A job with a damaged file (truncated or empty ``metrics.json``, a ``job_status.json`` that is not a JSON
object, an ``overrides.yaml`` that is not a YAML list, ...) is listed as unreadable with the file and the
reason, in the summary and on stderr, and left out of the ranking; the others are reported as usual and
the summary says how many jobs were read. Exit status 0 when at least one job was read (1 with
``--strict`` when any job is unreadable, after writing the summary), 2 when none could be.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloodseg.cli import key_value_options
from bloodseg.sweeps.results import sweep_report_command

OPTIONS = ("out",)  # also accepted as key=value (out=FILE)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bloodseg.sweep_report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options also as key=value, as in the other tools: out=FILE is --out FILE.",
    )
    parser.add_argument(
        "multirun_dir", type=Path, help="a Hydra multirun directory (e.g. multirun/segnet_vgg16/<date>)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the summary (default: the multirun dir)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit status 1 when any job is unreadable (a damaged metrics.json, job_status.json or "
        "overrides.yaml), after writing the summary of the others; without it such jobs are listed and "
        "the exit status is 0",
    )
    args = parser.parse_args(key_value_options(sys.argv[1:] if argv is None else argv, OPTIONS))
    return sweep_report_command(args.multirun_dir, args.out, args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
