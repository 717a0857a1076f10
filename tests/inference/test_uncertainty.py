"""Uncertainty scores against hand computations and scipy, the ranking, and `python -m bloodseg.suggest`."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, run_cli
from hydra import compose, initialize_config_dir
from PIL import Image
from scipy.stats import entropy as scipy_entropy
from torch import nn

from bloodseg.config import PredictMode, check_config
from bloodseg.data.synthetic import generate_smear
from bloodseg.errors import BloodsegError
from bloodseg.inference.tiling import FieldPlan
from bloodseg.inference.uncertainty import entropy_map, margin_map, rank, score_fields, suggest, uncertainty
from bloodseg.training.module import SegmentationModule

TILE = (32, 32)
META = {
    "class_names": ["background", "rbc"],
    "class_colors": [[255, 255, 0], [0, 0, 255]],
    "image_size": list(TILE),
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}


def test_entropy_and_margin_of_fixed_logits_by_hand():
    # pixel 1: logits (0, ln 3) -> p = (1/4, 3/4); pixel 2: equal logits -> p = (1/2, 1/2)
    logits = torch.tensor([[[0.0, 5.0]], [[math.log(3), 5.0]]])
    result = uncertainty("x", np.zeros((1, 2, 3), np.uint8), [logits])
    by_hand = [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2)]
    assert result.entropy_map[0].tolist() == pytest.approx(by_hand, abs=1e-6)
    assert result.scores["entropy"] == pytest.approx(sum(by_hand) / 2, abs=1e-6)
    assert result.scores["margin"] == pytest.approx((0.5 + 1.0) / 2, abs=1e-6)  # 1 - (3/4 - 1/4), 1 - 0
    assert result.scores["flip_disagreement"] is None


def test_entropy_matches_scipy_and_margin_a_sort_on_random_probabilities():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4) * 0.5, size=(6, 7)).transpose(2, 0, 1)  # K x H x W
    p[:, 0, 0] = [1, 0, 0, 0]  # a certain pixel: 0 ln 0 counts as 0
    ours = entropy_map(torch.from_numpy(p)).numpy()
    np.testing.assert_allclose(ours, scipy_entropy(p, axis=0), atol=1e-6)
    top2 = np.sort(p, axis=0)[-2:]
    np.testing.assert_allclose(margin_map(torch.from_numpy(p)).numpy(), 1 - (top2[1] - top2[0]), atol=1e-6)


def test_flip_averages_probabilities_and_counts_disagreeing_pixels():
    a = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])  # logits of classes 0, 1 at two pixels: class 0; a tie
    b = torch.tensor([[[2.0, 0.0]], [[0.0, 3.0]]])  # the mirrored view: class 0; class 1
    result = uncertainty("x", np.zeros((1, 2, 3), np.uint8), [a, b])
    sure, tie, one = 1 / (1 + math.exp(-2)), 0.5, 1 / (1 + math.exp(-3))  # P(winning class) per view
    p = [(sure + sure) / 2, (tie + (1 - one)) / 2]  # mean probability of class 0 per pixel
    expected = [-(q * math.log(q) + (1 - q) * math.log(1 - q)) for q in p]
    assert result.entropy_map[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert result.scores["flip_disagreement"] == 0.5  # pixel 2: class 0 (a tie goes to the first) vs 1


def test_rank_orders_most_uncertain_first_and_breaks_ties_by_name():
    rows = [{"image": "b", "entropy": 0.2}, {"image": "a", "entropy": 0.2}, {"image": "c", "entropy": 0.9}]
    ranked = rank(rows, "entropy")
    assert [(r["rank"], r["image"], r["score"]) for r in ranked] == [
        (1, "c", 0.9),
        (2, "a", 0.2),
        (3, "b", 0.2),
    ]


class GreyLevel(nn.Module):
    """Logits (+g, -g) per pixel, g = the normalised red value: grey images at 128 are a coin toss."""

    def forward(self, x):
        return torch.cat([x[:, :1], -x[:, :1]], 1) * 3


def test_grey_images_are_ranked_by_their_hand_computed_entropy():
    module = SegmentationModule(GreyLevel(), torch.ones(2), META).eval()
    levels = {"far": 250, "near": 140, "mid": 200, "tie": 127.5}  # tie: normalised 0 -> p = (1/2, 1/2)
    plan = FieldPlan(PredictMode.auto, TILE)
    fields = [
        plan.field(n, np.full((40, 50, 3), v, np.float64).round().astype(np.uint8)) for n, v in levels.items()
    ]
    results = list(score_fields(module, fields, TILE, 4, torch.device("cpu"), mirror=plan.field))
    rows = [{"image": r.name, **r.scores} for r in results]
    for row in rows:
        g = 3 * (round(levels[row["image"]]) - 127.5) / 127.5
        p = 1 / (1 + math.exp(-2 * g))  # softmax of (g, -g)
        assert row["entropy"] == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), abs=1e-5)
        assert row["flip_disagreement"] == 0.0  # a uniform image is its own mirror
    assert [r["image"] for r in rank(rows, "entropy")] == ["tie", "near", "mid", "far"]
    assert [r["image"] for r in rank(rows, "margin")] == ["tie", "near", "mid", "far"]


def compose_suggest(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="suggest", overrides=list(overrides))
    check_config(cfg)
    return cfg


def test_suggest_config_and_bad_values(tmp_path):
    cfg = compose_suggest("ckpt_path=x.ckpt", "input=in")
    assert cfg.n == 10 and cfg.suggest.score.value == "entropy" and cfg.suggest.flip
    with pytest.raises(Exception) as error:
        compose_suggest("suggest.score=variance")
    assert "expected one of [entropy, margin]" in str(error.value.__cause__)
    with pytest.raises(BloodsegError, match="n=0 must be at least 1"):
        suggest(compose_suggest("ckpt_path=x.ckpt", f"input={tmp_path}", "n=0"), tmp_path)
    with pytest.raises(BloodsegError, match="input=DIR"):
        suggest(compose_suggest("ckpt_path=x.ckpt"), tmp_path)


@pytest.mark.slow
def test_suggest_cli_ranks_a_folder(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    pool = tmp_path / "pool"
    pool.mkdir()
    for seed in range(5):
        Image.fromarray(generate_smear(30 + seed, 70 + 10 * seed, 100)[0]).save(pool / f"u{seed}.png")
    (pool / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = run_cli(
        "bloodseg.suggest",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        f"input={pool}",
        "n=2",
        f"output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "broken.png" in result.stderr and "label these 2 next" in result.stdout
    with open(out / "ranking.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and scores == [float(r["entropy"]) for r in rows]
    assert all(0 <= s <= math.log(3) for s in scores) and all(
        0 <= float(r["flip_disagreement"]) <= 1 for r in rows
    )
    top = [r["image"] for r in rows if r["suggested"] == "True"]
    assert top == [rows[0]["image"], rows[1]["image"]]
    assert (out / "suggested.txt").read_text().split() == [str(pool / name) for name in top]
    heat = sorted(p.name for p in out.glob("*_uncertainty.png"))
    assert heat == sorted(name.replace(".png", "_uncertainty.png") for name in top)
    stem = top[0].rsplit(".", 1)[0]
    assert Image.open(out / f"{stem}_uncertainty.png").size == Image.open(pool / top[0]).size
