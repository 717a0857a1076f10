"""``python -m bloodseg.bench [debug=smoke] [overrides]``: throughput measurements, one JSON object per line.

Measurements (``bench.measurements``), each for every model in ``bench.models``:
- ``train_step``: the real training step (our LightningModule through a Lightning Trainer, the
  fivefold data pipeline with augmentation, weighted loss, metric-free training loop as in a run)
  timed over ``bench.steps`` steps after ``bench.warmup_steps``, and a plain PyTorch loop (same
  network, SGD, weighted cross entropy, same precision / channels_last / compile, batch already on
  the device) in the same process: ``ratio_vs_plain`` = ours / plain.
- ``inference``: the predict path (uint8 batch -> normalise -> network -> argmax), batch
  ``bench.inference_batch_size``.
- ``evaluation``: inference plus every metric (confusion, per-image, BF) updated and computed.
- ``bf_score``: our batched BF score on the run's device vs a straightforward scipy implementation
  (per image and class: binary erosion + Euclidean distance transform), on the same masks.

Every record has ``name``, ``model``, ``device``, ``precision``, ``batch_size``, ``images_per_s`` and
``peak_mem_gib`` (null where it does not apply: no network in ``bf_score``, no peak memory on the CPU).
Networks start from random weights: the bench never looks for ImageNet weights. Stdout carries
nothing but the JSON lines; logs go to stderr.

Throughput is images/s; ``tflops`` counts the network's FLOPs (torch's FlopCounterMode, training =
3x forward) and ``mfu`` divides by 800 TFLOP/s (dense bf16 of an H100/H200) on those GPUs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from scipy import ndimage

from bloodseg.cli import check_command_line
from bloodseg.config import CONF_DIR, check_config
from bloodseg.data.datamodule import BloodSmearDataModule
from bloodseg.errors import BloodsegError
from bloodseg.metrics.boundary import bf_scores
from bloodseg.metrics.suite import SegmentationMetrics
from bloodseg.models.registry import build_model
from bloodseg.training.checkpoints import without_pretrained_weights
from bloodseg.training.factory import build_module, build_trainer, channels_last_for, resolve_precision
from bloodseg.training.losses import class_weights

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


def _squared_distance(features: np.ndarray) -> np.ndarray:
    """Exact integer squared distance of every pixel to the nearest True pixel of features."""
    near = ndimage.distance_transform_edt(~features, return_distances=False, return_indices=True)
    rows, cols = np.indices(features.shape)
    return (rows - near[0]) ** 2 + (cols - near[1]) ** 2


def scipy_bf_scores(preds: np.ndarray, target: np.ndarray, num_classes: int, tolerance: float) -> np.ndarray:
    """The BF score as one would write it with scipy, per image and class: boundary = mask minus its
    4-connected erosion with zeros outside the image; a boundary pixel matches when its squared
    distance to the other boundary (exact, from the distance transform's nearest-pixel indices) is
    < theta^2, theta = tolerance * diagonal; BF = 1 / (0.5/recall + 0.5/precision), NaN for an
    empty boundary."""
    cross = ndimage.generate_binary_structure(2, 1)
    out = np.full((len(preds), num_classes), np.nan)
    for i, (pred, truth) in enumerate(zip(preds, target, strict=True)):
        theta = tolerance * math.sqrt(truth.shape[0] ** 2 + truth.shape[1] ** 2)
        for c in range(num_classes):
            p, t = pred == c, truth == c
            pb = p & ~ndimage.binary_erosion(p, cross, border_value=0)
            tb = t & ~ndimage.binary_erosion(t, cross, border_value=0)
            if not pb.any() or not tb.any():
                continue  # 0/0: NaN
            precision = (_squared_distance(tb)[pb] < theta * theta).mean()
            recall = (_squared_distance(pb)[tb] < theta * theta).mean()
            with np.errstate(divide="ignore"):
                out[i, c] = 1.0 / (0.5 / recall + 0.5 / precision)
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


def _significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


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
    reset_peak_memory(device)
    bf_scores(pred_t, truth_t, classes, tolerance)
    peak = peak_memory_gib(device)
    agree = np.allclose(
        bf_scores(pred_t, truth_t, classes, tolerance).cpu().numpy(),
        scipy_bf_scores(pred, truth, classes, tolerance),
        atol=1e-6,
        equal_nan=True,
    )
    return {
        "name": "bf_score",
        "model": None,  # no network: BF score of given masks
        "device": device_name(device),
        "precision": None,  # no floating-point network: exact integer distances
        "batch_size": count,
        "images_per_s": _significant(count / ours_s),
        "peak_mem_gib": peak,
        "masks": count,
        "image_size": size,
        "classes": classes,
        "ours_ms": round(ours_s * 1e3, 3),
        "scipy_reference_ms": round(reference_s * 1e3, 3),
        "speedup": _significant(reference_s / ours_s, 3),  # 3 significant digits, also below 1x
        "agrees_with_reference": bool(agree),
    }


def device_name(device: torch.device) -> str:
    """A readable device name (the GPU model, or 'cpu (N threads)')."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


H100_CLASS_PEAK_FLOPS = 800e12  # dense bf16 matrix throughput of an H100 / H200 (the MFU reference)


def peak_flops(device: torch.device) -> float | None:
    """The dense bf16 peak of H100/H200-class GPUs, else None (no MFU reported)."""
    if device.type == "cuda" and any(tag in torch.cuda.get_device_name(device) for tag in ("H100", "H200")):
        return H100_CLASS_PEAK_FLOPS
    return None


def forward_flops(net: torch.nn.Module, size: list[int], device: torch.device) -> float:
    """FLOPs of one forward pass of one image (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = net.training
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, *size, device=device))
    net.train(was_training)
    return float(counter.get_total_flops())


def autocast_for(precision: str, device: torch.device):
    """The autocast context matching a Lightning precision string."""
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated accelerator memory since the last reset (None on the CPU)."""
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def step_counts(cfg: DictConfig) -> tuple[int, int]:
    """(warm-up steps, timed steps) for this config."""
    steps = cfg.bench.steps
    if steps is None:
        limit = cfg.trainer.limit_train_batches
        steps = int(limit) if isinstance(limit, int) and limit > 0 else 20
    return max(1, min(int(cfg.bench.warmup_steps), int(steps))), int(steps)


class StepTimer(Callback):
    """Times training steps after a warm-up (synchronising the device at both ends) and counts images."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device = warmup, device
        self.start, self.end, self.images = None, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()
        if trainer.global_step >= self.warmup:
            self.images += int(batch["index"].numel())

    def on_train_end(self, trainer, module) -> None:
        synchronize(self.device)
        self.end = time.perf_counter()

    def images_per_s(self) -> float:
        return self.images / (self.end - self.start)


def plain_loop_images_per_s(
    cfg: DictConfig,
    net: torch.nn.Module,
    weights: torch.Tensor,
    device: torch.device,
    precision: str,
    channels_last: bool,
    warmup: int,
    steps: int,
) -> float:
    """A plain PyTorch training loop on random device-resident data: the reference for ratio_vs_plain."""
    batch, (height, width) = int(cfg.data.batch_size), list(cfg.data.image_size)
    net = net.to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    step_net = torch.compile(net) if cfg.model.compile else net
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss(weight=weights.to(device), ignore_index=255)
    images = torch.randn(batch, 3, height, width, device=device).contiguous(memory_format=memory_format)
    target = torch.randint(0, len(weights), (batch, height, width), device=device)
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        with autocast_for(precision, device):
            loss = criterion(step_net(images).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def _base_record(name: str, cfg: DictConfig, device: torch.device, precision: str, batch: int) -> dict:
    return {
        "name": name,
        "model": cfg.model.name,
        "device": device_name(device),
        "precision": precision,
        "batch_size": batch,
        "image_size": list(cfg.data.image_size),
        "compile": bool(cfg.model.compile),
        "channels_last": channels_last_for(cfg),
    }


def measure_train_step(cfg: DictConfig, device: torch.device) -> dict:
    """Real training step (Lightning + data + augmentation + loss) vs a plain loop, same process and settings."""
    warmup, steps = step_counts(cfg)
    precision = resolve_precision(cfg.trainer)
    datamodule = BloodSmearDataModule(cfg.data, seed=cfg.seed)
    datamodule.setup()
    weights = class_weights(cfg.loss.class_weighting, *datamodule.class_pixel_counts())
    module = build_module(cfg, datamodule, weights)
    flops = (
        forward_flops(module.net, list(cfg.data.image_size), torch.device("cpu"))
        if device.type == "cpu"
        else None
    )
    timer = StepTimer(warmup, device)
    batches_per_epoch = math.ceil(
        len(datamodule.split["train"]) * (cfg.data.augment_copies + 1) / cfg.data.batch_size
    )
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(
            cfg,
            Path(scratch),
            loggers=[],
            callbacks=[timer],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            max_steps=warmup + steps,
            max_epochs=math.ceil((warmup + steps) / batches_per_epoch) + 1,
            limit_train_batches=1.0,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        reset_peak_memory(device)
        trainer.fit(module, datamodule=datamodule)
    ours = timer.images_per_s()
    peak = peak_memory_gib(device)
    if flops is None:
        flops = forward_flops(module.net.to(device), list(cfg.data.image_size), device)
    plain_net = build_model(cfg.model, datamodule.num_classes)
    plain = plain_loop_images_per_s(
        cfg, plain_net, weights, device, precision, channels_last_for(cfg), warmup, steps
    )
    record = _base_record("train_step", cfg, device, precision, int(cfg.data.batch_size))
    record.update(
        images_per_s=_significant(ours),
        plain_loop_images_per_s=_significant(plain),
        ratio_vs_plain=round(ours / plain, 3),
        peak_mem_gib=peak,
        warmup_steps=warmup,
        steps=steps,
    )
    record.update(_flop_fields(3 * flops, ours, device))
    return record


def _flop_fields(flops_per_image: float, images_per_s: float, device: torch.device) -> dict:
    tflops = flops_per_image * images_per_s / 1e12
    peak = peak_flops(device)
    return {  # significant digits, not decimals: a CPU's 0.0115 TFLOP/s must not read as 0.012
        "gflop_per_image": _significant(flops_per_image / 1e9),
        "tflops": _significant(tflops),
        "mfu": round(tflops * 1e12 / peak, 4) if peak else None,
    }


def _inference_setup(cfg: DictConfig, device: torch.device):
    datamodule = BloodSmearDataModule(cfg.data, seed=cfg.seed)
    datamodule.setup()
    module = build_module(cfg, datamodule, torch.ones(datamodule.num_classes)).to(device).eval()
    module.configure_model()
    test = datamodule.splits["test"] if datamodule.split["test"] else datamodule.splits["train"]
    batch = int(cfg.bench.inference_batch_size)
    rows = torch.arange(batch) % len(test.images)
    return module, test.images[rows].to(device), test.masks[rows].to(device).long(), datamodule.num_classes


def _timed_loop(fn, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    return time.perf_counter() - start


def measure_inference(cfg: DictConfig, device: torch.device, with_metrics: bool = False) -> dict:
    """The predict path on uint8 batches (normalise, network, argmax); with_metrics adds every metric."""
    warmup, steps = step_counts(cfg)
    precision = resolve_precision(cfg.trainer)
    module, images, masks, classes = _inference_setup(cfg, device)
    metrics = SegmentationMetrics(classes, cfg.evaluation.bf_tolerance).to(device)
    index = torch.arange(len(images), device=device)

    def infer():
        with torch.inference_mode(), autocast_for(precision, device):
            preds = module(images).argmax(1)
        if with_metrics:
            metrics.update(preds, masks, index)
        return preds

    reset_peak_memory(device)
    seconds = _timed_loop(infer, device, warmup, steps)
    if with_metrics:
        start = time.perf_counter()
        metrics.compute()
        synchronize(device)
        seconds += time.perf_counter() - start
    ips = len(images) * steps / seconds
    record = _base_record("evaluation" if with_metrics else "inference", cfg, device, precision, len(images))
    record.update(
        images_per_s=_significant(ips), peak_mem_gib=peak_memory_gib(device), warmup_steps=warmup, steps=steps
    )
    record.update(_flop_fields(forward_flops(module.net, list(cfg.data.image_size), device), ips, device))
    return record


def measure_evaluation(cfg: DictConfig, device: torch.device) -> dict:
    """Inference plus all metrics, and its overhead over plain inference measured right after."""
    record = measure_inference(cfg, device, with_metrics=True)
    plain = measure_inference(cfg, device, with_metrics=False)["images_per_s"]
    record.update(
        inference_images_per_s=plain, overhead_vs_inference=round(plain / record["images_per_s"] - 1, 4)
    )
    return record


MEASUREMENTS = {
    "train_step": measure_train_step,
    "inference": measure_inference,
    "evaluation": measure_evaluation,
    "bf_score": measure_bf_score,
}


def model_configs(cfg: DictConfig) -> list[DictConfig]:
    """The bench config once per model of bench.models (re-composed with the same overrides)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    if list(cfg.bench.models) in ([], [cfg.model.name]) or not HydraConfig.initialized():
        return [cfg]
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("model=", "bench.models"))]
    configs = []
    for name in cfg.bench.models:
        if not (Path(CONF_DIR) / "model" / f"{name}.yaml").exists():
            raise BloodsegError(f"bench.models has {name}, which is no model option (see conf/model/)")
        configs.append(compose(config_name="bench", overrides=[*overrides, f"model={name}"]))
    return configs


def run_bench(cfg: DictConfig) -> list[dict]:
    """Run every configured measurement and print each as a JSON line."""
    check_config(cfg)
    unknown = [m for m in cfg.bench.measurements if m not in MEASUREMENTS]
    if unknown:
        raise BloodsegError(f"bench.measurements has unknown {unknown}; known: {sorted(MEASUREMENTS)}")
    device = bench_device(cfg)
    records = []
    for name in cfg.bench.measurements:
        for model_cfg in model_configs(cfg) if name != "bf_score" else [cfg]:
            torch.manual_seed(cfg.seed)
            with open_dict(model_cfg):  # throughput does not depend on the initial weights: never fetch any
                model_cfg.model = without_pretrained_weights(model_cfg.model)
            records.append(emit(MEASUREMENTS[name](model_cfg, device)))
    return records


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    try:
        run_bench(cfg)
    except BloodsegError as error:
        log.error("%s", error)
        sys.exit(2)


def cli() -> None:
    """``bloodseg-bench`` / ``python -m bloodseg.bench``: the command line checked, then the Hydra app."""
    check_command_line(sys.argv[1:], "bench", "")
    main()


if __name__ == "__main__":
    cli()
