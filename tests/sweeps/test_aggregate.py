"""Mean/std over seeds of multirun jobs (results.json) and the sweep table on hand-made job folders."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml

from bloodseg.aggregate import main
from bloodseg.sweeps.aggregate import aggregate
from bloodseg.sweeps.results import write_sweep_summary


def make_job(root, num, overrides, mean_iou=None, status=None, val_iou=None):
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
        metrics = {"dataset": dataset, "classes": classes, "model_init": "random"}
        if val_iou is not None:
            metrics["validation"] = {"mean_iou": val_iou, "global_accuracy": 0.5}
        (job / "metrics.json").write_text(json.dumps(metrics))
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
    assert "| wbc | 0.800 ± 0.000 | 0.820 ± 0.028 | n/a | 0.500 ± 0.000 |" in text  # no dice recorded
    assert json.loads(out.read_text())["best"]["overrides"][1] == "optimizer.lr=0.001"


def test_outputs_go_into_new_folders_and_an_unwritable_path_is_one_line(sweep, tmp_path, capsys):
    out, md = tmp_path / "new" / "deeper" / "results.json", tmp_path / "other" / "tables.md"
    assert main([str(sweep), f"out={out}", f"md={md}"]) == 0
    assert json.loads(out.read_text())["runs"] and md.read_text().startswith("Overrides")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main([str(sweep), f"out={blocker / 'results.json'}"]) == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.fixture
def val_sweep(tmp_path):
    """lr 0.01 is better on test, lr 0.001 on validation: ranking must follow validation."""
    for num, (lr, seed, test_iou, val_iou) in enumerate(
        [("0.01", 1, 0.90, 0.60), ("0.01", 2, 0.92, 0.62), ("0.001", 1, 0.70, 0.80), ("0.001", 2, 0.74, 0.84)]
    ):
        make_job(tmp_path, num, [f"optimizer.lr={lr}", f"seed={seed}"], test_iou, val_iou=val_iou)
    return tmp_path


def test_best_configuration_is_chosen_on_validation_when_present(val_sweep, tmp_path):
    results = aggregate([val_sweep])
    assert results["ranked_by"] == "val/mean_iou"
    assert results["best"]["overrides"] == ["optimizer.lr=0.001"]
    assert results["best"]["validation"]["mean_iou"] == pytest.approx(0.82)
    assert results["best"]["dataset"]["mean_iou"] == pytest.approx(0.72)  # reported, not used to choose
    md = tmp_path / "tables.md"
    assert main([str(val_sweep), "--out", str(tmp_path / "r.json"), "--md", str(md)]) == 0
    text = md.read_text()
    assert "Ranked by validation mean IoU (`val/mean_iou`)" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert "optimizer.lr=0.001" in rows[0] and rows[0].split("|")[3].strip() == "0.820 ± 0.028"


def test_without_validation_the_tables_say_they_rank_on_test(sweep, tmp_path):
    assert aggregate([sweep])["ranked_by"] == "test/mean_iou"
    text = write_sweep_summary(sweep)["md"].read_text()
    assert "Ranked by TEST mean IoU" in text and "optimistic" in text


def test_sweep_table_ranks_on_validation_when_present(val_sweep):
    paths = write_sweep_summary(val_sweep)
    text = paths["md"].read_text()
    assert "Ranked by validation mean IoU" in text
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| 0.")]
    # columns: optimizer.lr, seed, val_mean_iou, then the test metrics
    assert [(r[1].strip(), r[3].strip()) for r in rows] == [
        ("0.001", "0.84000"),
        ("0.001", "0.80000"),
        ("0.01", "0.62000"),
        ("0.01", "0.60000"),
    ]


def test_one_seed_shows_the_value_alone_and_says_n_1(tmp_path):
    """A configuration run with one seed has no spread: no fake "± 0.000", the seeds column says n=1."""
    make_job(tmp_path, 0, ["optimizer.lr=0.01", "seed=1"], 0.70)
    out, md = tmp_path / "results.json", tmp_path / "tables.md"
    assert main([str(tmp_path), "--out", str(out), "--md", str(md)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert run["dataset"]["mean_iou"] == pytest.approx(0.70) and run["dataset_std"]["mean_iou"] is None
    text = md.read_text()
    assert "±" not in text
    row = next(line for line in text.splitlines() if line.startswith("| `"))
    assert "| n=1 |" in row and "| 0.700 |" in row
    assert "n=1 seed shows its value alone" in text


def test_sweep_report_of_a_single_run_is_one_line_and_writes_nothing(tmp_path, capsys):
    from bloodseg.sweep_report import main as sweep_report

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["optimizer.lr=0.01"]))
    before = sorted(p.name for p in run.iterdir())
    assert sweep_report([str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run) in err
    assert "single run" in err and "python -m bloodseg.report" in err  # what to do instead
    assert sorted(p.name for p in run.iterdir()) == before  # no sweep summary or heatmap written into it
    assert sweep_report([str(tmp_path / "missing")]) == 2
    assert "not a multirun directory" in capsys.readouterr().err
