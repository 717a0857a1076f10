"""Mean ± std over seeds of the semantic and instance scores in metrics.json files, as Markdown.

Usage:
  python experiments/smear_fields/summarize.py LABEL=DIR[,DIR...] ... [--class cell] [--json OUT.json]
Each DIR holds a metrics.json (a run dir or an evaluate output dir); the dirs of one LABEL are
its seeds. Prints one table row per LABEL: class IoU / BF / Dice, mean IoU / BF, and for the
class's cells (edge cells left out, then kept) F1@0.5, AP@[.5:.95], matched IoU and count errors.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SEMANTIC = (
    ("IoU", lambda m, c: m["classes"][c]["iou"]),
    ("BF", lambda m, c: m["classes"][c]["mean_bf_score"]),
    ("Dice", lambda m, c: m["classes"][c]["dice"]),
    ("mean IoU", lambda m, c: m["dataset"]["mean_iou"]),
    ("mean BF", lambda m, c: m["dataset"]["mean_bf_score"]),
)
INSTANCE = (
    ("F1@0.5", "f1_50"),
    ("AP@[.5:.95]", "ap_50_95"),
    ("matched IoU", "mean_matched_iou"),
    ("count error %", "count_error_mean_pct"),
    ("median abs count error %", "count_error_median_abs_pct"),
)


def cell(values: list[float], digits: int) -> str:
    """mean ± std of the values, the value alone for one seed, n/a when any is missing (NaN)."""
    if any(v is None for v in values):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    """Print the table (and write the numbers as JSON)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("groups", nargs="+")
    parser.add_argument("--class", dest="cls", default="cell")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    header = ["configuration", "seeds"] + [
        f"{args.cls} {n}" if i < 3 else n for i, (n, _) in enumerate(SEMANTIC)
    ]
    for variant in ("interior", "all cells"):
        header += [f"{n} ({variant})" for n, _ in INSTANCE]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    record = {}
    for group in args.groups:
        label, _, dirs = group.partition("=")
        metrics = [json.loads((Path(d) / "metrics.json").read_text()) for d in dirs.split(",")]
        row = [label, str(len(metrics))]
        numbers = {}
        for name, get in SEMANTIC:
            values = [get(m, args.cls) for m in metrics]
            numbers[name] = values
            row.append(cell(values, 4))
        for variant, key in (("interior", "edge_excluded"), ("all cells", "edge_included")):
            for name, field in INSTANCE:
                values = [m["instances"]["classes"][args.cls][key][field] for m in metrics]
                numbers[f"{name} ({variant})"] = values
                row.append(cell(values, 2 if "%" in name else 4))
        record[label] = {"dirs": dirs.split(","), **numbers}
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
