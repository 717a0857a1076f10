"""In-memory datasets (uint8 tensors decoded once) and the samplers that shard them across devices."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from bloodseg.data.transforms import ExtraAugmentation, FlipShift, random_crop, random_flip_shift
from bloodseg.errors import BloodsegError

CROP_STREAM = 1  # the crop windows' own random stream, so adding crops changes no other draw


def augmentation_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch, sample index, stream): runs and resumed runs draw the same."""
    entropy = [seed, epoch, index] + ([stream] if stream else [])
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


class EvalSet(Dataset):
    """Images and masks of one split, unchanged; items are dicts with image, mask and index."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index = key[0] if isinstance(key, tuple) else int(key)
        return {"image": self.images[index], "mask": self.masks[index], "index": torch.tensor(index)}


class FivefoldTrainSet(Dataset):
    """Each training image once unchanged and `copies` times augmented per epoch (paper: 29 -> 145).

    Sample ``i`` is copy ``i % (copies + 1)`` of image ``i // (copies + 1)``; copy 0 is the original.
    Augmented copies are reflected and translated, then rotated, zoomed and recoloured when
    ``extra`` asks for it. With ``crop_size`` every sample (copy 0 too) is then a random window of
    that size at native scale. Keys are ``(i, epoch)`` pairs from :class:`EpochShuffle`, so all of
    it depends only on the seed, the epoch and ``i``: the same in every worker, on every rank and
    after resuming.
    """

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        copies: int,
        max_translation: int,
        hflip: bool,
        vflip: bool,
        seed: int,
        on_device: bool = False,
        crop_size: list[int] | None = None,
        extra: ExtraAugmentation | None = None,
    ):
        if copies < 0 or max_translation < 0:
            raise BloodsegError("data.augment_copies and data.max_translation must be >= 0")
        self.images, self.masks = images, masks
        self.copies, self.max_translation, self.hflip, self.vflip = copies, max_translation, hflip, vflip
        self.seed, self.on_device = seed, on_device
        self.crop_size = None if crop_size is None else [int(v) for v in crop_size]
        self.extra = extra or ExtraAugmentation()
        if on_device and self.extra.active:
            raise BloodsegError(
                "data.rotation, data.scale_range and data.color_jitter run in the data loader only; "
                "fix: set data.augment_on_device=false (or null)"
            )

    def __len__(self) -> int:
        return len(self.images) * (self.copies + 1)

    def transforms(self, index: int, epoch: int) -> tuple[int, list[v2.Transform]]:
        """The base image of sample ``index`` and every transform it gets in ``epoch``, in order."""
        base, copy = divmod(index, self.copies + 1)
        steps: list[v2.Transform] = []
        if copy:
            generator = augmentation_generator(self.seed, epoch, index)
            steps.append(random_flip_shift(generator, self.max_translation, self.hflip, self.vflip))
            if self.extra.active:
                steps.extend(self.extra.draw(generator))
        if self.crop_size is not None:
            crops = augmentation_generator(self.seed, epoch, index, CROP_STREAM)
            steps.append(random_crop(crops, list(self.images.shape[-2:]), self.crop_size))
        return base, steps

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, epoch = key if isinstance(key, tuple) else (int(key), 0)
        base, steps = self.transforms(index, epoch)
        if self.on_device:  # only what the GPU needs to gather and augment the batch itself
            params = FlipShift().make_params([])
            for step in steps:
                params.update(step.make_params([]))
            return {"index": torch.tensor(base), **{k: torch.tensor(v) for k, v in params.items()}}
        image, mask = tv_tensors.Image(self.images[base]), tv_tensors.Mask(self.masks[base])
        for step in steps:
            image, mask = step(image, mask)
        return {
            "image": image.as_subclass(torch.Tensor),
            "mask": mask.as_subclass(torch.Tensor),
            "index": torch.tensor(base),
        }


class EpochShuffle(Sampler):
    """Sample keys ``(index, epoch)``: a seeded permutation per epoch (or plain order).

    The epoch comes from ``epoch_source()`` when given (the trainer's fit loop, which is right after
    resuming too), else from the last ``set_epoch`` call.
    """

    def __init__(
        self, num_samples: int, seed: int, shuffle: bool, epoch_source: Callable[[], int] | None = None
    ):
        self.num_samples, self.seed, self.shuffle, self.epoch = num_samples, seed, shuffle, 0
        self.epoch_source = epoch_source

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = int(epoch)

    def current_epoch(self) -> int:
        """The epoch whose order and augmentations this sampler yields now."""
        return int(self.epoch_source()) if self.epoch_source is not None else self.epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.current_epoch()
        if self.shuffle:
            order = torch.randperm(
                self.num_samples, generator=torch.Generator().manual_seed(self.seed + epoch)
            ).tolist()
        else:
            order = list(range(self.num_samples))
        return iter([(i, epoch) for i in order])

    def __len__(self) -> int:
        return self.num_samples


def shard_batches(order: list, batch_size: int, rank: int, world_size: int) -> list[list]:
    """Split one epoch's order into this rank's batches.

    Consecutive global batches of batch_size * world_size are split as evenly as possible across
    ranks; a last global batch too small to give every rank a sample joins the one before. So
    every sample is used exactly once per epoch and (when there are at least world_size samples)
    every rank gets the same number of batches, which DDP's gradient sync needs.
    """
    step = batch_size * world_size
    chunks = [order[i : i + step] for i in range(0, len(order), step)]
    if len(chunks) > 1 and len(chunks[-1]) < world_size:
        last = chunks.pop()
        chunks[-1] = chunks[-1] + last
    batches = []
    for chunk in chunks:
        bounds = np.linspace(0, len(chunk), world_size + 1).round().astype(int)
        mine = chunk[bounds[rank] : bounds[rank + 1]]
        if mine:
            batches.append(mine)
    return batches


class EvenShardBatchSampler(Sampler):
    """Batches for one rank from an :class:`EpochShuffle` (exposed as ``.sampler`` for set_epoch)."""

    def __init__(
        self,
        sampler: EpochShuffle,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        require_every_rank: bool = False,
    ):
        if batch_size < 1:
            raise BloodsegError(f"batch size must be >= 1, got {batch_size}")
        if require_every_rank and sampler.num_samples < world_size:
            raise BloodsegError(
                f"{sampler.num_samples} training samples cannot be shared by {world_size} devices; "
                "fix: use fewer devices or more images"
            )
        self.sampler, self.batch_size, self.rank, self.world_size = sampler, batch_size, rank, world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        keys = list(iter(self.sampler))
        return iter(shard_batches(keys, self.batch_size, self.rank, self.world_size))

    def __len__(self) -> int:
        return len(shard_batches(list(range(len(self.sampler))), self.batch_size, self.rank, self.world_size))
