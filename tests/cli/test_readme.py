"""Every `python -m bloodseg.*` command of README.md runs, smoke-sized, with temporary paths.

The commands are read from the README's ```bash blocks, so README and code cannot drift apart: a new or
changed command is run as written, plus the smoke overrides below, with the README's placeholders
(``<run>``, ``<date>``, ``...``, ``smears/``, ``my_smears``) replaced by files made here. Each line runs
through its module's ``__main__`` in this process (`run_tool`), which spares a 3-8 s interpreter start
per line; the real-process path of every tool is run by its own CLI tests. Lines that need a
cluster, several GPUs or the internet are in EXEMPT with the reason; any other line must succeed.
"""

from __future__ import annotations

import re
import shlex
import shutil

import numpy as np
import pytest
from conftest import ONE_BATCH, ROOT, compose_train, run_tool
from PIL import Image
from test_folder_data import make_folder
from test_real_fields import made_up_images, small_smear_copy, three_fields

from bloodseg.training.run import train

pytestmark = pytest.mark.slow

EXEMPT = {
    "hydra/launcher=slurm": "submits to a SLURM cluster",
    "launcher_gpus=[0,1,2,3]": "pins one of four GPUs per parallel job (the joblib launcher and GPU locks are "
    "tested in test_sweeps without GPUs)",
    "trainer.devices=4": "needs four GPUs (DDP itself is tested in test_sweeps on two CPU processes)",
    "bloodseg.data.download": "downloads from the internet (tests never touch the network)",
}
# appended to every training command: one tiny epoch of one batch, CSV logging, no progress bar
TRAIN_SMOKE = [*ONE_BATCH, "trainer.max_epochs=1"]
BENCH_SMOKE = ["debug=smoke", "bench.measurements=[bf_score]", "bench.bf_batch_size=2"]


def readme_commands() -> list[list[str]]:
    """The `python -m bloodseg.*` lines of README.md's bash blocks, continuation lines joined, as argv."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:2] == ["python", "-m"] and argv[2].startswith("bloodseg"):
                commands.append(argv[2:])
    return commands


COMMANDS = readme_commands()


def exempt_reason(argv: list[str]) -> str | None:
    """Why a README command is not run here, or None."""
    return next((why for token, why in EXEMPT.items() if token in argv), None)


@pytest.fixture(scope="module")
def files(smoke_run, tmp_path_factory, cellavision_dir, smear_fields_dir, allidb1_masks_dir):
    """What the README's placeholders stand for: a checkpoint, run dirs, smear images, user folders."""
    base = tmp_path_factory.mktemp("readme")
    run_dir, _ = smoke_run
    ckpt = base / "ckpt" / "last.ckpt"  # a copy: export writes next to it
    ckpt.parent.mkdir()
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", ckpt)
    smears = base / "smears"
    smears.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(smears / "smear1.png")
    colour, index = base / "my_smears_colour", base / "my_smears_index"
    make_folder(colour, n=10, colour=True)
    make_folder(index, n=10, colour=False)
    preds = base / "preds"  # another tool's index PNGs, same stems as the ground truth
    make_folder(preds, n=10, colour=False, seed=1)
    smear_fields = small_smear_copy(smear_fields_dir, base / "smear_fields")
    (base / "allidb1").mkdir()
    allidb1_masks = three_fields(allidb1_masks_dir, base / "allidb1")  # the real masks of three fields
    made_up_images(allidb1_masks, base / "allidb1" / "images", ["Im001_1", "Im002_1", "Im003_1"])
    return {
        "smear_fields": smear_fields,
        "allidb1_masks": allidb1_masks,
        "allidb1_images": base / "allidb1" / "images",
        "base": base,
        "ckpt": ckpt,
        "run_dir": run_dir,
        "smears": smears,
        "colour": colour,
        "index": index,
        "preds": preds / "labels",
        "cellavision": cellavision_dir,
        "trained": {},  # checkpoints of README training lines, by data preset
    }


def substitute(argv: list[str], files: dict, out) -> list[str]:
    """The README command with its placeholders replaced by real temporary paths."""
    data = data_preset(argv)
    result = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if arg == "...":  # "the arguments of the line above"
            result += [f"ckpt_path={files['ckpt']}", f"input={files['smears']}", f"output_dir={out / 'pred'}"]
            continue
        if arg.startswith("[") and arg.endswith("]"):  # an optional argument, shown in brackets
            arg = arg[1:-1]
            key, eq, value = arg.partition("=")
        if key == "ckpt_path" and ("<run>" in value or "..." in value):
            trained = files["trained"].get(data) if data else None  # a checkpoint trained on that data
            value = str(trained or files["ckpt"])
        elif key == "data.mask_root":
            value = str(files["allidb1_masks"])
        elif key == "data.root":
            if data == "cellavision":
                value = str(files["cellavision"])
            elif data == "allidb1_masks":
                value = str(files["allidb1_images"])
            elif data == "smear_fields":
                value = str(files["smear_fields"])
            else:
                value = str(files["index"] if data == "folder" else files["colour"])
        elif key == "input":
            value = str(files["smears"])
        elif key == "verify_images":
            value = str(files["colour"] / "images" / "*.png")
        elif key in ("output", "out", "md"):  # a file to write
            value = str(out / value.rsplit("/", 1)[-1])
        elif key in ("output_dir", "image_dir", "gt_dir", "pred_dir"):
            value = {
                "output_dir": str(out / "output"),
                "image_dir": str(files["colour"] / "images"),
                "gt_dir": str(files["index"] / "labels"),
                "pred_dir": str(files["preds"]),
            }[key]
        elif not eq and ("<date>" in arg or arg == "DIR"):
            arg = str(files["multirun"] if arg.startswith("multirun/") else files["run_dir"])
        elif not eq and arg.endswith((".json", ".md", ".html")):
            arg = str(out / arg.rsplit("/", 1)[-1])
        result.append(f"{key}={value}" if eq else arg)
    if data == "cellavision" and not any(a.startswith("data.root=") for a in argv):
        result.append(f"data.root={files['cellavision']}")  # offline: the download cache is empty
    return result


def smoke_sized(argv: list[str], out) -> list[str]:
    """Smoke overrides for the command's entry point (sweeps shrunk to their first value, one trial)."""
    module, args = argv[0], argv[1:]
    if module == "bloodseg.train" and "-m" in args:
        # a grid shrinks to its first value (seeds stay: they are what aggregate averages over)
        args = [
            a if a.startswith("seed=") else re.sub(r"^([\w./]+)=([^,\[{]+),.*$", r"\1=\2", a) for a in args
        ]
        args = [re.sub(r"^hydra.sweeper.n_trials=\d+$", "hydra.sweeper.n_trials=1", a) for a in args]
        if "+sweep=class_weighting_lr" in args:
            args += ["loss.class_weighting=none", "optimizer.lr=1e-3"]  # one job of the grid
        return [module, *args, *TRAIN_SMOKE, f"hydra.sweep.dir={out / 'sweep'}"]
    if module == "bloodseg.bench":
        return [module, *args, *BENCH_SMOKE]  # evaluate, predict, export, suggest, bench keep no Hydra folder
    return argv


def data_preset(argv: list[str]) -> str | None:
    """The data= option of a command (or the one its experiment sets), None when it uses the default."""
    given = next((a.split("=", 1)[1] for a in argv if a.startswith("data=")), None)
    return "smear_fields" if given is None and "experiment=smear_fields" in argv else given


def train_in_process(argv: list[str], out, files: dict) -> None:
    """A single training command through the train entry point's own function (same config, same code)."""
    # smoke images are 64x96: a training window must fit inside them
    shrink = {"data.crop_size": "data.crop_size=[32,32]"}
    overrides = [shrink.get(a.split("=")[0], a) for a in argv[1:]] + TRAIN_SMOKE
    if "experiment=smear_fields" in argv and not any(a.startswith("data.crop_size=") for a in argv):
        overrides.append(shrink["data.crop_size"])  # the preset's 256x256 windows
    if any(a.startswith("ckpt_path=") for a in argv):
        overrides.append("trainer.max_epochs=3")  # one epoch past the checkpoint's
    train(compose_train(overrides), out)
    if data_preset(argv):
        files["trained"].setdefault(data_preset(argv), out / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def readme_multirun(files):
    """The README's seeds multirun, smoke-sized: the folder its sweep_report / aggregate / report lines read."""
    seeds = next(c for c in COMMANDS if c[0] == "bloodseg.train" and "-m" in c and "seed=1,2,3" in c)
    out = files["base"] / "seeds"
    result = run_tool(*smoke_sized(seeds, out))
    assert result.returncode == 0, result.stderr[-3000:]
    files["multirun"] = out / "sweep"
    files["done"] = {COMMANDS.index(seeds): out / "sweep" / "2" / "metrics.json"}
    # the evaluate lines score checkpoints of the README's own training lines for their data
    for number, command in enumerate(COMMANDS):
        data = data_preset(command)
        if command[0] == "bloodseg.train" and "-m" not in command and data and data not in files["trained"]:
            run_dir = out / f"train_{number}"
            train_in_process(substitute(command, files, out), run_dir, files)
            files["done"][number] = run_dir / "checkpoints" / "last.ckpt"
    return files


def test_readme_has_the_commands_this_test_expects():
    modules = {c[0] for c in COMMANDS}
    assert {"bloodseg.train", "bloodseg.evaluate", "bloodseg.predict", "bloodseg.report"} <= modules
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("number", range(len(COMMANDS)), ids=lambda i: " ".join(COMMANDS[i])[:90])
def test_readme_command_runs(number, readme_multirun, tmp_path):
    files = readme_multirun
    argv = COMMANDS[number]
    reason = exempt_reason(argv)
    if reason:
        pytest.skip(f"exempt: {reason}")
    if number in files["done"]:  # run by the fixture, which later lines need
        assert files["done"][number].is_file()
        return
    argv = substitute(argv, files, tmp_path)
    if argv[0] == "bloodseg.train" and "-m" not in argv:
        train_in_process(argv, tmp_path / "run", files)
        assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
        return
    result = run_tool(*smoke_sized(argv, tmp_path))
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
