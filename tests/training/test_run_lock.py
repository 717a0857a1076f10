"""One training process per run directory; a lock left by a killed process does not lock the run out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import ONE_BATCH, ROOT, SMOKE, compose_train, run_tool

from bloodseg.training.run import train
from bloodseg.training.run_lock import LOCK_NAME, RunDirectoryInUse, acquire_run_lock

HOLD = (
    "import sys, time; from pathlib import Path; from bloodseg.training.run_lock import acquire_run_lock; "
    "acquire_run_lock(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)"
)


def test_second_run_into_a_directory_in_use_names_the_holder_and_a_dead_holder_is_stale(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = compose_train([*SMOKE, *ONE_BATCH])
        with pytest.raises(
            RunDirectoryInUse, match=f"is in use by pid {holder.pid} on .*delete .*{LOCK_NAME}"
        ):
            train(cfg, tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # refused before any work
        result = run_tool("bloodseg.train", *SMOKE, *ONE_BATCH, f"hydra.run.dir={tmp_path}")
        assert result.returncode == 2 and f"is in use by pid {holder.pid}" in result.stderr
        assert "Traceback" not in result.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # no .hydra/, train.log, status
        sweep = tmp_path.parent / f"{tmp_path.name}_sweep"
        (sweep / "0").mkdir(parents=True)
        (sweep / "0" / LOCK_NAME).write_text((tmp_path / LOCK_NAME).read_text())  # a live job of that sweep
        result = run_tool("bloodseg.train", "-m", *SMOKE, *ONE_BATCH, f"hydra.sweep.dir={sweep}")
        assert result.returncode == 2 and f"{sweep / '0'} is in use by pid {holder.pid}" in result.stderr
        assert sorted(p.name for p in (sweep / "0").iterdir()) == [LOCK_NAME]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_NAME).is_file()  # left behind by the killed holder
    lock = acquire_run_lock(tmp_path)  # recognised as stale: taken over
    assert f'"pid": {os.getpid()}' in lock.read_text()
