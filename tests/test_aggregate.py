"""Mean/std over seeds of multirun jobs (results.json) and the sweep table on hand-made job folders."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml

from bloodseg.aggregate import aggregate, main
from bloodseg.sweep_report import write_sweep_summary


def make_job(root, num, overrides, mean_iou=None, status=None):
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if mean_iou is not None:
        dataset = {
            "global_accuracy": 0.9,
            "mean_accuracy": 0.8,
            "mean_iou": mean_iou,
            "weighted_iou": 0.85,
            "mean_bf_score": mean_iou / 2,
        }
        classes = {c: {"accuracy": 0.8, "iou": mean_iou, "mean_bf_score": 0.5} for c in ("background", "wbc")}
        (job / "metrics.json").write_text(
            json.dumps({"dataset": dataset, "classes": classes, "model_init": "random"})
        )
    if status:
        (job / "job_status.json").write_text(json.dumps(status))


@pytest.fixture
def sweep(tmp_path):
    for num, (lr, seed, iou) in enumerate(
        [("0.01", 1, 0.70), ("0.01", 2, 0.74), ("0.001", 1, 0.80), ("0.001", 2, 0.84)]
    ):
        make_job(tmp_path, num, ["experiment=segnet_vgg16", f"optimizer.lr={lr}", f"seed={seed}"], iou)
    make_job(
        tmp_path,
        4,
        ["experiment=segnet_vgg16", "optimizer.lr=0.1", "seed=1"],
        status={"status": "failed", "error": "BloodsegError: boom"},
    )
    return tmp_path


def test_configurations_average_over_seeds(sweep):
    results = aggregate([sweep])
    runs = {tuple(r["overrides"]): r for r in results["runs"]}
    best = runs[("experiment=segnet_vgg16", "optimizer.lr=0.001")]
    assert best["seeds"] == [1, 2] and best["dataset"]["mean_iou"] == pytest.approx(0.82)
    assert best["dataset_std"]["mean_iou"] == pytest.approx(statistics.stdev([0.80, 0.84]))
    assert best["classes"]["wbc"]["iou"] == pytest.approx(0.82)
    assert results["best"]["overrides"] == best["overrides"]
    assert (
        results["best"]["command"]
        == "python -m bloodseg.train -m experiment=segnet_vgg16 optimizer.lr=0.001 seed=1,2"
    )
    failed = runs[("experiment=segnet_vgg16", "optimizer.lr=0.1")]
    assert failed["failed_jobs"] == 1 and failed["dataset"]["mean_iou"] is None


def test_sweep_table_sorts_by_mean_iou_and_lists_failures(sweep):
    text = write_sweep_summary(sweep)["md"].read_text()
    lines = [line for line in text.splitlines() if line.startswith("| 0.")]
    assert [line.split("|")[1].strip() for line in lines][:2] == [
        "0.001",
        "0.001",
    ]  # best configuration first
    assert "BloodsegError: boom" in text and "1 failed or incomplete" in text


def test_markdown_tables_show_mean_and_std_best_first(sweep, tmp_path):
    out, md = tmp_path / "results.json", tmp_path / "tables.md"
    assert main([str(sweep), "--out", str(out), "--md", str(md)]) == 0
    text = md.read_text()
    assert text.startswith("Overrides of every configuration: `experiment=segnet_vgg16`")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    # lr 1e-3: mean IoU (0.80 + 0.84) / 2 = 0.82, sample std 0.02 * sqrt(2) = 0.028; lr 1e-2: 0.72 +- 0.028
    assert "experiment=" not in rows[0] and "optimizer.lr=0.001" in rows[0] and "| 0.820 ± 0.028 |" in rows[0]
    assert "optimizer.lr=0.01" in rows[1] and "| 0.720 ± 0.028 |" in rows[1]
    assert "optimizer.lr=0.1" in rows[2] and "n/a" in rows[2]  # the failed configuration is kept
    assert "| wbc | 0.800 ± 0.000 | 0.820 ± 0.028 | 0.500 ± 0.000 |" in text
    assert json.loads(out.read_text())["best"]["overrides"][1] == "optimizer.lr=0.001"
