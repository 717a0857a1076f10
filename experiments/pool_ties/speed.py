"""What does the tie-robust pooling cost in speed? Classic (tolerance 0) vs tie-robust (0.01) SegNet on the CPU.

Measures process CPU time (not wall time, so other work on the machine distorts it less) on one
thread, the two settings interleaved, and prints one JSON line per measurement with the median
over repeats: a SegNet training step (forward + backward, batch 4) and inference (batch 1), each
at the CPU-sized 64x64 and at the paper's 360x480, and the pooling + unpooling of one stage alone.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/pool_ties/speed.py [REPEATS]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from bloodseg.models import pooling
from bloodseg.models.segnet import SegNet

TOLERANCES = (0.0, 0.01)


def cpu_seconds(step, repeats: int) -> float:
    """Median process CPU time of one call of step, after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return statistics.median(times)


def train_step(net: SegNet, x: torch.Tensor, y: torch.Tensor):
    """Forward, cross entropy, backward."""

    def step():
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()

    return step


def inference(net: SegNet, x: torch.Tensor):
    """Forward without gradients."""

    def step():
        with torch.inference_mode():
            net(x)

    return step


def pool_and_unpool(x: torch.Tensor, tolerance: float):
    """One encoder stage's pooling and its decoder's unpooling."""

    def step():
        with torch.inference_mode():
            pooled, routes = pooling.pool(x, tolerance)
            pooling.unpool(pooled, routes, [x.shape[-2], x.shape[-1]])

    return step


def main(repeats: int) -> None:
    """Print classic vs tie-robust CPU seconds per measurement, and the ratio."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    nets = {t: SegNet(3, pretrained=False, pool_tie_tolerance=t) for t in TOLERANCES}
    nets[0.01].load_state_dict(nets[0.0].state_dict())
    cases = {}
    for size, batch in (((64, 64), 4), ((360, 480), 1)):
        x, y = torch.randn(batch, 3, *size), torch.randint(0, 3, (batch, *size))
        cases[f"train_step batch {batch} {size[0]}x{size[1]}"] = {
            t: train_step(nets[t].train(), x, y) for t in TOLERANCES
        }
        one = x[:1]
        cases[f"inference batch 1 {size[0]}x{size[1]}"] = {t: inference(nets[t], one) for t in TOLERANCES}
    stage = torch.randn(1, 64, 360, 480).relu()  # the first stage's activations at 360x480
    cases["pool+unpool 1x64x360x480"] = {t: pool_and_unpool(stage, t) for t in TOLERANCES}
    for name, steps in cases.items():
        for net in nets.values():
            net.train(name.startswith("train"))
        seconds = {t: [] for t in TOLERANCES}
        for _ in range(3):  # interleave the settings so drifting machine load hits both alike
            for t in TOLERANCES:
                seconds[t].append(cpu_seconds(steps[t], repeats))
        classic, robust = (statistics.median(seconds[t]) for t in TOLERANCES)
        record = {
            "measurement": name,
            "threads": 1,
            "classic_cpu_s": round(classic, 4),
            "tie_robust_cpu_s": round(robust, 4),
            "ratio": round(robust / classic, 3),
            "torch": torch.__version__,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
