"""A non-editable install (a built wheel) carries the YAML configs, and its entry points run from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import CONF_DIR, ROOT

pytestmark = pytest.mark.slow


def test_a_built_wheel_holds_every_config_and_trains_from_them(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT / "bloodseg", source / "bloodseg", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("bloodseg-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("bloodseg/conf/")}
        archive.extractall(tmp_path / "site")  # a pure-Python wheel: unpacking it is installing it
    expected = {f"bloodseg/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert expected and expected <= shipped, sorted(expected - shipped)[:10]

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    where = subprocess.run(
        [sys.executable, "-c", "import bloodseg, sys; print(bloodseg.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(tmp_path / "site")), where.stdout + where.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "bloodseg.train", "--cfg", "job", "experiment=unet_resnet34", "data=cellavision"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "arch: unet" in shown.stdout and "crop_size:" in shown.stdout
