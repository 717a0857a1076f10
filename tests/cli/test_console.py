"""The command line as users meet it: quiet runs, help texts, completion, console scripts, failed checks."""

from __future__ import annotations

import importlib
import re
import sys
import tomllib

import pytest
from conftest import CONF_DIR, ONE_BATCH, ROOT, compose_train, run_cli

LIBRARY_NOISE = {
    "litlogger": "Lightning's litlogger advertisement",
    "LeafSpec": "torch's _pytree deprecation warning raised inside Lightning",
    "on_after_batch_transfer": "Lightning's warning about the hook overridden in the LightningModule",
}


@pytest.mark.slow
def test_smoke_run_prints_no_library_noise(tmp_path):
    result = run_cli(
        "bloodseg.train",
        "experiment=segnet_vgg16",
        *ONE_BATCH,
        "trainer.max_epochs=1",
        "data.augment_on_device=true",  # the hook Lightning warned about is in use
        f"hydra.run.dir={tmp_path}",
        warnings="default",  # what a user sees
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for text, what in LIBRARY_NOISE.items():
        assert text not in result.stderr, f"{what} is back:\n{result.stderr[-3000:]}"


# ---- console scripts, help, completion --------------------------------------------------------
HYDRA_TOOLS = ["train", "evaluate", "predict", "suggest", "export", "bench"]


def console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts]: script name -> "module:function"."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def script_function(name: str):
    """The function console script `name` calls."""
    module, function = console_scripts()[name].split(":")
    return getattr(importlib.import_module(module), function)


def run_script(name: str, *args: str, monkeypatch, capsys) -> tuple[int, str]:
    """Call console script `name` in this process as pip's wrapper does (argv[0] = name); (exit code, stdout)."""
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.setattr(sys, "argv", [name, *args])
    code = 0
    try:
        result = script_function(name)()
        code = result if isinstance(result, int) else 0
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        GlobalHydra.instance().clear()
    return code, capsys.readouterr().out


def test_every_tool_has_a_console_script_that_resolves():
    scripts = console_scripts()
    wanted = {f"bloodseg-{tool}" for tool in HYDRA_TOOLS}
    wanted |= {"bloodseg-report", "bloodseg-sweep-report", "bloodseg-aggregate"}
    assert wanted <= set(scripts)
    for name in scripts:
        assert callable(script_function(name)), name


@pytest.mark.parametrize("tool", HYDRA_TOOLS)
def test_help_is_the_tools_own_text(tool, monkeypatch, capsys):
    code, text = run_script(f"bloodseg-{tool}", "--help", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    assert text.startswith(f"bloodseg-{tool} (python -m bloodseg.{tool}): ")
    assert "Examples:" in text and "powered by Hydra" not in text
    assert "_schema" not in text  # the typed schemas behind the options are not options
    if tool in ("evaluate", "predict", "suggest", "export"):  # they take no training groups
        assert "optimizer" not in text and "scheduler" not in text


def test_schemas_are_not_options():
    from hydra.errors import MissingConfigException

    for override in ("optimizer=adam_schema", "model=segnet_schema", "scheduler=cosine_schema"):
        with pytest.raises(MissingConfigException):
            compose_train([override])


def test_completion_of_the_console_script(monkeypatch, capsys):
    def complete(line: str) -> list[str]:
        """What bash completion offers for the command line typed so far (Hydra's -sc query=bash)."""
        monkeypatch.setenv("COMP_LINE", line)
        code, out = run_script(line.split()[0], "-sc", "query=bash", monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0
        return out.split()

    assert complete("bloodseg-train optimizer=") == ["optimizer=adam", "optimizer=adamw", "optimizer=sgdm"]
    assert complete("bloodseg-train loss.class_") == ["loss.class_weighting="]
    # a choice completes to what one types, not the Python enum's repr
    assert complete("bloodseg-train loss.class_weighting=") == ["loss.class_weighting=median_frequency"]
    assert complete("bloodseg-predict predict.mo") == ["predict.mode="]


def test_completion_script_installs_for_the_console_script(monkeypatch, capsys):
    code, out = run_script("bloodseg-train", "-sc", "install=bash", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and out.rstrip().endswith("-F hydra_bash_completion bloodseg-train")


# ---- failed argument checks leave nothing behind ------------------------------------------------
@pytest.mark.parametrize("tool", ["predict", "evaluate", "export"])
def test_a_call_missing_its_arguments_exits_2_and_writes_nothing(tool, tmp_path):
    result = run_cli(f"bloodseg.{tool}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "ckpt_path=" in result.stderr  # the error names what to give
    assert list(tmp_path.iterdir()) == []  # no outputs/, no .hydra/, no log file


def test_predict_writes_to_a_dated_folder_by_default():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="predict")
    assert re.fullmatch(r"outputs/predict/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.output_dir)


# ---- one argument style -----------------------------------------------------------------------
def test_folder_tools_take_their_options_as_key_value(tmp_path, capsys):
    from bloodseg.cli import key_value_options
    from bloodseg.report import main as report

    assert key_value_options(["d/", "out=r.json", "--md", "t.md", "seed=1"], ["out", "md"]) == [
        "d/",
        "--out",
        "r.json",
        "--md",
        "t.md",
        "seed=1",  # not an option of this tool: left alone
    ]
    run_dir = tmp_path / "run"  # a failed run: the smallest folder a report is written for
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "job_status.json").write_text('{"status": "failed", "error": "E", "traceback": ""}')
    assert report([str(run_dir), f"out={tmp_path / 'r.html'}"]) == 0
    assert (tmp_path / "r.html").is_file() and not (run_dir / "report.html").exists()


def test_a_weights_download_announces_itself_on_stderr_not_stdout(monkeypatch, capsys):
    """torch.hub prints 'Downloading: ...' on stdout, which carries results (bench JSON, run summaries)."""
    import torch

    from bloodseg.models import weights

    def fake_hub_download(url, **kwargs):  # torch.hub's behaviour without the network
        print(f'Downloading: "{url}" to cache')
        return {"weight": torch.zeros(1)}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_hub_download)
    assert set(weights.download_imagenet_weights()) == {"weight"}
    out, err = capsys.readouterr()
    assert out == "" and "Downloading:" in err
