"""The measurement campaign (experiments/campaign/run.py): the smoke profile end to end, resuming, the
time budget, and every step of the cpu and gpu profiles composing into a valid training config."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
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


def compose_bench(overrides: list[str]):
    """The composed bench config for these overrides, as `python -m bloodseg.bench` would see it."""
    from hydra import compose, initialize_config_dir

    from bloodseg.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="bench", overrides=overrides)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "gpu_first"])
def test_every_step_of_a_profile_composes(profile, monkeypatch, tmp_path):
    monkeypatch.setenv("CELLAVISION_ROOT", str(tmp_path))
    spec = yaml.safe_load((CAMPAIGN / "profiles" / f"{profile}.yaml").read_text())
    steps = [s for s in spec["steps"] if s["kind"] == "train"]
    benches = [s for s in spec["steps"] if s["kind"] == "bench"]
    assert steps and benches
    for step in steps:
        for job in sweep_choices(step["args"]):
            overrides = [os.path.expandvars(a) for a in [*job, *spec.get("common", [])]]
            cfg = compose_train(overrides)
            assert cfg.trainer.max_epochs >= 1, (step["name"], job)
    for step in benches:
        for variant in step.get("variants", [[]]):
            cfg = compose_bench([*step["args"], *variant])
            assert cfg.bench.measurements and cfg.bench.models, (step["name"], variant)


def load_campaign_module():
    """experiments/campaign/run.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("campaign_run", CAMPAIGN / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_first_training_gets_the_budget_left_as_trainer_max_time():
    """What the budget leaves, minus fill_budget seconds, becomes a max_time Hydra and Lightning read."""
    run = load_campaign_module()
    spec = yaml.safe_load((CAMPAIGN / "profiles" / "gpu_first.yaml").read_text())
    step = next(s for s in spec["steps"] if "fill_budget" in s)
    budget = run.Budget(None)
    assert run.time_limit(step, budget) == []  # no budget: no limit
    budget.deadline = run.time.monotonic() + 3725.5 + float(step["fill_budget"])
    (limit,) = run.time_limit(step, budget)
    assert limit == "trainer.max_time='00:01:02:05'"
    assert compose_train([limit]).trainer.max_time == "00:01:02:05"
    budget.deadline = run.time.monotonic() + float(step["fill_budget"]) + 10  # too little left to train
    with pytest.raises(run.OutOfBudget):
        run.time_limit(step, budget)


@pytest.mark.slow
def test_trainer_max_time_stops_training_and_still_scores_the_test_split(tmp_path):
    from conftest import ONE_BATCH, SMOKE

    from bloodseg.training.run import train

    result = train(
        compose_train([*SMOKE, *ONE_BATCH, "trainer.max_epochs=100000", "trainer.max_time='00:00:00:04'"]),
        tmp_path,
    )
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert 1 <= last["epoch"] + 1 < 100000
    assert result["metrics"] is not None and (tmp_path / "metrics.json").is_file()


def test_the_dry_run_prints_the_device_call_and_checks_what_it_carries():
    result = campaign("gpu_first", "/tmp/unused", "--dry-run")
    plan = json.loads(result.stdout[: result.stdout.index("\n}") + 2])
    assert plan["carry"] == [".whl", ".data", ".campaign"] and plan["timeout_s"] <= 600
    assert "run.py gpu_first /tmp/campaign" in plan["command"] and "--budget-minutes 7.5" in plan["command"]
    assert len(plan["command"]) <= 2000 and "MiB of 64 MiB" in result.stdout
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem: ")]
    assert result.returncode == (1 if problems else 0)
    assert ("not ready" in result.stdout) == bool(problems)
    for line in problems:  # each names what to do
        assert "fix: " in line or "make it: " in line or "limit" in line
