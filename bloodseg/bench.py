"""``python -m bloodseg.bench [debug=smoke] [overrides]``: throughput measurements, one JSON object per line.

Measurements (``bench.measurements``):
- ``bf_score``: our batched BF score on the run's device vs a straightforward scipy implementation
  (per image and class: binary erosion + Euclidean distance transform), on the same masks.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from scipy import ndimage

from bloodseg.config import check_config
from bloodseg.errors import BloodsegError
from bloodseg.metrics.boundary import bf_scores

log = logging.getLogger("bloodseg.bench")


def bench_device(cfg: DictConfig) -> torch.device:
    """The device a run with this trainer config would use."""
    wants_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def emit(record: dict) -> dict:
    """Print one measurement as a JSON line on stdout."""
    print(json.dumps(record), flush=True)
    return record


def random_label_maps(count: int, size: list[int], classes: int, seed: int = 0) -> np.ndarray:
    """Blob-shaped random class maps, like segmentation outputs."""
    rng = np.random.default_rng(seed)
    maps = [
        ndimage.gaussian_filter(rng.standard_normal((classes, *size)).astype(np.float32), 6).argmax(0)
        for _ in range(count)
    ]
    return np.stack(maps).astype(np.int64)


def scipy_bf_scores(preds: np.ndarray, target: np.ndarray, num_classes: int, tolerance: float) -> np.ndarray:
    """The BF score as one would write it with scipy: per image and class, erosion + distance transform."""
    cross = ndimage.generate_binary_structure(2, 1)
    out = np.full((len(preds), num_classes), np.nan)
    for i, (pred, truth) in enumerate(zip(preds, target, strict=True)):
        limit = tolerance * math.hypot(*truth.shape)
        for c in range(num_classes):
            p, t = pred == c, truth == c
            pb = p & ~ndimage.binary_erosion(p, cross, border_value=1)
            tb = t & ~ndimage.binary_erosion(t, cross, border_value=1)
            if not pb.any() or not tb.any():
                out[i, c] = np.nan if not pb.any() and not tb.any() else 0.0
                continue
            precision = (ndimage.distance_transform_edt(~tb)[pb] <= limit).mean()
            recall = (ndimage.distance_transform_edt(~pb)[tb] <= limit).mean()
            out[i, c] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall-clock seconds of fn() over repeats (after one warm-up call)."""
    fn()
    synchronize(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_bf_score(cfg: DictConfig, device: torch.device) -> dict:
    """BF score of bench.bf_batch_size masks at data.image_size: ours on device vs the scipy reference."""
    size = list(cfg.data.image_size)
    classes = len(cfg.data.classes)
    count = int(cfg.bench.bf_batch_size)
    tolerance = float(cfg.evaluation.bf_tolerance)
    truth, pred = random_label_maps(count, size, classes, 0), random_label_maps(count, size, classes, 1)
    truth_t, pred_t = torch.from_numpy(truth).to(device), torch.from_numpy(pred).to(device)
    ours_s = timed(lambda: bf_scores(pred_t, truth_t, classes, tolerance), device, repeats=10)
    reference_s = timed(
        lambda: scipy_bf_scores(pred, truth, classes, tolerance),
        torch.device("cpu"),
        repeats=int(cfg.bench.reference_repeats),
    )
    agree = np.allclose(
        bf_scores(pred_t, truth_t, classes, tolerance).cpu().numpy(),
        scipy_bf_scores(pred, truth, classes, tolerance),
        atol=1e-6,
        equal_nan=True,
    )
    return {
        "name": "bf_score",
        "device": device_name(device),
        "masks": count,
        "image_size": size,
        "classes": classes,
        "ours_ms": round(ours_s * 1e3, 3),
        "scipy_reference_ms": round(reference_s * 1e3, 3),
        "speedup": round(reference_s / ours_s, 2),
        "agrees_with_reference": bool(agree),
    }


def device_name(device: torch.device) -> str:
    """A readable device name (the GPU model, or 'cpu (N threads)')."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


MEASUREMENTS = {"bf_score": measure_bf_score}


def run_bench(cfg: DictConfig) -> list[dict]:
    """Run every configured measurement and print each as a JSON line."""
    check_config(cfg)
    unknown = [m for m in cfg.bench.measurements if m not in MEASUREMENTS]
    if unknown:
        raise BloodsegError(f"bench.measurements has unknown {unknown}; known: {sorted(MEASUREMENTS)}")
    device = bench_device(cfg)
    return [emit(MEASUREMENTS[name](cfg, device)) for name in cfg.bench.measurements]


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    try:
        run_bench(cfg)
    except BloodsegError as error:
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
