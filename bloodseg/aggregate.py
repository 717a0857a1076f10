"""``python -m bloodseg.aggregate MULTIRUN_DIR... --out results.json [--md tables.md]``: mean, std over seeds.

How jobs are grouped and ranked, and the layout of results.json: bloodseg.sweeps.aggregate.
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
    args = parser.parse_args(key_value_options(sys.argv[1:] if argv is None else argv, OPTIONS))
    return write_aggregate(args.multirun_dirs, args.out, args.md)


if __name__ == "__main__":
    raise SystemExit(main())
