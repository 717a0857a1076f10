"""The seeded train/val/test split of a dataset's image ids, and its split.json file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bloodseg.errors import BloodsegError
from bloodseg.files import write_json_atomically

SPLITS = ("train", "val", "test")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def make_split(ids: list[str], test_fraction: float, val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Shuffle ids with the seed; the first round(N*test_fraction) are test, then val is carved from the rest.

    42 images with test_fraction 0.3 give the paper's 29 train / 13 test.
    """
    for key, value in (("data.test_fraction", test_fraction), ("data.val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise BloodsegError(f"{key}={value} must be in [0, 1)")
    ordered = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in order]
    n_test = _round_half_up(len(ids) * test_fraction)
    rest = shuffled[n_test:]
    n_val = _round_half_up(len(rest) * val_fraction)
    split = {"train": sorted(rest[n_val:]), "val": sorted(rest[:n_val]), "test": sorted(shuffled[:n_test])}
    for name, fraction in (("train", None), ("test", test_fraction), ("val", val_fraction)):
        if not split[name] and (fraction is None or fraction > 0):
            raise BloodsegError(
                f"the {name} split of {len(ids)} image(s) is empty (test_fraction={test_fraction}, "
                f"val_fraction={val_fraction}); fix: add images or change the fractions"
            )
    return split


def published_split(pairs) -> dict[str, list[str]] | None:
    """The split a data set publishes (its train/ and val/ folders), or None when it has none.

    The val fields are both the validation and the test split: such sets publish no test split, so
    the scores a run reports are those of val/, and a recipe must not be tuned on them.
    """
    groups = [getattr(p, "group", None) for p in pairs]
    if not any(groups):
        return None
    train = sorted(p.id for p in pairs if p.group == "train")
    val = sorted(p.id for p in pairs if p.group == "val")
    return {"train": train, "val": val, "test": list(val)}


def write_split(path: Path, split: dict[str, list[str]], **info) -> None:
    """Write split.json: the ids per split plus how they were drawn."""
    write_json_atomically(path, {**info, **{k: split[k] for k in SPLITS}})


def check_split(split: dict, known_ids: list[str], where: str) -> dict[str, list[str]]:
    """The train/val/test lists of split, checked: every id must exist in the dataset."""
    split = {k: list(split.get(k, [])) for k in SPLITS}
    missing = sorted(set(sum(split.values(), [])) - set(known_ids))
    if missing:
        raise BloodsegError(
            f"{where} names {len(missing)} image(s) the dataset lacks ({', '.join(missing[:5])}); "
            "fix: use the data config the split was made with"
        )
    if not split["train"] and not split["test"]:
        raise BloodsegError(f"{where} has empty train and test lists")
    return split


def read_split(path: Path, known_ids: list[str]) -> dict[str, list[str]]:
    """Read a split.json and check that every id in it exists in the dataset."""
    try:
        content = json.loads(Path(path).read_text())
        if not isinstance(content, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise BloodsegError(f"cannot read split file {path}: {error}") from None
    return check_split(content, known_ids, f"split file {path}")
