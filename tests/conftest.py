"""Shared fixtures. Tests never touch the network or the user's caches."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import runpy
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "bloodseg" / "conf"  # the YAML configs ship inside the package
SHARED_DATA = ROOT.parent / "shared" / "data"
CELLAVISION = SHARED_DATA / "cellavision_wbc"
SMEAR_FIELDS = SHARED_DATA / "smear_fields"
ALLIDB1_MASKS = SHARED_DATA / "allidb1_masks"


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


@pytest.fixture(scope="session")
def smear_fields_dir() -> Path:
    """The shared real smear fields (train/ and val/); skipped (with the reason) only where absent."""
    if not (SMEAR_FIELDS / "val" / "masks").is_dir():
        pytest.skip(f"real data not present at {SMEAR_FIELDS} (tests read it from ../shared/data)")
    return SMEAR_FIELDS


@pytest.fixture(scope="session")
def allidb1_masks_dir() -> Path:
    """The shared ALL-IDB1 expert masks; skipped (with the reason) only where absent."""
    if not (ALLIDB1_MASKS / "Im001_1_RBC.tif").exists():
        pytest.skip(f"real data not present at {ALLIDB1_MASKS} (tests read it from ../shared/data)")
    return ALLIDB1_MASKS


def run_cli(module: str, *args: str, cwd: Path = ROOT, timeout: int = 600, warnings: str = "ignore"):
    """Run `python -m module args...` as a user would, in a new process; returns the CompletedProcess.

    warnings: PYTHONWARNINGS for the run ("default" shows what a user would see).
    """
    env = dict(os.environ, PYTHONWARNINGS=warnings, HYDRA_FULL_ERROR="0")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def signal_when(child: subprocess.Popen, ready, sent: int, what: str, wait_s: float = 240) -> tuple[str, str]:
    """Once ``ready()`` holds, send ``sent`` to the running child and return its (stdout, stderr); fails
    when the child ended first, and never leaves it running."""
    try:
        deadline = time.time() + wait_s
        while not ready() and child.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, f"{what} ended before it could be stopped"
        child.send_signal(sent)
        return child.communicate(timeout=120)
    finally:
        child.kill()


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess:
    """Run `python -m module args...` inside this process, as `python -m` would run it.

    The module is executed as ``__main__`` with ``sys.argv`` set (so Hydra's command line, its error
    handling and the tool's own exit codes are all the real ones), with stdout and stderr captured and
    warnings silenced as in `run_cli`. It spares the 3-8 s interpreter start and imports of a
    subprocess; tests that need a real process (signals, environment variables read at start-up,
    several processes) use `run_cli`.
    """
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_handlers = sys.argv, logging.getLogger().handlers[:]
    saved_level = logging.getLogger().level
    sys.argv = [module, *args]
    code = 0
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            _console_handlers_to(err),
            warnings.catch_warnings(),
            _env(HYDRA_FULL_ERROR="0"),
        ):
            warnings.simplefilter("ignore")
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except Exception:  # what the interpreter would print before exiting with 1
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        logging.getLogger().handlers[:] = saved_handlers  # Hydra configures logging per run
        logging.getLogger().setLevel(saved_level)
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _console_handlers_to(stream):
    """Every library logger's console handler writes to stream for the duration of the block.

    A library adds its console handler once, at import, bound to whatever sys.stderr was then (in a
    test session: an earlier test's capture, closed since); in a new process it is the real stderr.
    """
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {
        handler
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if type(handler) is logging.StreamHandler
    }
    saved = {handler: handler.stream for handler in handlers}
    for handler in handlers:
        handler.stream = stream  # not setStream(): it flushes the old stream, which may be closed
    try:
        yield
    finally:
        for handler, original in saved.items():
            handler.stream = original


@contextlib.contextmanager
def _env(**values: str):
    """Environment variables set for the duration of the block."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
