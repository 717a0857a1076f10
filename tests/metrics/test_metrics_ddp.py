"""Multi-process agreement: predictions split across 2 gloo processes give the single-process numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy import ndimage

from bloodseg.metrics.suite import SegmentationMetrics

NUM_IMAGES, CLASSES = 7, 3


def dataset():
    rng = np.random.default_rng(11)
    make = lambda: ndimage.gaussian_filter(rng.standard_normal((CLASSES, 36, 44)), 2.5).argmax(0)  # noqa: E731
    truth = torch.from_numpy(np.stack([make() for _ in range(NUM_IMAGES)]))
    pred = torch.from_numpy(np.stack([make() for _ in range(NUM_IMAGES)]))
    truth[:, :3, :5] = 255
    return pred, truth


def worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    pred, truth = dataset()
    mine = list(range(rank, NUM_IMAGES, world))  # uneven shards: 4 and 3 images, different batch sizes
    metrics = SegmentationMetrics(CLASSES)
    for start in range(0, len(mine), 2 + rank):
        rows = torch.tensor(mine[start : start + 2 + rank])
        metrics.update(pred[rows], truth[rows], rows)
    results = metrics.compute()
    if rank == 0:
        torch.save(results, out_file)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    out_file = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    distributed = torch.load(out_file, weights_only=False)
    pred, truth = dataset()
    single = SegmentationMetrics(CLASSES)
    single.update(pred, truth, torch.arange(NUM_IMAGES))
    expected = single.compute()
    assert set(distributed) == set(expected)
    for key, value in expected.items():
        assert torch.equal(distributed[key].nan_to_num(-1), value.nan_to_num(-1)), key
