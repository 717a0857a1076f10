"""Cell counting on label maps with known numbers of cells: isolated, touching and overlapping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bloodseg.data.synthetic import RBC, WBC, generate_smear
from bloodseg.inference.counting import (
    class_counts,
    count_cells,
    count_columns,
    count_row,
    disc_field,
    in_microns,
    label_cells,
)
from bloodseg.metrics.cells import CountSettings, split_cells

RBC_RADIUS, WBC_RADIUS = (16, 24), (30, 45)  # the synthetic smears' cell sizes (pixels)
CLASSES = ["background", "rbc", "wbc"]


def disc(shape, center, radius):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


@pytest.mark.parametrize("spacing", [1.0, 0.8])  # touching; overlapping by 20% of the summed radii
def test_two_touching_or_overlapping_red_cells_count_as_two(spacing):
    mask = disc((80, 120), (40, 40), 18) | disc((80, 120), (40, 40 + spacing * 36), 18)
    assert ndimage.label(mask)[1] == 1  # one blob for connected components
    cells = split_cells(mask)
    assert cells.max() == 2
    assert (cells > 0).sum() == mask.sum()  # the split keeps every pixel of the class


def test_specks_below_the_minimum_area_are_not_cells():
    mask = disc((60, 60), (30, 30), 16)
    mask[2:6, 2:6] = True  # a 16-pixel speck
    assert split_cells(mask, CountSettings(min_area=80)).max() == 1
    assert split_cells(mask, CountSettings(min_area=10)).max() == 2
    assert split_cells(np.zeros((10, 10), bool)).max() == 0


def test_a_red_cell_with_a_pale_centre_missing_is_one_cell():
    ring = disc((80, 80), (40, 40), 20) & ~disc((80, 80), (40, 40), 7)  # the centre taken for background
    assert split_cells(ring).max() == 1


def test_ragged_network_like_edges_do_not_split_or_add_cells():
    labels, known = disc_field(3, (360, 480), RBC_RADIUS, 4, 3, 3)
    noise = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal(labels.shape), 2.0)
    ragged = ndimage.gaussian_filter((labels == 1).astype(np.float32), 2.0) + 0.2 * noise / noise.std() > 0.5
    assert (ragged != (labels == 1)).sum() > 1000  # the edges really moved
    assert split_cells(ragged).max() == known


@pytest.mark.parametrize(
    ("radius", "groups"),
    [
        (RBC_RADIUS, (10, 0, 0)),
        (RBC_RADIUS, (0, 6, 0)),
        (RBC_RADIUS, (0, 0, 6)),
        (RBC_RADIUS, (4, 3, 3)),
        (WBC_RADIUS, (2, 1, 1)),
    ],
    ids=["rbc-isolated", "rbc-touching", "rbc-overlapping", "rbc-mixed", "wbc-mixed"],
)
def test_known_disc_fields_are_counted_exactly(radius, groups):
    errors = []
    for seed in range(6):
        labels, known = disc_field(seed, (360, 480), radius, *groups, overlap=0.2)
        assert known == groups[0] + 2 * (groups[1] + groups[2])  # every group found a place
        errors.append(count_cells(labels, CLASSES[:2])["rbc"]["count"] - known)
    assert errors == [0] * 6


def test_counts_on_synthetic_smears_are_within_the_measured_error():
    """generate_smear: cells cut by the edge, overlaps up to ~28% and unlabelled pockets.

    Measured (seeds 0-19, 360x480, default settings): red cells mean absolute error 0.25 of ~55
    (0.43% relative, at most 2.1% on one field, 15 of 20 fields exact), white cells 0.2 of 1.6 per
    image (18 of 20 exact). The bounds sit just past those figures: a splitting change that costs a
    cell on a quarter of the fields fails.
    """
    rbc_rel, wbc_abs = [], []
    for seed in range(20):
        _, labels, spec = generate_smear(seed, 360, 480)
        counts = count_cells(labels, CLASSES)
        assert counts["rbc"]["area_px"] == int((labels == RBC).sum())
        assert counts["wbc"]["area_px"] == int((labels == WBC).sum())
        rbc_rel.append(abs(counts["rbc"]["count"] - spec.num_rbc) / spec.num_rbc)
        wbc_abs.append(abs(counts["wbc"]["count"] - spec.num_wbc))
    assert np.mean(rbc_rel) < 0.006 and max(rbc_rel) < 0.03 and sum(r == 0 for r in rbc_rel) >= 14
    assert np.mean(wbc_abs) <= 0.25 and sum(a == 0 for a in wbc_abs) >= 17


def test_count_table_columns_follow_the_classes():
    assert count_columns(CLASSES) == ["image", "rbc_count", "rbc_area_px", "wbc_count", "wbc_area_px"]
    labels = np.zeros((60, 60), np.uint8)
    labels[disc((60, 60), (30, 30), 12)] = 2
    counts = count_cells(labels, CLASSES)
    assert counts == {
        "rbc": {"count": 0, "area_px": 0},
        "wbc": {"count": 1, "area_px": int((labels == 2).sum())},
    }
    assert list(count_row("a.png", counts)) == count_columns(CLASSES)


def test_cell_table_rows_match_a_hand_measurement_of_known_discs():
    """Two touching red cells, one lone red cell and one white cell: ids, classes, areas, centroids, flags."""
    shape = (100, 160)
    pair = disc(shape, (30, 30), 14) | disc(shape, (30, 58), 14)  # centres 28 px apart: touching
    lone, white = disc(shape, (75, 40), 12), disc(shape, (60, 120), 20)
    labels = np.zeros(shape, np.uint8)
    labels[pair | lone] = 1
    labels[white] = 2
    instances, cells = label_cells(labels, CLASSES)
    assert [c["cell_id"] for c in cells] == [1, 2, 3, 4] and np.unique(instances).tolist() == [0, 1, 2, 3, 4]
    assert [c["class"] for c in cells] == ["rbc", "rbc", "rbc", "wbc"]
    for cell in cells:  # each row describes exactly the pixels carrying its id
        ys, xs = np.nonzero(instances == cell["cell_id"])
        assert cell["area_px"] == len(ys)
        assert cell["centroid_y"] == pytest.approx(ys.mean(), abs=0.01)
        assert cell["centroid_x"] == pytest.approx(xs.mean(), abs=0.01)
        assert cell["equivalent_diameter_px"] == pytest.approx(np.sqrt(4 * len(ys) / np.pi), abs=0.01)
        assert (labels[ys, xs] == (2 if cell["class"] == "wbc" else 1)).all()
    by_place = {(round(c["centroid_y"] / 10), round(c["centroid_x"] / 10)): c for c in cells}
    assert by_place[(6, 12)]["area_px"] == white.sum() and not by_place[(6, 12)]["touching"]
    assert by_place[(8, 4)]["area_px"] == lone.sum() and not by_place[(8, 4)]["touching"]
    touching = [c for c in cells if c["touching"]]
    assert len(touching) == 2 and sum(c["area_px"] for c in touching) == pair.sum()
    assert class_counts(labels, CLASSES, cells) == count_cells(labels, CLASSES)
    microns = in_microns(cells, 0.2)  # 0.2 um per pixel
    assert microns[3]["area_um2"] == pytest.approx(white.sum() * 0.04, abs=1e-3)
    assert microns[3]["equivalent_diameter_um"] == pytest.approx(
        np.sqrt(4 * white.sum() / np.pi) * 0.2, abs=1e-2
    )


def test_predict_counts_with_the_checkpoints_tuned_settings_unless_told_otherwise():
    from types import SimpleNamespace

    from bloodseg.inference.predict_run import counting_settings

    tuned = {
        "config": {"evaluation": {"instances": {"min_cell_area": 500, "min_distance": 30, "smoothing": 4.0}}}
    }
    unset = SimpleNamespace(min_cell_area=None, min_distance=None, smoothing=None, max_hole_area=None)
    assert counting_settings(unset, tuned) == CountSettings(500, 30, 4.0, 300)  # max_hole_area: the default
    given = SimpleNamespace(min_cell_area=120, min_distance=None, smoothing=0.0, max_hole_area=0)
    assert counting_settings(given, tuned) == CountSettings(120, 30, 0.0, 0)
    assert counting_settings(unset, {"config": {}}) == CountSettings()  # a checkpoint from before the setting


def test_evaluate_resolves_the_cell_splitting_keys_as_predict_does():
    """One rule for both tools: the given value, else the checkpoint's evaluation.instances, else the default."""
    from omegaconf import OmegaConf

    from bloodseg.metrics.instances import InstanceSettings, settings_from_config

    tuned = {"min_cell_area": 500, "min_distance": 30, "smoothing": 4.0, "min_true_area": 50}
    evaluation = OmegaConf.create(
        {"instances": {"enabled": True, "min_true_area": None, "min_cell_area": 120, "min_distance": None,
                       "smoothing": 0.0, "max_hole_area": None}}
    )  # fmt: skip
    assert settings_from_config(evaluation, tuned) == InstanceSettings(50, CountSettings(120, 30, 0.0, 300))
    assert settings_from_config(evaluation) == InstanceSettings(100, CountSettings(120, 8, 0.0, 300))
    evaluation.instances.enabled = False
    assert settings_from_config(evaluation, tuned) is None
