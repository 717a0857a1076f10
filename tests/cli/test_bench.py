"""`python -m bloodseg.bench`: each measurement prints one JSON object with its fields (no timing asserts)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, run_tool

pytestmark = pytest.mark.slow


# every record, whatever it measures (null where a field does not apply)
COMMON = {"name", "model", "device", "precision", "batch_size", "images_per_s", "peak_mem_gib"}


def records(result) -> list[dict]:
    """The bench's records: stdout is nothing but JSON lines, each with the common fields."""
    assert result.returncode == 0, result.stderr[-3000:]
    found = [json.loads(line) for line in result.stdout.splitlines()]  # any other line fails here
    assert found and all(COMMON <= set(record) for record in found), found
    assert "ImageNet weights" not in result.stderr  # never looks for pretrained weights
    return found


def test_bf_score_benchmark_compares_with_the_scipy_reference(tmp_path):
    (record,) = records(
        run_cli("bloodseg.bench", "debug=smoke", "bench.measurements=[bf_score]", cwd=tmp_path)
    )
    assert list(tmp_path.iterdir()) == []  # no files: no outputs/bench/<time>/ with a log file
    assert record["name"] == "bf_score" and record["masks"] == 16 and record["image_size"] == [64, 96]
    assert record["batch_size"] == 16 and record["model"] is None
    assert record["images_per_s"] == pytest.approx(16 / record["ours_ms"] * 1e3, rel=0.01)
    assert record["agrees_with_reference"] is True
    assert record["speedup"] == pytest.approx(record["scipy_reference_ms"] / record["ours_ms"], rel=0.02)


def test_unknown_measurement_is_rejected(tmp_path):
    result = run_cli(  # a real process
        "bloodseg.bench", "debug=smoke", "bench.measurements=[nope]"
    )
    assert result.returncode == 2 and "nope" in result.stderr


FIELDS = {
    "name",
    "model",
    "device",
    "precision",
    "batch_size",
    "images_per_s",
    "peak_mem_gib",
    "tflops",
    "mfu",
    "warmup_steps",
    "steps",
}


def test_smoke_bench_measures_train_step_inference_and_evaluation_of_each_model(tmp_path):
    found = records(
        run_tool(
            "bloodseg.bench",
            "debug=smoke",
            "bench.measurements=[train_step,inference,evaluation]",
            "bench.models=[segnet_vgg16,unet]",
            "bench.warmup_steps=1",
            "bench.inference_batch_size=8",
        )
    )
    assert [(r["model"], r["name"]) for r in found] == [
        (model, name)
        for name in ("train_step", "inference", "evaluation")
        for model in ("segnet_vgg16", "unet")
    ]
    for record in found:
        assert FIELDS <= set(record) and record["images_per_s"] > 0 and record["device"].startswith("cpu")
        assert record["precision"] == "32-true" and record["mfu"] is None  # no MFU off H100-class GPUs
        assert record["warmup_steps"] == 1
    for model in ("segnet_vgg16", "unet"):
        train, inference, evaluation = (r for r in found if r["model"] == model)
        assert train["batch_size"] == 2 and train["steps"] == 3
        assert train["ratio_vs_plain"] == pytest.approx(
            train["images_per_s"] / train["plain_loop_images_per_s"], rel=0.01
        )
        assert train["tflops"] == pytest.approx(
            train["gflop_per_image"] * train["images_per_s"] / 1000, rel=0.02
        )
        assert inference["batch_size"] == 8
        assert evaluation["overhead_vs_inference"] == pytest.approx(
            evaluation["inference_images_per_s"] / evaluation["images_per_s"] - 1, abs=1e-3
        )
