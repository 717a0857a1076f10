"""Ctrl-C, kill -9 while saving, and a run with nothing to train: what is kept and what is said."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ONE_BATCH, ROOT, SMOKE, compose_train, signal_when

from bloodseg.training.checkpoint_io import AtomicCheckpointIO
from bloodseg.training.factory import build_trainer
from bloodseg.training.run import train

SAVE_FOREVER = (
    "import sys, torch; from bloodseg.training.checkpoint_io import save_atomically\n"
    "state = {'w': torch.randn(16, 1024, 1024)}\n"  # 64 MiB: the kill usually lands mid-write
    "for i in range(10_000):\n"
    "    state['i'] = i; save_atomically(state, sys.argv[1]); print(i, flush=True)\n"
)


def test_kill_while_saving_leaves_a_complete_checkpoint_and_nothing_in_tmpdir(tmp_path):
    tmpdir, target = tmp_path / "tmpdir", tmp_path / "ckpts" / "last.ckpt"
    tmpdir.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", SAVE_FOREVER, str(target)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmpdir)),
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(3):  # three complete saves, then kill during the following ones
        child.stdout.readline()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert list(tmpdir.iterdir()) == []  # nothing staged in $TMPDIR
    assert torch.load(target, weights_only=True)["w"].shape == (16, 1024, 1024)  # complete, loadable
    assert {p.name for p in target.parent.iterdir()} <= {"last.ckpt", ".last.ckpt.partial"}
    trainer = build_trainer(compose_train([*SMOKE, *ONE_BATCH]), tmp_path / "run")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # what training saves through


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sent", "stopped_by", "exit_status"),
    [(signal.SIGINT, "Ctrl-C", None), (signal.SIGTERM, "SIGTERM", 143)],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stopped_run_says_how_to_continue_and_records_the_interruption(
    tmp_path, sent, stopped_by, exit_status
):
    args = [*SMOKE, *ONE_BATCH, "trainer.max_epochs=1000", f"hydra.run.dir={tmp_path}"]
    child = subprocess.Popen(
        [sys.executable, "-m", "bloodseg.train", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        # Ctrl-C as in a terminal, even when this suite runs in the background (`make test &`
        # starts it with SIGINT ignored, which a child would inherit and Python would honour)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    _, stderr = signal_when(child, ckpt.is_file, sent, "the run")
    assert child.returncode != 0
    if exit_status is not None:  # what shells and schedulers report for a killed job
        assert child.returncode == exit_status
    assert f"interrupted ({stopped_by}) during epoch" in stderr
    assert "re-run the same command to continue" in stderr and "last.ckpt" in stderr
    assert "Traceback" not in stderr
    status = json.loads((tmp_path / "job_status.json").read_text())
    assert status == {"status": "interrupted", "stopped_by": stopped_by}
    assert not (tmp_path / "run.lock").exists() and not (tmp_path / "metrics.json").exists()
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] >= 0  # the kept checkpoint loads


def test_no_epochs_writes_no_metrics_pointing_at_a_missing_checkpoint(tmp_path):
    train(compose_train([*SMOKE, *ONE_BATCH, "trainer.max_epochs=0"]), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["checkpoint"] is None and not (tmp_path / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sigterm_stops_a_sweep_with_143_and_every_started_job_says_interrupted(tmp_path, launcher):
    """A scheduler's SIGTERM to the sweep's process: with the basic launcher the running job stops in
    the same process; with joblib the workers are killed with their launcher and marked afterwards."""
    parallel = ["hydra/launcher=joblib_local", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    args = [
        *SMOKE,
        *ONE_BATCH,
        "trainer.max_epochs=1000",
        "seed=1,2",
        *parallel,
        f"hydra.sweep.dir={tmp_path}",
    ]
    child = subprocess.Popen(
        [sys.executable, "-m", "bloodseg.train", "-m", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = 2 if launcher == "joblib" else 1
    checkpoints = lambda: len(list(tmp_path.glob("*/checkpoints/last.ckpt"))) >= started  # noqa: E731
    stdout, stderr = signal_when(child, checkpoints, signal.SIGTERM, "the sweep", wait_s=300)
    assert child.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "bloodseg: sweep stopped (interrupted" in stdout
    jobs = sorted(p.parent for p in tmp_path.glob("*/.hydra"))
    assert len(jobs) == started
    for job in jobs:
        assert json.loads((job / "job_status.json").read_text()) == {
            "status": "interrupted",
            "stopped_by": "SIGTERM",
        }
        assert (job / "checkpoints" / "last.ckpt").is_file() and not (job / "metrics.json").exists()
