"""Optional dependencies (pip extras): a feature that needs a missing one fails with one line naming the extra.

The default install trains, evaluates, exports to TorchScript and benchmarks. The extras add:

- ``sweeps``: parallel sweep jobs on one machine (``hydra/launcher=joblib_local``) and the Optuna
  search (``+sweep=optuna_lr``): Hydra's joblib launcher and Optuna sweeper plugins;
- ``slurm``: SLURM jobs through submitit (``hydra/launcher=slurm``);
- ``export``: ONNX export and its ONNX Runtime check (``format=onnx``);
- ``count``: cell counting in ``bloodseg-predict`` (scikit-image's watershed).

``pip install 'bloodseg[all]'`` installs every one (``make install`` does, with the dev tools).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from bloodseg.errors import BloodsegError

# Hydra plugin configs (as named in a defaults list) -> (the plugin's module, the extra that installs it)
HYDRA_PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "sweeps"),
    "optuna": ("hydra_plugins.hydra_optuna_sweeper", "sweeps"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
}


def installed(module: str) -> bool:
    """Whether a module can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def require(module: str, extra: str, feature: str) -> None:
    """Fail with one line naming the extra when ``feature`` needs ``module`` and it is not installed."""
    if not installed(module):
        raise BloodsegError(
            f"{feature} needs the optional dependency '{module.split('.')[0]}', which is not installed; "
            f"fix: pip install 'bloodseg[{extra}]'"
        )


def _plugin_configs(override: str, conf_dir: Path) -> set[str]:
    """Hydra plugin configs a command-line override selects: directly, or in the defaults of its conf/ file."""
    key, eq, value = override.lstrip("+~").partition("=")
    if not eq:
        return set()
    names = {value}
    option = conf_dir / key / f"{value}.yaml"
    if option.is_file():  # e.g. hydra/launcher=joblib_local, whose defaults name joblib
        names |= set(
            re.findall(r"^\s*-\s*(?:override\s+\S+:\s*)?([\w/]+)\s*(?:#.*)?$", option.read_text(), re.M)
        )
    return names & set(HYDRA_PLUGINS)


def check_hydra_plugins(overrides: list[str], conf_dir: str | Path, plugins: dict | None = None) -> None:
    """Fail with one line naming the extra when the overrides select a Hydra plugin that is not installed.

    Hydra itself would stop at composing the config ("Could not find 'hydra/launcher/joblib'"),
    which does not say what to install.
    """
    plugins = HYDRA_PLUGINS if plugins is None else plugins
    for override in overrides:
        for name in sorted(_plugin_configs(override, Path(conf_dir)) & set(plugins)):
            module, extra = plugins[name]
            require(module, extra, f"{override} (Hydra's {name} plugin)")
