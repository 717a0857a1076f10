"""The configuration axes users sweep, exercised together: model family x validation split x optimizer x
class weighting x scheduler.

Every pair of axis values is composed and resolved (cheap); a covering set of six runs, one per model
family, trains for real (two epochs of one tiny batch each) so that every value of every axis is run
at least once through training, validation (when split), test evaluation and the learning-rate schedule.
"""

from __future__ import annotations

import csv
import itertools
import json
import math

import pytest
from conftest import ONE_BATCH, compose_train
from omegaconf import OmegaConf

from bloodseg.training.run import train

EXPERIMENTS = [
    "segnet_vgg16",
    "unet_vgg16",
    "unet_resnet34",
    "fpn_resnet34",
    "deeplabv3plus_resnet34",
    "pspnet_resnet34",
]
VAL = [0.0, 0.2]
OPTIMIZERS = ["sgdm", "adam"]
WEIGHTINGS = ["none", "inverse_frequency", "median_frequency", "enet_log"]
SCHEDULERS = ["none", "step", "cosine", "poly"]
AXES = {
    "experiment": EXPERIMENTS,
    "data.val_fraction": VAL,
    "optimizer": OPTIMIZERS,
    "loss.class_weighting": WEIGHTINGS,
    "scheduler": SCHEDULERS,
}
# one run per model family; together they hold every value of every other axis
COVERING = [
    ("segnet_vgg16", 0.2, "sgdm", "none", "step"),
    ("unet_vgg16", 0.0, "adam", "inverse_frequency", "cosine"),
    ("unet_resnet34", 0.2, "adam", "median_frequency", "poly"),
    ("fpn_resnet34", 0.0, "sgdm", "enet_log", "none"),
    ("deeplabv3plus_resnet34", 0.2, "sgdm", "inverse_frequency", "poly"),
    ("pspnet_resnet34", 0.0, "adam", "none", "cosine"),
]
TINY = [*ONE_BATCH, "trainer.max_epochs=2"]


def overrides(experiment, val, optimizer, weighting, scheduler) -> list[str]:
    """The command-line overrides of one point of the matrix."""
    return [
        f"experiment={experiment}",
        f"data.val_fraction={val}",
        f"optimizer={optimizer}",
        f"loss.class_weighting={weighting}",
        f"scheduler={scheduler}",
    ]


def pairwise_points() -> list[tuple]:
    """Matrix points such that every pair of values of any two axes appears in at least one."""
    names = list(AXES)
    uncovered = {
        (a, va, b, vb) for a, b in itertools.combinations(names, 2) for va in AXES[a] for vb in AXES[b]
    }
    candidates = list(itertools.product(*AXES.values()))

    def pairs(point):
        return {(a, point[i], b, point[j]) for (i, a), (j, b) in itertools.combinations(enumerate(names), 2)}

    points = []
    while uncovered:  # greedy: the point covering most uncovered pairs (first one on ties)
        best = max(candidates, key=lambda point: len(pairs(point) & uncovered))
        points.append(best)
        uncovered -= pairs(best)
    return points


def test_covering_runs_hold_every_value_of_every_axis():
    for position, values in enumerate(AXES.values()):
        assert {run[position] for run in COVERING} == set(values)


@pytest.mark.parametrize("point", pairwise_points(), ids=lambda p: "-".join(map(str, p)))
def test_every_pair_of_axis_values_composes(point):
    cfg = compose_train([*overrides(*point), *TINY])
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    experiment, val, optimizer, weighting, scheduler = point
    assert container["name"] == experiment and container["data"]["val_fraction"] == val
    assert container["loss"]["class_weighting"].value == weighting
    assert (
        container["optimizer"]["_target_"]
        == {"sgdm": "torch.optim.SGD", "adam": "torch.optim.Adam"}[optimizer]
    )
    assert (container["scheduler"].get("_target_") is None) == (scheduler == "none")


@pytest.fixture(scope="module")
def covering_runs(tmp_path_factory):
    """Train the six covering runs once; returns {run: run directory}."""
    base = tmp_path_factory.mktemp("matrix")
    dirs = {}
    for run in COVERING:
        run_dir = base / run[0]
        train(compose_train([*overrides(*run), *TINY]), run_dir)
        dirs[run] = run_dir
    return dirs


def logged(run_dir, key) -> list[tuple[str, float]]:
    """(epoch, value) of every row of csv/metrics.csv holding key."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return [(r["epoch"], float(r[key])) for r in csv.DictReader(handle) if r.get(key)]


@pytest.mark.slow
@pytest.mark.parametrize("run", COVERING, ids=lambda r: "-".join(map(str, r)))
def test_covering_run_trains_validates_tests_and_schedules(run, covering_runs):
    experiment, val, optimizer, weighting, scheduler = run
    run_dir = covering_runs[run]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["class_weighting"] == weighting
    assert all(not math.isnan(metrics["dataset"][k]) for k in ("mean_iou", "mean_dice", "global_accuracy"))
    assert [e for e, _ in logged(run_dir, "train/mean_iou")] == ["0", "1"]
    assert [e for e, _ in logged(run_dir, "val/mean_iou")] == (["0", "1"] if val else [])
    assert ("validation" in metrics) == bool(val)
    lr_key = {"sgdm": "lr-SGD", "adam": "lr-Adam"}[optimizer]
    lrs = [value for _, value in logged(run_dir, lr_key)]
    base = 1e-3
    after_one_epoch = {  # the schedules over max_epochs=2 (step: step_size 30, so no drop yet)
        "none": base,
        "step": base,
        "cosine": base * (1 + math.cos(math.pi / 2)) / 2,
        "poly": base * (1 - 1 / 2) ** 0.9,
    }[scheduler]
    assert lrs == pytest.approx([base, after_one_epoch])
