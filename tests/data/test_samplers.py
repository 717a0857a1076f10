"""Per-epoch shuffling and exact sharding across devices (no sample duplicated or dropped)."""

from __future__ import annotations

import itertools

import pytest

from bloodseg.data.datasets import EpochShuffle, EvenShardBatchSampler, shard_batches
from bloodseg.errors import BloodsegError

CASES = [
    c for c in itertools.product([1, 2, 7, 13, 29, 145, 150], [1, 2, 4, 8], [1, 2, 3, 4]) if c[0] >= c[2]
]


@pytest.mark.parametrize(("n", "batch_size", "world"), CASES)
def test_every_sample_once_and_equal_batch_counts(n, batch_size, world):
    order = list(range(n))
    per_rank = [shard_batches(order, batch_size, r, world) for r in range(world)]
    used = sorted(x for batches in per_rank for batch in batches for x in batch)
    assert used == order
    assert len({len(b) for b in per_rank}) == 1, "ranks must run the same number of steps"
    assert all(len(batch) >= 1 for batches in per_rank for batch in batches)


def test_single_device_batches_are_plain_consecutive_batches():
    assert shard_batches(list(range(145)), 4, 0, 1) == [
        list(range(i, min(i + 4, 145))) for i in range(0, 145, 4)
    ]


def test_epoch_shuffle_changes_with_epoch_and_is_reproducible():
    sampler = EpochShuffle(50, seed=3, shuffle=True)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(k for k, _ in first) == list(range(50)) and {e for _, e in second} == {1}
    assert [k for k, _ in first] != [k for k, _ in second]
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_batch_sampler_exposes_sampler_for_lightning_set_epoch():
    batches = EvenShardBatchSampler(EpochShuffle(10, 0, True), 4)
    batches.sampler.set_epoch(5)
    assert all(epoch == 5 for batch in batches for _, epoch in batch)
    assert len(batches) == 3


def test_too_few_training_samples_for_the_devices_is_clear():
    with pytest.raises(BloodsegError, match="devices"):
        EvenShardBatchSampler(EpochShuffle(1, 0, True), 4, rank=0, world_size=2, require_every_rank=True)
