"""Active learning on CellaVision: does labelling the model's most uncertain images beat labelling random ones?

Per seed: train on `--labelled` random training images; rank the rest of the training pool with
`python -m bloodseg.suggest` (mean per-pixel entropy, flip-averaged); train again on the labelled
images plus the `--added` most uncertain ones, and on the labelled plus `--added` random ones
(same seed, same epochs); every model is scored by train's own test pass on one fixed test split
(data.split_seed's, the same for all runs). Training sets are restricted with data.split_file
(a split.json the driver writes). Ends with results.json and tables.md in OUT.

    python experiments/active_learning/driver.py OUT --seeds 1 2 3 [--epochs 30] [-- extra train overrides]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bloodseg.data.sources import cellavision_pairs
from bloodseg.data.split import make_split

ARMS = ("base", "uncertain", "random")
METRICS = ("mean_iou", "global_accuracy", "mean_accuracy", "mean_dice", "mean_bf_score")


def run(argv: list[str], log: Path) -> float:
    """Run a bloodseg command (its output into log); fail loudly; returns its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        handle.write(" ".join(shlex.quote(a) for a in argv) + "\n")
        handle.flush()
        done = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(argv)}; see {log}")
    return time.perf_counter() - start


def write_split(path: Path, train: list[str], test: list[str]) -> None:
    """A split.json for data.split_file: only these training images, the fixed test split."""
    path.write_text(json.dumps({"train": sorted(train), "val": [], "test": sorted(test)}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--root", default=os.environ.get("CELLAVISION_ROOT", "../shared/data/cellavision_wbc")
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--labelled", type=int, default=10)
    parser.add_argument("--added", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", default="[64,64]")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.extra = argv[cut + 1 :]  # more train overrides, after --
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.root).resolve()
    ids = [p.id for p in cellavision_pairs(root)]
    fixed = make_split(ids, 0.3, 0.0, 42)  # data.cellavision's split: the test split every run is scored on
    pool_all, test = fixed["train"], fixed["test"]
    py = [sys.executable, "-m"]
    common = [
        "experiment=segnet_vgg16",
        "data=cellavision",
        f"data.root={root}",
        f"data.image_size={args.image_size}",
        "data.num_workers=0",
        f"trainer.max_epochs={args.epochs}",
        "trainer.accelerator=cpu",
        "logger=csv",
        "callbacks.progress_bar=none",
        *args.extra,
    ]
    runs, times = [], {}
    for seed in args.seeds:
        where = out / f"seed{seed}"
        where.mkdir(exist_ok=True)
        rng = np.random.default_rng(seed)
        labelled = sorted(rng.choice(pool_all, args.labelled, replace=False).tolist())
        unlabelled = sorted(set(pool_all) - set(labelled))
        random_pick = sorted(rng.choice(unlabelled, args.added, replace=False).tolist())

        def train(arm: str, images: list[str], where=where, seed=seed) -> Path:
            """Train one arm on these images (data.split_file) and return its run directory."""
            split = where / f"split_{arm}.json"
            write_split(split, images, test)
            argv = [*py, "bloodseg.train", *common, f"seed={seed}", f"data.split_file={split}"]
            times[f"seed{seed}/{arm}"] = run([*argv, f"hydra.run.dir={where / arm}"], where / f"{arm}.log")
            return where / arm

        base = train("base", labelled)
        pool = where / "pool"  # the unlabelled images, as a folder for suggest
        pool.mkdir(exist_ok=True)
        for stem in unlabelled:
            link = pool / f"{stem}.bmp"
            if not link.exists():
                link.symlink_to(root / f"{stem}.bmp")
        times[f"seed{seed}/suggest"] = run(
            [
                *py,
                "bloodseg.suggest",
                f"ckpt_path={base / 'checkpoints/last.ckpt'}",
                f"input={pool}",
                f"n={args.added}",
                "suggest.mode=resize",
                "suggest.device=cpu",
                f"output_dir={where / 'suggest'}",
            ],
            where / "suggest.log",
        )
        with open(where / "suggest" / "ranking.csv") as handle:
            ranking = list(csv.DictReader(handle))
        uncertain = [r["image"].rsplit(".", 1)[0] for r in ranking[: args.added]]
        picks = {"base": labelled, "uncertain": labelled + uncertain, "random": labelled + random_pick}
        train("uncertain", picks["uncertain"])
        train("random", picks["random"])
        entropy = {r["image"].rsplit(".", 1)[0]: float(r["entropy"]) for r in ranking}
        for arm in ARMS:
            metrics = json.loads((where / arm / "metrics.json").read_text())
            runs.append(
                {
                    "seed": seed,
                    "arm": arm,
                    "train_images": len(picks[arm]),
                    "added": sorted(set(picks[arm]) - set(labelled)),
                    "added_mean_entropy": statistics.mean(entropy[i] for i in set(picks[arm]) - set(labelled))
                    if arm != "base"
                    else None,
                    **{k: metrics["dataset"][k] for k in METRICS},
                    "class_iou": {c: v["iou"] for c, v in metrics["classes"].items()},
                }
            )
    summary = {}
    for arm in ARMS:
        rows = [r for r in runs if r["arm"] == arm]
        summary[arm] = {
            k: {
                "mean": statistics.mean(r[k] for r in rows),
                "std": statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0,
            }
            for k in METRICS
        }
    gain = [
        next(r for r in runs if r["seed"] == s and r["arm"] == "uncertain")["mean_iou"]
        - next(r for r in runs if r["seed"] == s and r["arm"] == "random")["mean_iou"]
        for s in args.seeds
    ]
    results = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "train_overrides": common,
        "test_images": len(test),
        "pool_images": len(pool_all),
        "runs": runs,
        "summary": summary,
        "uncertain_minus_random_mean_iou": {"per_seed": gain, "mean": statistics.mean(gain)},
        "wall_seconds": times,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"Test split: {len(test)} images (fixed); {args.labelled} labelled + {args.added} added; "
        f"{args.epochs} epochs at {args.image_size}; seeds {' '.join(map(str, args.seeds))}.",
        "",
        "| training set | images | " + " | ".join(METRICS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in METRICS) + " |",
    ]
    names = {"base": "labelled only", "uncertain": "+ most uncertain", "random": "+ random"}
    for arm in ARMS:
        cells = [f"{summary[arm][k]['mean']:.4f} +- {summary[arm][k]['std']:.4f}" for k in METRICS]
        count = args.labelled + (0 if arm == "base" else args.added)
        lines.append(f"| {names[arm]} | {count} | " + " | ".join(cells) + " |")
    lines += ["", "Uncertain minus random, mean IoU per seed: " + ", ".join(f"{g:+.4f}" for g in gain)]
    (out / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
