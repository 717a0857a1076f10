"""Optional dependencies: the default install lacks them; a feature that needs one names its extra."""

from __future__ import annotations

import tomllib

import pytest
from conftest import ROOT

from bloodseg.config import CONF_DIR
from bloodseg.errors import BloodsegError
from bloodseg.extras import HYDRA_PLUGINS, check_hydra_plugins, installed, require

EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_a_missing_dependency_is_one_line_naming_the_extra():
    with pytest.raises(BloodsegError) as error:
        require("bloodseg_no_such_module.sub", "export", "format=onnx")
    message = str(error.value)
    assert "\n" not in message and "format=onnx" in message and "bloodseg_no_such_module" in message
    assert "pip install 'bloodseg[export]'" in message
    require("numpy", "count", "anything")  # an installed one passes
    assert installed("scipy.ndimage") and not installed("bloodseg_no_such_module.sub")


def test_overrides_selecting_an_uninstalled_hydra_plugin_name_its_extra():
    missing = {
        name: (f"hydra_plugins.not_installed_{name}", extra) for name, (_, extra) in HYDRA_PLUGINS.items()
    }
    for override, extra in (
        ("hydra/launcher=joblib_local", "sweeps"),  # conf/hydra/launcher/joblib_local.yaml: defaults joblib
        ("+sweep=optuna_lr", "sweeps"),  # conf/sweep/optuna_lr.yaml: override /hydra/sweeper: optuna
        ("hydra/launcher=slurm", "slurm"),
        ("hydra/sweeper=optuna", "sweeps"),  # a plugin's own config, named directly
    ):
        with pytest.raises(BloodsegError, match=rf"^{override.replace('+', '[+]')} .*bloodseg\[{extra}\]"):
            check_hydra_plugins(["experiment=segnet_vgg16", override], CONF_DIR, plugins=missing)
    # overrides that need no plugin pass, whatever is installed
    check_hydra_plugins(
        ["optimizer=adam", "+sweep=class_weighting_lr", "seed=1,2"], CONF_DIR, plugins=missing
    )


def test_the_installed_plugins_pass():
    """Where every plugin is installed (make install gets them all), selecting each raises nothing."""
    assert all(installed(module) for module, _ in HYDRA_PLUGINS.values())
    assert (
        check_hydra_plugins(
            ["hydra/launcher=joblib_local", "+sweep=optuna_lr", "hydra/launcher=slurm"], CONF_DIR
        )
        is None
    )


def test_make_install_gets_every_extra():
    """`make train` / `make test` install .[dev]: it must hold every optional part the README uses."""
    assert "install -e '.[dev]'" in (ROOT / "Makefile").read_text()
    assert "bloodseg[all]" in EXTRAS["dev"]
    optional = set(EXTRAS) - {"all", "dev"}
    assert EXTRAS["all"] == [f"bloodseg[{','.join(sorted(optional, key=list(EXTRAS).index))}]"]
    assert {extra for _, extra in HYDRA_PLUGINS.values()} | {"export", "count"} == optional
