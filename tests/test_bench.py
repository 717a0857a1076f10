"""`python -m bloodseg.bench`: each measurement prints one JSON object with its fields (no timing asserts)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


def records(result) -> list[dict]:
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_bf_score_benchmark_compares_with_the_scipy_reference(tmp_path):
    (record,) = records(
        run_cli("bloodseg.bench", "debug=smoke", "bench.measurements=[bf_score]", f"hydra.run.dir={tmp_path}")
    )
    assert record["name"] == "bf_score" and record["masks"] == 16 and record["image_size"] == [64, 96]
    assert record["agrees_with_reference"] is True
    assert record["speedup"] == pytest.approx(record["scipy_reference_ms"] / record["ours_ms"], rel=0.02)


def test_unknown_measurement_is_rejected(tmp_path):
    result = run_cli(
        "bloodseg.bench", "debug=smoke", "bench.measurements=[nope]", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 2 and "nope" in result.stderr
