"""Fivefold training set and the reflection + translation augmentation (image and mask together)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from bloodseg.data.datasets import FivefoldTrainSet, augmentation_generator
from bloodseg.data.transforms import FlipShift, flip_shift_batch, random_flip_shift, resize_pair


def reference_flip_shift(array: np.ndarray, hflip: bool, vflip: bool, dx: int, dy: int, fill) -> np.ndarray:
    """Independent numpy reference: flips, then a whole-pixel shift with fill."""
    out = array[..., ::-1] if hflip else array
    out = out[..., ::-1, :] if vflip else out
    shifted = np.full_like(out, fill)
    h, w = out.shape[-2:]
    src_y, dst_y = slice(max(-dy, 0), h - max(dy, 0)), slice(max(dy, 0), h - max(-dy, 0))
    src_x, dst_x = slice(max(-dx, 0), w - max(dx, 0)), slice(max(dx, 0), w - max(-dx, 0))
    shifted[..., dst_y, dst_x] = out[..., src_y, src_x]
    return shifted


@pytest.mark.parametrize(
    "params",
    [
        (False, False, 0, 0),
        (True, False, 0, 0),
        (False, True, 3, -7),
        (True, True, -10, 10),
        (True, False, 10, -10),
        (False, False, -1, 0),
    ],
)
def test_flip_shift_matches_numpy_reference(params):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 23, 31), dtype=np.uint8)
    mask = rng.integers(0, 3, (23, 31), dtype=np.uint8)
    out_image, out_mask = FlipShift(*params)(
        tv_tensors.Image(torch.from_numpy(image)), tv_tensors.Mask(torch.from_numpy(mask))
    )
    assert isinstance(out_image, tv_tensors.Image) and isinstance(out_mask, tv_tensors.Mask)
    np.testing.assert_array_equal(out_image.numpy(), reference_flip_shift(image, *params, fill=0))
    np.testing.assert_array_equal(out_mask.numpy(), reference_flip_shift(mask, *params, fill=255))


def colour_coded_pair(rng, h=40, w=52):
    """An image whose mask is a function of its own pixel colours, so misalignment is detectable."""
    image = rng.integers(1, 256, (3, h, w), dtype=np.uint8)
    mask = (image[0].astype(int) + 2 * image[1]) % 3
    return torch.from_numpy(image), torch.from_numpy(mask.astype(np.uint8))


def test_every_sample_stays_aligned_and_translated_in_pixels_are_ignored():
    rng = np.random.default_rng(1)
    pairs = [colour_coded_pair(rng) for _ in range(3)]
    images = torch.stack([p[0] for p in pairs])
    masks = torch.stack([p[1] for p in pairs])
    dataset = FivefoldTrainSet(images, masks, copies=4, max_translation=10, hflip=True, vflip=True, seed=7)
    seen_fill = False
    for epoch in range(4):
        for index in range(len(dataset)):
            item = dataset[(index, epoch)]
            image, mask = item["image"].numpy(), item["mask"].numpy()
            filled = mask == 255
            expected = (image[0].astype(int) + 2 * image[1]) % 3
            assert np.array_equal(mask[~filled], expected[~filled])
            assert (image[:, filled] == 0).all()
            seen_fill |= bool(filled.any())
            if index % 5 == 0:  # copy 0 is the untouched original
                assert torch.equal(item["image"], images[index // 5]) and torch.equal(
                    item["mask"], masks[index // 5]
                )
    assert seen_fill


def test_fivefold_length_is_145_for_29_images():
    dataset = FivefoldTrainSet(
        torch.zeros(29, 3, 8, 8, dtype=torch.uint8),
        torch.zeros(29, 8, 8, dtype=torch.uint8),
        copies=4,
        max_translation=10,
        hflip=True,
        vflip=False,
        seed=0,
    )
    assert len(dataset) == 145
    assert [int(dataset[(i, 0)]["index"]) for i in (0, 4, 5, 144)] == [0, 0, 1, 28]


def test_augmentation_depends_only_on_seed_epoch_and_index():
    draw = lambda s, e, i: random_flip_shift(augmentation_generator(s, e, i), 10, True, False).make_params([])  # noqa: E731
    assert draw(1, 2, 3) == draw(1, 2, 3)
    draws = {tuple(draw(0, e, i).values()) for e in range(5) for i in range(20)}
    assert len(draws) > 50  # varied across epochs and samples


def test_random_augmentation_covers_the_paper_range():
    g = torch.Generator().manual_seed(0)
    params = [random_flip_shift(g, 10, True, False).make_params([]) for _ in range(2000)]
    dx = [p["dx"] for p in params]
    dy = [p["dy"] for p in params]
    assert min(dx) == -10 and max(dx) == 10 and min(dy) == -10 and max(dy) == 10
    assert 0.45 < np.mean([p["hflip"] for p in params]) < 0.55
    assert not any(p["vflip"] for p in params)


def test_resize_is_bilinear_for_images_and_nearest_for_masks():
    mask = torch.zeros(20, 30, dtype=torch.uint8)
    mask[:, 15:] = 2
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    image[:, :, 15:] = 200
    big_image, big_mask = resize_pair(image, mask, [40, 60])
    assert big_image.shape == (3, 40, 60) and big_mask.shape == (40, 60)
    assert set(big_mask.unique().tolist()) == {0, 2}  # no interpolated label values
    assert ((big_image > 0) & (big_image < 200)).any()  # smooth image edge
    assert torch.equal(big_mask[:, :30], torch.zeros(40, 30, dtype=torch.uint8))


def test_batched_device_augmentation_equals_flip_shift_per_sample():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (24, 3, 29, 37), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, 3, (24, 29, 37), dtype=torch.uint8, generator=g)
    hflip, vflip = torch.rand(24, generator=g) < 0.5, torch.rand(24, generator=g) < 0.5
    dx, dy = torch.randint(-12, 13, (24,), generator=g), torch.randint(-12, 13, (24,), generator=g)
    out_images, out_masks = flip_shift_batch(images, masks, hflip, vflip, dx, dy)
    for b in range(24):
        ref_image, ref_mask = FlipShift(bool(hflip[b]), bool(vflip[b]), int(dx[b]), int(dy[b]))(
            tv_tensors.Image(images[b]), tv_tensors.Mask(masks[b])
        )
        assert torch.equal(out_images[b], ref_image) and torch.equal(out_masks[b], ref_mask)


def test_index_only_samples_carry_the_same_augmentation():
    images = torch.randint(0, 256, (3, 3, 20, 24), dtype=torch.uint8)
    masks = torch.randint(0, 3, (3, 20, 24), dtype=torch.uint8)
    full = FivefoldTrainSet(images, masks, 4, 10, True, True, seed=5)
    light = FivefoldTrainSet(images, masks, 4, 10, True, True, seed=5, on_device=True)
    for index in range(len(full)):
        a, b = full[(index, 2)], light[(index, 2)]
        assert "image" not in b
        image, mask = flip_shift_batch(
            images[b["index"]][None],
            masks[b["index"]][None],
            b["hflip"][None],
            b["vflip"][None],
            b["dx"][None],
            b["dy"][None],
        )
        assert torch.equal(image[0], a["image"]) and torch.equal(mask[0], a["mask"])
