"""All-or-nothing result files: a failing write leaves the previous file, and no staged file, behind."""

from __future__ import annotations

import json
import os

import pytest

from bloodseg.files import atomic_text, partial_path, write_atomically, write_json_atomically


def test_a_write_replaces_the_file_through_one_rename(tmp_path, monkeypatch):
    """The target is never opened for writing: the bytes go to the staged file, then one os.replace."""
    target = tmp_path / "metrics.json"
    target.write_text("old")
    renames = []
    real_replace = os.replace

    def record(src, dst):
        renames.append((os.fspath(src), os.fspath(dst), open(src).read(), target.read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", record)
    write_json_atomically(target, {"mean_iou": 0.5})
    assert renames == [(str(partial_path(target)), str(target), '{\n  "mean_iou": 0.5\n}\n', "old")]
    assert json.loads(target.read_text()) == {"mean_iou": 0.5}
    assert not partial_path(target).exists()


def test_a_failing_writer_keeps_the_previous_file_and_leaves_no_staged_file(tmp_path):
    target = tmp_path / "job_status.json"
    target.write_text("previous")

    def half_then_fail(handle):
        handle.write(b"half a fi")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]


def test_a_value_json_cannot_hold_leaves_the_file_untouched(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("previous")
    with pytest.raises(ValueError):
        write_json_atomically(target, {"mean_iou": float("nan")}, allow_nan=False)
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_text_writes_csv_bytes_exactly_as_a_plain_file_would(tmp_path):
    import csv

    rows = [["a", "b"], ["1", "x,y"]]
    with open(tmp_path / "plain.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with atomic_text(tmp_path / "atomic.csv") as handle:
        csv.writer(handle).writerows(rows)
    assert (tmp_path / "atomic.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()


def test_an_exception_inside_atomic_text_writes_nothing(tmp_path):
    target = tmp_path / "per_image_metrics.csv"
    with pytest.raises(RuntimeError):
        with atomic_text(target) as handle:
            handle.write("partial row")
            raise RuntimeError("stopped mid-table")
    assert not target.exists() and list(tmp_path.iterdir()) == []
