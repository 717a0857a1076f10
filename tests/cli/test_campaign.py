"""The measurement campaign (experiments/campaign/run.py): the smoke profile end to end, resuming, the
time budget, and every step of the cpu and gpu profiles composing into a valid training config."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, compose_train

CAMPAIGN = ROOT / "experiments" / "campaign"
BENCH_FIELDS = {"name", "model", "device", "precision", "batch_size", "images_per_s", "peak_mem_gib"}


def campaign(*args: str) -> subprocess.CompletedProcess:
    """experiments/campaign/run.py with these arguments, in a new process."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    command = [sys.executable, str(CAMPAIGN / "run.py"), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, cellavision_dir):
    """The smoke profile's output folder after one complete run."""
    out = tmp_path_factory.mktemp("campaign")
    result = campaign("smoke", str(out), "--record", str(out / "recorded"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


@pytest.mark.slow
def test_smoke_profile_writes_bench_records_and_aggregated_results(smoke):
    records = [json.loads(line) for line in (smoke / "results" / "bench.jsonl").read_text().splitlines()]
    machine, *measured = records
    assert machine["name"] == "machine" and machine["torch"] and machine["device"] == "cpu"
    assert {r["model"] for r in measured} == {"segnet_vgg16", "unet"}
    for record in measured:
        assert BENCH_FIELDS <= set(record) and record["images_per_s"] > 0, record
        assert record["overrides"] == ["model.compile=false"]
    results = json.loads((smoke / "results" / "cellavision.json").read_text())
    assert {run["experiment"] for run in results["runs"]} == {"segnet_vgg16", "unet_resnet34"}
    for run in results["runs"]:
        assert run["num_jobs"] == 1 and run["failed_jobs"] == 0 and run["command"].startswith("python -m")
        assert 0 <= run["dataset"]["mean_iou"] <= 1
    for job in ("0", "1"):  # trained at 32x32, scored again at the crops' 300x300
        trained = json.loads((smoke / "cellavision" / job / "metrics.json").read_text())
        native = json.loads((smoke / "native" / "cellavision" / job / "metrics.json").read_text())
        for metrics, side in ((native, 300), (trained, 32)):  # labelled pixels per image (a few are stray)
            pixels = sum(map(sum, metrics["confusion_matrix"]["counts"])) / metrics["num_images"]
            assert pixels == pytest.approx(side * side, rel=0.01), (job, side)
    assert (smoke / "results" / "cellavision.md").read_text().count("| `") == 2
    recorded = sorted(p.name for p in (smoke / "recorded").iterdir())
    assert recorded == sorted(p.name for p in (smoke / "results").iterdir())


@pytest.mark.slow
def test_a_finished_campaign_run_again_does_nothing_and_its_saved_state_resumes_elsewhere(smoke, tmp_path):
    before = sorted(str(p) for p in smoke.rglob("*.ckpt"))
    result = campaign("smoke", str(smoke), "--save-state", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("done earlier") == 2 and "+ " not in result.stdout
    assert sorted(str(p) for p in smoke.rglob("*.ckpt")) == before
    saved = sorted(
        str(p.relative_to(tmp_path / "state")) for p in (tmp_path / "state").rglob("*") if p.is_file()
    )
    assert {"bench/.done", "cellavision/.done", "results/bench.jsonl", "results/cellavision.json"} <= set(
        saved
    )
    assert not any(name.endswith(".ckpt") for name in saved)  # small enough to carry to a fresh machine
    fresh = tmp_path / "fresh"  # a new machine that got only the saved state
    shutil.copytree(tmp_path / "state", fresh)
    result = campaign("smoke", str(fresh))
    assert result.returncode == 0 and result.stdout.count("done earlier") == 2 and "+ " not in result.stdout


def test_the_budget_stops_cleanly_and_says_how_to_continue(tmp_path):
    result = campaign("smoke", str(tmp_path), "--budget-minutes", "0.001")
    assert result.returncode == 3, result.stderr[-2000:]
    assert "re-run the same command to continue" in result.stdout
    assert not list(tmp_path.rglob(".done"))


def test_unknown_profile_or_step_is_one_line(tmp_path):
    result = campaign("nope", str(tmp_path))
    assert result.returncode != 0 and "unknown profile 'nope'" in result.stderr and "gpu" in result.stderr
    result = campaign("smoke", str(tmp_path), "--only", "nope")
    assert result.returncode != 0 and "no step named nope" in result.stderr


def sweep_choices(args: list[str]) -> list[list[str]]:
    """Every single-job override list of a multirun's arguments (``key=a,b`` expanded)."""
    axes = []
    for arg in args:
        key, _, value = arg.partition("=")
        if "," in value and not value.startswith("["):
            axes.append([f"{key}={v}" for v in value.split(",")])
        else:
            axes.append([arg])
    return [list(job) for job in itertools.product(*axes)]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_training_job_of_a_profile_composes(profile, monkeypatch, tmp_path):
    monkeypatch.setenv("CELLAVISION_ROOT", str(tmp_path))
    spec = yaml.safe_load((CAMPAIGN / "profiles" / f"{profile}.yaml").read_text())
    steps = [s for s in spec["steps"] if s["kind"] == "train"]
    assert steps and any(s["kind"] == "bench" for s in spec["steps"])
    for step in steps:
        for job in sweep_choices(step["args"]):
            overrides = [os.path.expandvars(a) for a in [*job, *spec.get("common", [])]]
            cfg = compose_train(overrides)
            assert cfg.trainer.max_epochs >= 1, (step["name"], job)
