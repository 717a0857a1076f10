"""Runs that cannot finish say so: SIGTERM during predict, a full disk under predict and under a
checkpoint, evaluation artifacts whose metrics.json comes last, and command lines Hydra would misread
or whose hydra.* folder settings a tool ignores."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ONE_BATCH, ROOT, SMOKE, compose_train, run_cli, run_tool, signal_when
from PIL import Image

from bloodseg.cli import command_line_error
from bloodseg.evaluation.artifacts import write_evaluation
from bloodseg.files import OutOfSpace, partial_path
from bloodseg.inference.predict_run import output_files
from bloodseg.metrics.suite import SegmentationMetrics
from bloodseg.training.checkpoint_io import AtomicCheckpointIO
from bloodseg.training.run import train

FULL = Path("/dev/full")  # every write to it fails with errno 28, as on a full disk
needs_dev_full = pytest.mark.skipif(
    not FULL.exists(), reason="/dev/full (a disk that is always full) is absent"
)
CLASSES = ["background", "rbc", "wbc"]


def smears(folder: Path, n: int, size=(96, 128)) -> list[Path]:
    """n random RGB images a.png, b.png, ... in folder."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{chr(ord('a') + i % 26)}{i // 26 or ''}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def fill_up(path: Path) -> None:
    """Make the next write of ``path`` (staged at its partial name) fail with 'no space left on device'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_path(path).symlink_to(FULL)


def outputs_present(out: Path, stem: str) -> list[bool]:
    return [p.is_file() for p in output_files(out, stem, CLASSES) if not p.name.endswith("_outlines.png")]


# ---- predict ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_during_predict_leaves_complete_images_and_a_summary_that_says_interrupted(
    smoke_run, tmp_path
):
    run_dir, _ = smoke_run
    images = smears(tmp_path / "in", 40, size=(192, 256))
    out = tmp_path / "out"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bloodseg.predict",
            f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
            f"input={tmp_path / 'in'}",
            f"output_dir={out}",
            "predict.batch_size=1",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = lambda: len(list(out.glob("*_labels.png"))) >= 2  # noqa: E731 - the first image is then complete
    _, stderr = signal_when(child, second, signal.SIGTERM, "predict")
    assert child.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "interrupted (SIGTERM)" in stderr and "summary.json" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stopped_by"] == "SIGTERM"
    done = {row["image"] for row in summary["images"]}
    assert 1 <= len(done) < len(images) == len(done) + len(summary["not_predicted"]) + len(summary["skipped"])
    assert set(summary["not_predicted"]) == {str(p) for p in images if p.name not in done}
    for path in images:  # an image has all its outputs, or none
        assert all(outputs_present(out, path.stem)) == (path.name in done)
        assert any(outputs_present(out, path.stem)) == (path.name in done)
    with open(out / "counts.csv", newline="") as handle:
        assert sorted(row["image"] for row in csv.DictReader(handle)) == sorted(done)
    assert not list(out.glob(".*.partial"))


@needs_dev_full
@pytest.mark.parametrize("summary_fits", [True, False], ids=["summary-written", "summary-does-not-fit"])
def test_a_full_disk_stops_predict_at_the_first_failed_write_and_says_what_was_written(
    smoke_run, tmp_path, summary_fits
):
    run_dir, _ = smoke_run
    images = smears(tmp_path / "in", 3)
    out = tmp_path / "out"
    fill_up(out / "b_labels.png")  # a is written, b fails: c would fail too
    (out / "summary.json").write_text('{"status": "complete", "predicted": 3}')  # an earlier run's
    if not summary_fits:
        fill_up(out / "summary.json")
    result = run_tool(
        "bloodseg.predict",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        f"input={tmp_path / 'in'}",
        f"output_dir={out}",
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if "errno 28" in line]
    assert len(error) == 1 and f"output_dir={out}" in error[0] and "b.png" in error[0]
    assert "1 of 3 image(s) have complete outputs" in error[0] and "2 were not predicted" in error[0]
    assert all(outputs_present(out, "a")) and not any(outputs_present(out, "b") + outputs_present(out, "c"))
    if summary_fits:
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "failed" and "No space left" in summary["error"]
        assert [row["image"] for row in summary["images"]] == ["a.png"]
        assert summary["not_predicted"] == [str(images[1]), str(images[2])]
    else:  # none rather than the earlier run's, which would say complete
        assert not (out / "summary.json").exists()
        assert "summary.json could not be written either" in error[0]


# ---- checkpoints ------------------------------------------------------------------------------
@needs_dev_full
@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_stops_training_in_one_line_and_keeps_the_previous(tmp_path):
    args = [*SMOKE, *ONE_BATCH]
    train(compose_train([*args, "trainer.max_epochs=1"]), tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    fill_up(last)
    result = run_cli("bloodseg.train", *args, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "inline_container" not in result.stderr
    line = next(line for line in result.stderr.splitlines() if "no space left for last.ckpt" in line)
    assert str(last.parent) in line and "MiB are free" in line and "re-run the same command" in line
    assert last.read_bytes() == before  # the epoch-1 checkpoint, whole
    status = json.loads((tmp_path / "job_status.json").read_text())
    assert status["status"] == "failed" and "no space left" in status["error"]


def test_a_checkpoint_larger_than_the_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")
    state = {"state_dict": {"w": torch.zeros(1024, 256)}}  # 1 MiB of weights
    free = shutil.disk_usage(tmp_path)._replace(free=512 * 1024)
    monkeypatch.setattr("bloodseg.files.shutil.disk_usage", lambda folder: free)  # the disk, not the code
    with pytest.raises(
        OutOfSpace, match=r"last.ckpt in .*: it needs about 1 MiB, 0 MiB are free; fix: free space"
    ):
        AtomicCheckpointIO().save_checkpoint(state, target)
    assert target.read_bytes() == b"the previous checkpoint"
    assert not partial_path(target).exists()


# ---- evaluation artifacts ---------------------------------------------------------------------
def test_metrics_json_is_written_last_so_a_stopped_evaluation_leaves_none(tmp_path):
    """An earlier metrics.json is removed first and the new one written after every other artifact:
    a folder that holds metrics.json holds the complete set."""
    (tmp_path / "metrics.json").write_text("{}")
    metric = SegmentationMetrics(len(CLASSES))
    truth = torch.tensor([[0, 0, 1, 1], [2, 2, 1, 0]])
    for row, pred in enumerate([truth, truth.flip(1)]):
        metric.update(pred[None], truth[None], torch.tensor([row]))
    results = metric.compute()

    def render(row):
        raise KeyboardInterrupt  # stopped while drawing the overlays, after the tables

    with pytest.raises(KeyboardInterrupt):
        write_evaluation(
            tmp_path, results, CLASSES, [[0, 0, 0], [255, 0, 0], [0, 0, 255]], ["x", "y"], "t", render=render
        )
    assert (tmp_path / "metrics.md").is_file() and not (tmp_path / "metrics.json").exists()


# ---- command lines ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "tool", "output_key", "expected"),
    [
        (
            ["input=my", "smears/"],
            "predict",
            "output_dir",
            "quote the whole value (a value with a space must be quoted): input='my smears/'",
        ),
        (["input=smäars/"], "predict", "output_dir", "fix: quote it: input='smäars/'"),
        (["data.root=a(b)"], "train", None, "fix: quote it: data.root='a(b)'"),
        (["smears/"], "predict", "output_dir", "'smears/' is not key=value; fix: give it as key=value"),
        (
            ["hydra.run.dir=X"],
            "predict",
            "output_dir",
            "hydra.run.dir is not used by predict (Hydra keeps no folder for it); fix: give output_dir=... instead",
        ),
        (["hydra.run.dir=X"], "evaluate", "output_dir", "fix: give output_dir=... instead"),
        (["++hydra.sweep.dir=X"], "suggest", "output_dir", "hydra.sweep.dir is not used by suggest"),
        (["hydra.job.chdir=true"], "export", "output", "fix: give output=... instead"),
        (["hydra.output_subdir=.hydra"], "bench", "", "it writes no folder (its results go to stdout)"),
        (["hydra.run.dir=X", "hydra.sweep.dir=Y"], "train", None, None),  # train keeps its run folder
        (
            [
                "--cfg",
                "job",
                "input='my smears/'",
                'input="smäars"',
                "~seed",
                "hydra.verbose=true",
                "hydra/job_logging=console",
            ],
            "predict",
            "output_dir",
            None,
        ),
    ],
)
def test_command_lines_hydra_would_misread_or_ignore_get_one_line(argv, tool, output_key, expected):
    error = command_line_error(argv, tool, output_key)
    if expected is None:
        assert error is None
    else:
        assert expected in error and "\n" not in error


@pytest.mark.slow
def test_a_decoy_run_dir_is_refused_before_anything_is_created(tmp_path):
    decoy = tmp_path / "decoy"
    result = run_cli(
        "bloodseg.predict", "ckpt_path=x.ckpt", "input=in/", f"hydra.run.dir={decoy}", timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "bloodseg.predict: error: hydra.run.dir is not used by predict (Hydra keeps no folder for it); "
        "fix: give output_dir=... instead"
    ]
    assert not decoy.exists() and not (ROOT / "outputs" / "predict").exists()


@pytest.mark.slow
def test_train_with_an_unquoted_space_says_to_quote_it(tmp_path):
    result = run_cli(
        "bloodseg.train", *SMOKE, "data.root=my", "smears/", f"hydra.run.dir={tmp_path}/run", timeout=120
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "data.root='my smears/'" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    os.access("/sys", os.W_OK) and os.geteuid() != 0, reason="needs a folder nobody can create in"
)
def test_train_into_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    target = "/sys/bloodseg-cannot-write/run"  # sysfs: even root cannot create folders there
    if Path(target).parent.exists():
        pytest.skip(f"{target} exists")
    result = run_cli("bloodseg.train", *SMOKE, f"hydra.run.dir={target}", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert f"hydra.run.dir={target}" in result.stderr and "fix: give a writable folder" in result.stderr
