"""Shared fixtures. Tests never touch the network or the user's caches."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"
CELLAVISION = SHARED_DATA / "cellavision_wbc"


def pytest_configure(config):
    """Isolate every test run: offline, private caches, W&B offline."""
    cache = Path(os.environ.get("BLOODSEG_TEST_CACHE", ROOT / ".pytest_cache" / "bloodseg"))
    os.environ["BLOODSEG_OFFLINE"] = "1"
    os.environ["BLOODSEG_CACHE_DIR"] = str(cache / "data")
    os.environ["TORCH_HOME"] = str(cache / "torch")
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def cellavision_dir() -> Path:
    """The shared real CellaVision set; skipped (with the reason) only where it is absent."""
    if not (CELLAVISION / "001.bmp").exists():
        pytest.skip(f"real data not present at {CELLAVISION} (tests read it from ../shared/data)")
    return CELLAVISION


def run_cli(module: str, *args: str, cwd: Path = ROOT, timeout: int = 600, warnings: str = "ignore"):
    """Run `python -m module args...` as a user would; returns the CompletedProcess.

    warnings: PYTHONWARNINGS for the run ("default" shows what a user would see).
    """
    import subprocess

    env = dict(os.environ, PYTHONWARNINGS=warnings, HYDRA_FULL_ERROR="0")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def compose_train(overrides: list[str]):
    """The composed train config for these overrides, as `python -m bloodseg.train` would see it."""
    from hydra import compose, initialize_config_dir

    import bloodseg.config  # noqa: F401  (registers the schemas)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


SMOKE = ["experiment=segnet_vgg16", "debug=smoke"]
# smoke runs cut to one batch per split, CSV logging, no progress bar, no overlays (add trainer.max_epochs)
ONE_BATCH = [
    "debug=smoke",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=csv",
    "callbacks.progress_bar=none",
    "evaluation.num_overlays=0",
]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One `python -m bloodseg.train experiment=segnet_vgg16 debug=smoke` run, shared by the CLI tests."""
    run_dir = tmp_path_factory.mktemp("smoke")
    result = run_cli("bloodseg.train", *SMOKE, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result
