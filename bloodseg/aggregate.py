"""``python -m bloodseg.aggregate MULTIRUN_DIR... --out results.json [--md tables.md]``: mean, std over seeds.

How jobs are grouped and ranked, and the layout of results.json: bloodseg.sweeps.aggregate.

A job with a damaged file (truncated or empty ``metrics.json``, a ``job_status.json`` that is not a JSON
object, an ``overrides.yaml`` that is not a YAML list, ...) is listed as unreadable with the file and the
reason (results.json ``unreadable``, the tables, stderr) and left out: the means and standard deviations
are over the jobs read, and the output says N of M. Exit status 0 when at least one job was read (1 with
``--strict`` when any job is unreadable, after writing the files), 2 when none could be.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloodseg.cli import key_value_options
from bloodseg.sweeps.aggregate import write_aggregate

OPTIONS = ("out", "md")  # also accepted as key=value (out=FILE)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bloodseg.aggregate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options also as key=value, as in the other tools: out=FILE is --out FILE.",
    )
    parser.add_argument("multirun_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="results.json to write")
    parser.add_argument("--md", type=Path, help="also write the tables (mean ± std over seeds) as markdown")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit status 1 when any job is unreadable (a damaged metrics.json, job_status.json or "
        "overrides.yaml), after writing the results of the others; without it such jobs are listed and "
        "the exit status is 0",
    )
    args = parser.parse_args(key_value_options(sys.argv[1:] if argv is None else argv, OPTIONS))
    return write_aggregate(args.multirun_dirs, args.out, args.md, args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
