"""The seeded 70/30 split and split.json."""

from __future__ import annotations

import json

import pytest

from bloodseg.data.split import make_split, read_split, write_split
from bloodseg.errors import BloodsegError

IDS = [f"img_{i:02d}" for i in range(42)]


def test_paper_counts_29_train_13_test():
    split = make_split(IDS, 0.3, 0.0, seed=42)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (29, 0, 13)


def test_cellavision_counts_70_30():
    split = make_split([f"{i:03d}" for i in range(100)], 0.3, 0.0, seed=1)
    assert (len(split["train"]), len(split["test"])) == (70, 30)


@pytest.mark.parametrize("seed", [0, 1, 42, 1234])
def test_split_is_a_partition_and_deterministic(seed):
    a = make_split(IDS, 0.3, 0.2, seed)
    b = make_split(list(reversed(IDS)), 0.3, 0.2, seed)  # input order does not matter
    assert a == b
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(IDS)
    assert (
        not set(a["train"]) & set(a["test"])
        and not set(a["val"]) & set(a["test"])
        and not set(a["train"]) & set(a["val"])
    )
    assert len(a["val"]) == round(29 * 0.2)


def test_different_seeds_give_different_splits():
    assert make_split(IDS, 0.3, 0.0, 1)["test"] != make_split(IDS, 0.3, 0.0, 2)["test"]


@pytest.mark.parametrize(
    ("n", "test_fraction", "val_fraction"), [(1, 0.3, 0.0), (0, 0.3, 0.0), (3, 0.3, 0.9)]
)
def test_empty_split_is_a_clear_error(n, test_fraction, val_fraction):
    with pytest.raises(BloodsegError, match="split of"):
        make_split([f"x{i}" for i in range(n)], test_fraction, val_fraction, 0)


def test_fraction_out_of_range_names_the_key():
    with pytest.raises(BloodsegError, match="data.test_fraction"):
        make_split(IDS, 1.5, 0.0, 0)


def test_split_json_round_trip_and_unknown_ids(tmp_path):
    split = make_split(IDS, 0.3, 0.0, 3)
    path = tmp_path / "split.json"
    write_split(path, split, seed=3)
    assert json.loads(path.read_text())["seed"] == 3
    assert read_split(path, IDS) == split
    with pytest.raises(BloodsegError, match="lacks"):
        read_split(path, IDS[:10])
    path.write_text("{not json")
    with pytest.raises(BloodsegError, match="cannot read split file"):
        read_split(path, IDS)
