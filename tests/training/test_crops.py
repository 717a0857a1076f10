"""Random crops at native scale and the optional rotation / zoom / colour jitter of augmented copies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SMOKE, compose_train
from omegaconf import OmegaConf
from torchvision import tv_tensors

from bloodseg.data.datamodule import BloodSmearDataModule, check_crop_size, extra_augmentation
from bloodseg.data.datasets import FivefoldTrainSet
from bloodseg.data.transforms import ExtraAugmentation, Recolor, RotateScale, flip_shift_batch
from bloodseg.errors import BloodsegError
from bloodseg.training.run import train


def coded_images(n=3, h=40, w=48):
    """Images whose every pixel holds its own (image, y, x) code, so a crop's position can be read back."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    images = torch.stack([torch.stack([ys, xs, torch.full_like(ys, i)]) for i in range(n)]).to(torch.uint8)
    masks = ((ys + xs) % 3).to(torch.uint8).expand(n, h, w).clone()
    return images, masks


def test_crops_of_the_original_copy_are_windows_of_the_image():
    images, masks = coded_images()
    dataset = FivefoldTrainSet(
        images, masks, copies=0, max_translation=0, hflip=False, vflip=False, seed=3, crop_size=[32, 36]
    )
    for index in range(len(dataset)):
        sample = dataset[(index, 5)]
        top, left = int(sample["image"][0, 0, 0]), int(sample["image"][1, 0, 0])
        assert sample["image"].shape == (3, 32, 36) and sample["mask"].shape == (32, 36)
        assert torch.equal(sample["image"], images[index][:, top : top + 32, left : left + 36])
        assert torch.equal(sample["mask"], masks[index][top : top + 32, left : left + 36])


def test_crop_windows_cover_every_position_and_repeat_under_the_seed():
    images, masks = coded_images(n=1, h=36, w=35)
    dataset = FivefoldTrainSet(images, masks, 0, 0, False, False, seed=11, crop_size=[32, 32])
    corner = lambda s: (int(s["image"][0, 0, 0]), int(s["image"][1, 0, 0]))  # noqa: E731
    seen = {corner(dataset[(0, epoch)]) for epoch in range(400)}
    assert seen == {(top, left) for top in range(5) for left in range(4)}  # 5 x 4 positions, all drawn
    again = FivefoldTrainSet(images, masks, 0, 0, False, False, seed=11, crop_size=[32, 32])
    assert [corner(dataset[(0, e)]) for e in range(20)] == [corner(again[(0, e)]) for e in range(20)]
    other = FivefoldTrainSet(images, masks, 0, 0, False, False, seed=12, crop_size=[32, 32])
    assert [corner(dataset[(0, e)]) for e in range(20)] != [corner(other[(0, e)]) for e in range(20)]


def test_crops_leave_the_reflection_and_translation_draws_unchanged():
    """Adding crops changes no augmentation: the crop of an augmented copy is a window of the uncropped copy."""
    images, masks = coded_images()
    whole = FivefoldTrainSet(images, masks, 4, 10, True, True, seed=5)
    cropped = FivefoldTrainSet(images, masks, 4, 10, True, True, seed=5, crop_size=[32, 40])
    for index in range(len(whole)):
        a, b = whole[(index, 1)], cropped[(index, 1)]
        windows = a["image"].unfold(1, 32, 1).unfold(2, 40, 1)  # (3, nh, nw, 32, 40)
        hits = (windows == b["image"][:, None, None]).flatten(3).all(-1).all(0)
        top, left = (int(v) for v in hits.nonzero()[0])
        assert torch.equal(b["mask"], a["mask"][top : top + 32, left : left + 40])


def test_device_side_crops_equal_the_loader_crops():
    images, masks = coded_images()
    full = FivefoldTrainSet(images, masks, 4, 10, True, True, seed=5, crop_size=[32, 36])
    light = FivefoldTrainSet(images, masks, 4, 10, True, True, seed=5, on_device=True, crop_size=[32, 36])
    for index in range(len(full)):
        a, b = full[(index, 2)], light[(index, 2)]
        keys = ("hflip", "vflip", "dx", "dy", "top", "left")
        image, mask = flip_shift_batch(
            images[b["index"]][None], masks[b["index"]][None], *(b[k][None] for k in keys), [32, 36]
        )
        assert torch.equal(image[0], a["image"]) and torch.equal(mask[0], a["mask"])


def test_quarter_turn_rotation_is_exact_and_keeps_labels_aligned():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (3, 33, 33), dtype=np.uint8))
    mask = torch.from_numpy(rng.integers(0, 3, (33, 33), dtype=np.uint8))
    out_image, out_mask = RotateScale(angle=90.0)(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert torch.equal(out_mask, torch.rot90(mask, -1, (0, 1)))  # clockwise
    assert torch.equal(out_image, torch.rot90(image, -1, (1, 2)))


def test_zooming_out_ignores_the_uncovered_border_and_zooming_in_covers_everything():
    mask = torch.ones(40, 40, dtype=torch.uint8)
    image = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    _, smaller = RotateScale(scale=0.5)(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert set(smaller.unique().tolist()) == {1, 255} and smaller[0, 0] == 255 and smaller[20, 20] == 1
    assert int((smaller == 1).sum()) == pytest.approx(400, abs=45)  # a 20x20 square
    _, larger = RotateScale(scale=1.5)(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert bool((larger == 1).all())


def test_recolor_changes_images_only():
    image = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    mask = torch.randint(0, 3, (8, 8), dtype=torch.uint8)
    same_image, same_mask = Recolor()(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert torch.equal(same_image, image) and torch.equal(same_mask, mask)
    darker, kept = Recolor(brightness=0.5)(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert bool((darker == 50).all()) and torch.equal(kept, mask)


def test_extra_augmentation_draws_stay_in_their_ranges_and_touch_augmented_copies_only():
    extra = ExtraAugmentation(rotation=30.0, scale_range=(0.8, 1.25), color_jitter=0.2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        rotate, recolor = extra.draw(generator)
        assert -30 <= rotate.angle <= 30 and 0.8 <= rotate.scale <= 1.25
        assert all(0.8 <= f <= 1.2 for f in (recolor.brightness, recolor.contrast, recolor.saturation))
    images, masks = coded_images()
    plain = FivefoldTrainSet(images, masks, 2, 0, False, False, seed=1)
    augmented = FivefoldTrainSet(images, masks, 2, 0, False, False, seed=1, extra=extra)
    assert torch.equal(plain[(0, 0)]["image"], augmented[(0, 0)]["image"])  # copy 0: the original
    assert not torch.equal(plain[(1, 0)]["image"], augmented[(1, 0)]["image"])


def test_bad_crop_and_augmentation_settings_name_their_key():
    with pytest.raises(BloodsegError, match=r"data.crop_size=\[400, 64\].*data.image_size"):
        check_crop_size([400, 64], [300, 300])
    with pytest.raises(BloodsegError, match="data.crop_size"):
        check_crop_size([16, 16], [300, 300])
    assert check_crop_size(None, [300, 300]) is None
    for value in ([1.2, 0.8], [0.0, 1.0], [1.0]):
        with pytest.raises(BloodsegError, match=r"data.scale_range=.*0 < low <= high"):
            extra_augmentation(OmegaConf.create({"scale_range": value}))
    with pytest.raises(BloodsegError, match="augment_on_device=false"):
        FivefoldTrainSet(
            *coded_images(),
            4,
            0,
            False,
            False,
            seed=0,
            on_device=True,
            extra=ExtraAugmentation(rotation=10.0),
        )


def test_crop_training_scores_whole_images(tmp_path):
    """Training on 64x64 windows with every extra augmentation on; the test pass scores whole images."""
    cfg = compose_train(
        [
            *SMOKE,
            "data.image_size=[96,128]",
            "data.crop_size=[64,64]",
            "data.rotation=20",
            "data.scale_range=[0.9,1.1]",
            "data.color_jitter=0.1",
            "callbacks.progress_bar=none",
            "logger=csv",
        ]
    )
    datamodule = BloodSmearDataModule(cfg.data, seed=1)
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    assert tuple(batch["image"].shape[-2:]) == (64, 64) and tuple(batch["mask"].shape[-2:]) == (64, 64)
    assert tuple(next(iter(datamodule.test_dataloader()))["image"].shape[-2:]) == (96, 128)
    train(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["dataset"]["mean_iou"] <= 1
    meta = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["bloodseg"]
    assert meta["image_size"] == [96, 128] and meta["config"]["data"]["crop_size"] == [64, 64]
