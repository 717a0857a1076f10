"""The LightningDataModule: one dataset source, a seeded split, the fivefold training set."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader

from bloodseg.data.datasets import EpochShuffle, EvalSet, EvenShardBatchSampler, FivefoldTrainSet
from bloodseg.data.labels import ClassTable, class_pixel_counts
from bloodseg.data.loading import LoadedImages, describe_stray, load_images
from bloodseg.data.sources import resolve_pairs
from bloodseg.data.split import SPLITS, check_split, make_split, published_split, read_split, write_split
from bloodseg.data.transforms import ExtraAugmentation, flip_shift_batch
from bloodseg.errors import BloodsegError
from bloodseg.files import write_json_atomically

log = logging.getLogger(__name__)


def check_crop_size(crop_size, image_size: list[int]) -> list[int] | None:
    """data.crop_size as [h, w] ints, or None; fails naming the key unless 32 <= h, w <= data.image_size."""
    if crop_size is None:
        return None
    crop = [int(v) for v in crop_size]
    if len(crop) != 2 or min(crop) < 32 or crop[0] > image_size[0] or crop[1] > image_size[1]:
        raise BloodsegError(
            f"data.crop_size={crop} must be [H, W] with 32 <= H <= {image_size[0]} and 32 <= W <= "
            f"{image_size[1]} (data.image_size); fix: a smaller crop, or null to train on whole images"
        )
    return crop


def extra_augmentation(data_cfg) -> ExtraAugmentation:
    """data.rotation, data.scale_range and data.color_jitter; a bad data.scale_range names its key.

    The ranges of data.rotation and data.color_jitter are checked with the whole config, before any
    data is read. The defaults stand in for the keys in the data configs of checkpoints trained
    before these augmentations existed.
    """
    rotation = float(data_cfg.get("rotation", 0.0))
    scale = [float(v) for v in data_cfg.get("scale_range", [1.0, 1.0])]
    jitter = float(data_cfg.get("color_jitter", 0.0))
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise BloodsegError(
            f"data.scale_range={scale} must be [low, high] with 0 < low <= high (1 = no zoom)"
        )
    return ExtraAugmentation(rotation, (scale[0], scale[1]), jitter)


class BloodSmearDataModule(L.LightningDataModule):
    """Loads the configured source once (all splits as uint8 tensors) and serves the loaders."""

    def __init__(
        self, data_cfg, seed: int = 42, split: dict[str, list[str]] | None = None, eval_split: str = "test"
    ):
        """data_cfg: the ``data`` config; split: a fixed split (e.g. a checkpoint's) instead of drawing one;
        eval_split: the split the test loader serves (test, val, train or all)."""
        super().__init__()
        self.cfg = data_cfg
        self.seed = int(seed)
        self.table = ClassTable.from_config(data_cfg.classes)
        size = list(data_cfg.image_size)
        if len(size) != 2 or min(size) < 32:
            raise BloodsegError(f"data.image_size={size} must be [H, W] with both >= 32 (five 2x poolings)")
        self.image_size = [int(s) for s in size]
        self.crop_size = check_crop_size(data_cfg.get("crop_size"), self.image_size)
        self.extra = extra_augmentation(data_cfg)
        self.split: dict[str, list[str]] | None = None
        self.split_is_published = False  # the set's own train/val folders, not a drawn split
        self.given_split = split
        if eval_split not in (*SPLITS, "all"):
            raise BloodsegError(f"split={eval_split} is unknown; use test, val, train or all")
        self.eval_split = eval_split
        self.splits: dict[str, LoadedImages] = {}
        self._train_store: tuple[torch.Tensor, torch.Tensor] | None = None  # device copy (augment_on_device)

    @property
    def num_classes(self) -> int:
        return self.table.num_classes

    def prepare_data(self) -> None:
        """Generate the synthetic set if needed (once, on the main process)."""
        resolve_pairs(self.cfg)

    def setup(self, stage: str | None = None) -> None:
        """Find the files, draw (or read) the split and decode every split once."""
        if self.splits:
            return
        pairs = resolve_pairs(self.cfg)
        ids = [p.id for p in pairs]
        if self.given_split is not None:
            self.split = check_split(self.given_split, ids, "the checkpoint's split")
        elif self.cfg.split_file:
            self.split = read_split(Path(self.cfg.split_file), ids)
        elif published_split(pairs) is not None:
            self.split = published_split(pairs)
        else:
            self.split = make_split(ids, self.cfg.test_fraction, self.cfg.val_fraction, self.cfg.split_seed)
        self.split_is_published = (
            self.given_split is None and not self.cfg.split_file and (published_split(pairs) is not None)
        )
        by_id = {p.id: p for p in pairs}
        if self.eval_split == "all":
            self.split = {**self.split, "all": sorted(ids)}
        decoded: dict[tuple[str, ...], LoadedImages] = {}  # a published val split is also the test split
        for name in self.split:
            ids_of_split = tuple(self.split[name])
            if ids_of_split not in decoded:
                decoded[ids_of_split] = load_images(
                    [by_id[i] for i in ids_of_split], self.table, self.image_size
                )
            self.splits[name] = decoded[ids_of_split]
        stray = {k: v for loaded in self.decoded_sets() for k, v in loaded.stray.items()}
        warning = describe_stray(stray)
        if warning:
            log.warning("data: %s", warning)
        log.info(
            "data: %s, %d train / %d val / %d test images at %dx%d, %d classes (%s)",
            getattr(self.cfg.source, "value", self.cfg.source),
            *(len(self.split[s]) for s in SPLITS),
            *self.image_size,
            self.num_classes,
            ", ".join(self.table.names),
        )

    def decoded_sets(self) -> list[LoadedImages]:
        """Each decoded set once (splits with the same images share one), so pixel totals count each file once."""
        unique = {id(loaded): loaded for loaded in self.splits.values()}
        return list(unique.values())

    def label_report(self) -> dict:
        """Stray and transparent label pixels found while loading, per file."""
        stray = {k: v for loaded in self.decoded_sets() for k, v in loaded.stray.items()}
        return {
            "stray_pixels_total": sum(v["pixels"] for v in stray.values()),
            "stray_files": stray,
            "unlabelled_pixels_total": sum(s.unlabelled_pixels for s in self.decoded_sets()),
            "mask_overlap_pixels_total": sum(s.overlap_pixels for s in self.decoded_sets()),
            "image_conversions": {k: v for s in self.decoded_sets() for k, v in s.conversions.items()},
        }

    def write_split(self, path: Path) -> None:
        """Write split.json (ids per split and how they were drawn)."""
        write_split(
            path,
            self.split,
            published=self.split_is_published,
            seed=int(self.cfg.split_seed),
            test_fraction=float(self.cfg.test_fraction),
            val_fraction=float(self.cfg.val_fraction),
            split_file=self.cfg.split_file,
        )

    def write_label_report(self, path: Path) -> None:
        """Write data_report.json (stray label values per file)."""
        write_json_atomically(path, self.label_report())

    def class_pixel_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Class pixel statistics of the training labels (see losses.class_pixel_counts)."""
        return class_pixel_counts(self.splits["train"].masks, self.num_classes)

    def split_pixel_counts(self) -> dict[str, list[int]]:
        """Labelled pixels of each class (at the training size) in every loaded split."""
        return {
            name: torch.bincount(loaded.masks.flatten().long(), minlength=256)[: self.num_classes].tolist()
            for name, loaded in self.splits.items()
        }

    def class_table(self) -> str:
        """The class table with each class's label encoding and pixel count per split, for the start-up log."""
        counts = self.split_pixel_counts()
        splits = [s for s in counts if self.split.get(s)]
        rows = [["id", "class", "value", "color", *splits]]
        for i, name in enumerate(self.table.names):
            color = self.table.colors[i]
            rows.append(
                [
                    str(i),
                    name,
                    "-" if self.table.values[i] is None else str(self.table.values[i]),
                    "-" if color is None else ",".join(map(str, color)),
                    *[str(counts[s][i]) for s in splits],
                ]
            )
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        return "\n".join(
            ("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))).rstrip()
            for row in rows
        )

    def check_training_classes(self, allow_empty: bool) -> None:
        """Fail when a class has no pixel in the training split (it cannot be learned) unless allowed."""
        train = self.split_pixel_counts()["train"]
        empty = [f"{name} (id {i})" for i, name in enumerate(self.table.names) if train[i] == 0]
        if empty and not allow_empty:
            raise BloodsegError(
                f"class(es) {', '.join(empty)} have no pixel in the training split ({len(self.split['train'])} "
                "images), so they cannot be learned; fix: check each class's value/color in data.classes "
                "against the label files, or set data.allow_empty_classes=true to train without them"
            )
        if empty:
            log.warning(
                "class(es) %s have no training pixel (data.allow_empty_classes=true)", ", ".join(empty)
            )

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset, batch_size: int, shuffle: bool, train: bool) -> DataLoader:
        rank, world_size = self._rank()
        trainer = getattr(self, "trainer", None)
        # The epoch about to run is the fit loop's count of processed epochs: right after resuming from
        # an end-of-epoch checkpoint too, where trainer.current_epoch and set_epoch still say the old one.
        epoch_source = (
            (lambda: trainer.fit_loop.epoch_progress.current.processed) if trainer is not None else None
        )
        sampler = EpochShuffle(len(dataset), self.seed, shuffle, epoch_source)
        batches = EvenShardBatchSampler(sampler, batch_size, rank, world_size, require_every_rank=train)
        light = isinstance(dataset, FivefoldTrainSet) and dataset.on_device  # indices only: no workers needed
        workers = 0 if light else int(self.cfg.num_workers)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def augments_on_device(self) -> bool:
        """Whether training batches carry only indices and augmentation parameters (data.augment_on_device).

        Unset, it is on for CUDA unless rotation, zoom or colour jitter are asked for (the loader does those).
        """
        if self.cfg.augment_on_device is not None:
            return bool(self.cfg.augment_on_device)
        trainer = getattr(self, "trainer", None)
        on_cuda = trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator)
        return on_cuda and not self.extra.active

    def on_after_batch_transfer(
        self, batch: dict[str, torch.Tensor], dataloader_idx: int
    ) -> dict[str, torch.Tensor]:
        """Gather and augment device-resident training images for index-only batches (one gather per batch).

        With data.augment_on_device the training images are copied to the batch's device once, on the
        first such batch; every other batch already carries its images and passes through.
        """
        if "image" in batch:
            return batch
        index = batch["index"]
        if self._train_store is None or self._train_store[0].device != index.device:
            train = self.splits["train"]
            self._train_store = (train.images.to(index.device), train.masks.to(index.device))
        images, masks = self._train_store
        image, mask = flip_shift_batch(
            images[index],
            masks[index],
            batch["hflip"],
            batch["vflip"],
            batch["dx"],
            batch["dy"],
            batch.get("top"),
            batch.get("left"),
            self.crop_size,
        )
        return {"image": image, "mask": mask, "index": index}

    def train_dataloader(self) -> DataLoader:
        train = self.splits["train"]
        dataset = FivefoldTrainSet(
            train.images,
            train.masks,
            int(self.cfg.augment_copies),
            int(self.cfg.max_translation),
            bool(self.cfg.horizontal_flip),
            bool(self.cfg.vertical_flip),
            self.seed,
            on_device=self.augments_on_device(),
            crop_size=self.crop_size,
            extra=self.extra,
        )
        return self._loader(dataset, int(self.cfg.batch_size), shuffle=True, train=True)

    def eval_dataloader(self, split: str) -> DataLoader:
        """An unshuffled loader over the val or test split."""
        loaded = self.splits[split]
        return self._loader(
            EvalSet(loaded.images, loaded.masks), int(self.cfg.eval_batch_size), shuffle=False, train=False
        )

    def val_dataloader(self):
        return self.eval_dataloader("val") if self.split and self.split["val"] else []

    def test_dataloader(self) -> DataLoader:
        if not self.split[self.eval_split]:
            raise BloodsegError(f"the {self.eval_split} split is empty; nothing to evaluate")
        return self.eval_dataloader(self.eval_split)
