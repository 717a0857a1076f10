"""The synthetic smear generator: seeded, realistic colour statistics, exact labels, cached once."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bloodseg.data.synthetic import BACKGROUND, RBC, WBC, generate_smear, synthetic_dataset_dir


@pytest.fixture(scope="module")
def smears():
    return [generate_smear(seed, 360, 480) for seed in range(12)]


def test_same_seed_same_smear_and_different_seeds_differ():
    a, b, c = generate_smear(5, 100, 120), generate_smear(5, 100, 120), generate_smear(6, 100, 120)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_labels_and_shapes(smears):
    for image, label, spec in smears:
        assert image.shape == (360, 480, 3) and image.dtype == np.uint8 and label.shape == (360, 480)
        assert set(np.unique(label)) <= {BACKGROUND, RBC, WBC, 255}
        assert (label == RBC).mean() > 0.1 and (label == BACKGROUND).mean() > 0.25
        assert ((label == WBC).sum() > 0) == (spec.num_wbc > 0)
    assert sum(spec.num_wbc > 0 for _, _, spec in smears) >= 9
    assert sum((label == 255).any() for _, label, _ in smears) >= 4  # unlabelled pockets, like the paper's


def test_colours_look_like_a_stained_smear(smears):
    for image, label, _ in smears:
        rgb = image.astype(float)
        background, rbc = rgb[label == BACKGROUND], rgb[label == RBC]
        assert background.mean() > rbc.mean()  # pale background, darker cells
        assert rbc[:, 0].mean() > rbc[:, 1].mean() + 20  # red cells are pink/red
        assert background.std(0).mean() > 2  # noise and uneven light, not flat
        if (label == WBC).any():
            wbc = rgb[label == WBC]
            assert wbc.mean() < rbc.mean() and wbc[:, 2].mean() > wbc[:, 1].mean()  # dark violet/purple


def test_red_cells_have_a_pale_centre():
    image, label, _ = generate_smear(3, 360, 480)
    from scipy import ndimage

    inside = ndimage.distance_transform_edt(label == RBC)
    rgb = image.astype(float).sum(2)
    rim = rgb[(inside > 1) & (inside <= 4)].mean()
    centre = rgb[inside > 12].mean()
    assert centre > rim


def test_dataset_is_generated_once_and_reused(tmp_path):
    first = synthetic_dataset_dir(tmp_path, 4, 0, [60, 80], [90, 100])
    images = sorted((first / "images").iterdir())
    labels = sorted((first / "labels").iterdir())
    assert len(images) == 4 and len(labels) == 4 and (first / "COMPLETE").exists()
    sizes = {Image.open(p).size for p in images}
    assert all(80 <= w <= 100 and 60 <= h <= 90 for w, h in sizes)
    stamp = images[0].stat().st_mtime_ns
    again = synthetic_dataset_dir(tmp_path, 4, 0, [60, 80], [90, 100])
    assert again == first and images[0].stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no staging folders left behind


def test_an_incomplete_cache_folder_is_replaced(tmp_path):
    target = synthetic_dataset_dir(tmp_path, 2, 1, [50, 50], [60, 60])
    (target / "COMPLETE").unlink()
    (target / "images" / "smear_000.png").unlink()
    again = synthetic_dataset_dir(tmp_path, 2, 1, [50, 50], [60, 60])
    assert (again / "images" / "smear_000.png").exists() and (again / "COMPLETE").exists()
