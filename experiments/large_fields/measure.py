"""Peak memory and speed of `python -m bloodseg.predict` on large synthetic fields (CPU).

    python experiments/large_fields/measure.py CKPT WORKDIR [--field 8000x6000:png] [--field 30000x30000:tif]
        [-- predict.KEY=VALUE ...]

Writes each field once into WORKDIR (a PNG or, for ``:tif``, a 512x512-tiled deflate TIFF written
tile by tile, so that making it needs no memory of its size), then runs the predict CLI on it in a
child process and reports the child's peak RSS (GNU time's "Maximum resident set size"), the wall
time, the tiles and tiles per second (from summary.json). One JSON line per field goes to
stdout and to WORKDIR/results.jsonl. Fields are mosaics of generated smear crops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TILE = 512


def crops(count: int = 16) -> list[np.ndarray]:
    """Distinct generated smear crops of TILE x TILE pixels."""
    from bloodseg.data.synthetic import generate_smear

    return [generate_smear(100 + i, TILE, TILE)[0] for i in range(count)]


def mosaic_tile(pool: list[np.ndarray], row: int, column: int) -> np.ndarray:
    """The crop at a mosaic position (a fixed pseudo-random pick, so the field looks varied)."""
    return pool[(row * 7 + column * 3 + row * column) % len(pool)]


def write_field(path: Path, height: int, width: int) -> None:
    """A synthetic field of height x width pixels: PNG (built in memory) or tiled TIFF (streamed)."""
    pool = crops()
    rows, columns = -(-height // TILE), -(-width // TILE)
    if path.suffix == ".png":
        from PIL import Image

        image = np.empty((rows * TILE, columns * TILE, 3), np.uint8)
        for r in range(rows):
            for c in range(columns):
                image[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = mosaic_tile(pool, r, c)
        Image.fromarray(image[:height, :width]).save(path)
        return
    import tifffile

    def tiles():
        for r in range(rows):
            for c in range(columns):
                yield mosaic_tile(pool, r, c)

    tifffile.imwrite(
        path,
        tiles(),
        shape=(height, width, 3),
        dtype=np.uint8,
        tile=(TILE, TILE),
        compression="zlib",
        photometric="rgb",
    )


def measure(ckpt: str, field: Path, out_dir: Path, overrides: list[str]) -> dict:
    """Run predict on one field in a child process; its peak RSS, wall time, tiles and tiles/s."""
    command = [
        sys.executable,
        "-m",
        "bloodseg.predict",
        f"ckpt_path={ckpt}",
        f"input={field}",
        f"output_dir={out_dir}",
        "predict.device=cpu",
        *overrides,
    ]
    timing = out_dir.parent / f"{out_dir.name}.time"
    start = time.perf_counter()
    with open(out_dir.parent / f"{out_dir.name}.log", "w") as log:
        code = subprocess.run(
            ["/usr/bin/time", "-v", "-o", str(timing), *command], stdout=log, stderr=subprocess.STDOUT
        ).returncode
    wall = time.perf_counter() - start
    peak_kib = next(
        int(line.split(":")[1]) for line in timing.read_text().splitlines() if "Maximum resident" in line
    )
    done = out_dir / "summary.json"
    summary = json.loads(done.read_text()) if done.exists() else {"images": []}
    image = (summary["images"] or [{}])[0]
    return {
        "field": field.name,
        "exit_code": code,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "wall_s": round(wall, 1),
        "tiles": image.get("tiles"),
        "tile_size": image.get("tile_size"),
        "predict_s": image.get("seconds"),
        "tiles_per_s": image.get("tiles_per_s"),
        "picture_step": image.get("picture_step"),
        "cells": sum(v["count"] or 0 for v in image.get("counts", {}).values()),  # 0: not counted
        "overrides": overrides,
        "command": " ".join(command),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpt")
    parser.add_argument("workdir", type=Path)
    parser.add_argument(
        "--field", action="append", help="HxW:png|tif (default 8000x6000:png, 30000x30000:tif)"
    )
    args, overrides = parser.parse_known_args()  # the rest: predict.KEY=VALUE overrides
    args.overrides = [o for o in overrides if o != "--"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    for spec in args.field or ["6000x8000:png", "30000x30000:tif"]:
        size, kind = spec.split(":")
        height, width = (int(v) for v in size.split("x"))
        field = args.workdir / f"field_{height}x{width}.{kind}"
        if not field.exists():
            started = time.perf_counter()
            write_field(field, height, width)
            print(f"wrote {field} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        tag = "_".join(o.split("=")[-1] for o in args.overrides) or "default"
        result = measure(args.ckpt, field, args.workdir / f"out_{height}x{width}_{tag}", args.overrides)
        print(json.dumps(result), flush=True)
        with open(args.workdir / "results.jsonl", "a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
