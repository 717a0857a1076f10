"""``python -m bloodseg.sweep_report MULTIRUN_DIR``: one table of every job of a Hydra multirun.

Reads each job's ``.hydra/overrides.yaml``, ``metrics.json`` and ``job_status.json`` and writes
``sweep_summary.csv`` and ``sweep_summary.md`` (columns: the overrides that vary between jobs, the
validation mean IoU when the jobs had a validation split, every test dataset metric, per-class IoU),
plus ``sweep_heatmap.png`` (test mean IoU) when exactly two keys vary. Jobs are ranked by their
validation mean IoU when every scored job has one (the test split then plays no part in the choice),
else by test mean IoU, and the summary says which. Jobs without metrics are listed as failed or
incomplete, never dropped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloodseg.cli import key_value_options
from bloodseg.sweeps.results import is_multirun_dir, not_a_multirun_message, write_sweep_summary

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
    args = parser.parse_args(key_value_options(sys.argv[1:] if argv is None else argv, OPTIONS))
    if not args.multirun_dir.is_dir() or not is_multirun_dir(args.multirun_dir):
        print(f"error: {not_a_multirun_message(args.multirun_dir)}", file=sys.stderr)
        return 2
    try:
        paths = write_sweep_summary(args.multirun_dir, args.out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
