"""Every `python -m bloodseg.*` command of README.md runs, smoke-sized, and does what the README says.

The commands are read from the README's ```bash blocks, so README and code cannot drift apart: a new or
changed command is run as written, plus the smoke overrides below, with the README's placeholders
(``<run>``, ``<date>``, ``...``, ``smears/``, ``my_smears``, ``fields``) replaced by files made here.
Each line runs through its module's ``__main__`` in this process (`run_tool`), in an empty working
folder, which spares a 3-8 s interpreter start per line; the real-process path of every tool is run by
its own CLI tests. Lines that need a cluster, several GPUs or the internet are in EXEMPT with the reason.

A line that reads one of the shared real data sets (``data=cellavision``, ``experiment=smear_fields``,
``data=allidb1_masks``, or a placeholder standing for one, such as ``outputs/smear_fields/...``) is
skipped, naming the missing folder, where ``../shared/data`` lacks that set; every other line runs on
the synthetic default and made-up folders wherever the suite runs.

Exit status 0 is not enough: CHECKS gives, per tool, what its README section promises (the files it
writes, valid: metrics.json with a mean IoU in [0, 1], a labels PNG per input image, the exported model
with its metadata, ...), and OPTION_CHECKS what an option must change (``evaluation.tta=dihedral``
changes the confusion counts of the checkpoint's own evaluation, ``predict.mode`` the mode each image
went through, a resumed run trains only epochs after the checkpoint's, ...).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, ONE_BATCH, ROOT, compose_train, run_tool
from omegaconf import OmegaConf
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
# the shared real data sets; conftest's fixture <name>_dir skips, naming the folder, where one is absent
REAL_DATA = ("cellavision", "smear_fields", "allidb1_masks")
# class names of a run by its data preset (README: Bring your own data, CellaVision, smear fields)
CLASS_NAMES = {"cellavision": ["background", "cytoplasm", "nucleus"], "smear_fields": ["background", "cell"]}
PAPER_CLASSES = ["background", "rbc", "wbc"]
# appended to every training command: one tiny epoch of one batch, CSV logging, no progress bar
TRAIN_SMOKE = [*ONE_BATCH, "trainer.max_epochs=1"]
BENCH_SMOKE = ["debug=smoke", "bench.measurements=[bf_score]", "bench.bf_batch_size=2"]
# README: "evaluate, predict and export write only where you point them"; the bench writes no files
WRITE_ONLY_WHERE_POINTED = ("bloodseg.evaluate", "bloodseg.predict", "bloodseg.export", "bloodseg.bench")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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


def data_preset(argv: list[str]) -> str | None:
    """The data= option of a command (or the one its experiment sets), None when it uses the default."""
    given = next((a.split("=", 1)[1] for a in argv if a.startswith("data=")), None)
    return "smear_fields" if given is None and "experiment=smear_fields" in argv else given


def real_data(argv: list[str]) -> str | None:
    """The shared real data set a README command reads: its data preset, or the smear fields where a
    placeholder stands for them (``outputs/smear_fields/...``, ``fields/...``); None for synthetic data."""
    data = data_preset(argv)
    if data in REAL_DATA:
        return data
    stands_for_fields = any("smear_fields/" in arg or "=fields/" in arg for arg in argv)
    return "smear_fields" if stands_for_fields else None


def options(argv: list[str]) -> dict[str, str]:
    """The key=value arguments of a command line, by key (``+`` dropped, brackets of optional ones too)."""
    pairs = [arg.strip("[]").lstrip("+").partition("=") for arg in argv[1:]]
    return {key: value for key, eq, value in pairs if eq}


def provide_real_data(name: str, files: dict, request) -> None:
    """Make the files of the shared set ``name`` that the README's placeholders stand for (once).

    Where the set is absent, conftest's fixture skips the test that asks, naming the missing folder.
    """
    real = request.getfixturevalue(f"{name}_dir")
    if name in files:
        return
    base = files["base"]
    if name == "cellavision":
        files["cellavision"] = real
    elif name == "smear_fields":
        files["smear_fields"] = small_smear_copy(real, base / "smear_fields")
    else:
        (base / "allidb1").mkdir()
        masks = three_fields(real, base / "allidb1")  # the real masks of three fields
        made_up_images(masks, base / "allidb1" / "images", ["Im001_1", "Im002_1", "Im003_1"])
        files["allidb1_masks"], files["allidb1_images"] = masks, base / "allidb1" / "images"


@pytest.fixture(scope="module")
def files(smoke_run, tmp_path_factory):
    """What the README's placeholders stand for: a run and its checkpoint, smear images, user folders.

    The real data sets are added by `provide_real_data`, for the commands that read them.
    """
    base = tmp_path_factory.mktemp("readme")
    smoke_dir, _ = smoke_run
    run_dir = base / "run"  # a copy of the smoke run: evaluate and export write into it, report too
    shutil.copytree(smoke_dir, run_dir, ignore=shutil.ignore_patterns("wandb"))
    smears = base / "smears"  # an RGB and a greyscale smear of other sizes than the training size
    smears.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(smears / "smear1.png")
    Image.fromarray(rng.integers(0, 256, (120, 160), dtype=np.uint8)).save(smears / "smear2.png")
    colour, index = base / "my_smears_colour", base / "my_smears_index"
    make_folder(colour, n=10, colour=True)
    make_folder(index, n=10, colour=False)
    preds = base / "preds"  # another tool's index PNGs, same stems as the ground truth
    make_folder(preds, n=10, colour=False, seed=1)
    return {
        "base": base,
        "ckpt": run_dir / "checkpoints" / "last.ckpt",
        "run_dir": run_dir,
        "smears": smears,
        "colour": colour,
        "index": index,
        "preds": preds / "labels",
        "trained": {},  # checkpoints of README training lines, by data preset
    }


def substitute(argv: list[str], files: dict, out: Path) -> list[str]:
    """The README command with its placeholders replaced by real temporary paths."""
    data = data_preset(argv) or real_data(argv)
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
        elif key == "data.root" and value == "/moved/copy":  # the images the checkpoint saw, moved
            value = str(shutil.copytree(files["colour"], out / "moved_copy"))
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
            fields = value.startswith("fields/")
            value = str(files["smear_fields"] / value.removeprefix("fields/") if fields else files["smears"])
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
            if arg.startswith("multirun/"):
                arg = str(files["multirun"])
            elif "smear_fields/" in arg:  # the run that trained on the fields
                arg = str(files["trained"]["smear_fields"].parent.parent)
            else:
                arg = str(files["run_dir"])
        elif not eq and arg.endswith((".json", ".md", ".html")):
            arg = str(out / arg.rsplit("/", 1)[-1])
        result.append(f"{key}={value}" if eq else arg)
    if data == "cellavision" and not any(a.startswith("data.root=") for a in argv):
        result.append(f"data.root={files['cellavision']}")  # offline: the download cache is empty
    return result


def smoke_sized(argv: list[str], out: Path) -> list[str]:
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
    if module == "bloodseg.bench":  # evaluate, predict, export, suggest and bench keep no Hydra folder
        return [module, *args, *BENCH_SMOKE]
    return argv


def train_in_process(argv: list[str], run_dir: Path, files: dict) -> None:
    """A single training command through the train entry point's own function (same config, same code)."""
    # smoke images are 64x96: a training window must fit inside them
    shrink = {"data.crop_size": "data.crop_size=[32,32]"}
    overrides = [shrink.get(a.split("=")[0], a) for a in argv[1:]] + TRAIN_SMOKE
    if "experiment=smear_fields" in argv and not any(a.startswith("data.crop_size=") for a in argv):
        overrides.append(shrink["data.crop_size"])  # the preset's 256x256 windows
    if any(a.startswith("ckpt_path=") for a in argv):
        overrides.append("trainer.max_epochs=3")  # one epoch past the checkpoint's
    train(compose_train(overrides), run_dir)
    if data_preset(argv):
        files["trained"].setdefault(data_preset(argv), run_dir / "checkpoints" / "last.ckpt")


# ---- what a command promises ----------------------------------------------------------------------------
@dataclass
class Ran:
    """A README command as it ran here."""

    argv: list[str]  # after substitution and smoke sizing
    out: Path  # the folder its outputs were pointed into (a training's run dir is out/run)
    files: dict
    started: float  # time.time() before it started
    stdout: str = ""
    evals_before: frozenset = frozenset()  # what its checkpoint's <run>/eval/ held before

    @property
    def module(self) -> str:
        return self.argv[0]

    @property
    def options(self) -> dict[str, str]:
        return options(self.argv)


def written(path: Path, since: float) -> Path:
    """path, asserted to be a non-empty file written by the command (not left by an earlier one)."""
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > 0, f"{path} is empty"
    assert path.stat().st_mtime >= since - 1, f"{path} is older than the command"
    return path


def read_json(path: Path, since: float = 0.0) -> dict:
    return json.loads(written(path, since).read_text())


def csv_rows(path: Path, since: float = 0.0) -> list[dict]:
    with open(written(path, since), newline="") as handle:
        return list(csv.DictReader(handle))


def valid_metrics(path: Path, since: float) -> dict:
    """metrics.json as the README's schema says: finite scores in [0, 1], a confusion matrix of counts."""
    metrics = read_json(path, since)
    mean_iou = metrics["dataset"]["mean_iou"]
    assert isinstance(mean_iou, float) and math.isfinite(mean_iou) and 0 <= mean_iou <= 1, mean_iou
    assert 0 <= metrics["dataset"]["global_accuracy"] <= 1
    matrix = metrics["confusion_matrix"]
    assert list(metrics["classes"]) == matrix["classes"]
    assert np.array(matrix["counts"]).shape == (len(matrix["classes"]),) * 2
    assert np.array(matrix["counts"]).sum() > 0 and metrics["num_images"] > 0
    return metrics


def evaluation_files(folder: Path, since: float, overlays: bool = True) -> dict:
    """An evaluation's files (README: "Both write metrics.json, metrics.md, ..."); returns metrics.json."""
    metrics = valid_metrics(folder / "metrics.json", since)
    assert "Table 1." in written(folder / "metrics.md", since).read_text()
    written(folder / "confusion_matrix.csv", since)
    written(folder / "confusion_matrix.png", since)
    assert len(csv_rows(folder / "per_image_metrics.csv", since)) == metrics["num_images"]
    if overlays:
        assert list(folder.glob("overlay_best_*.png")) and list(folder.glob("overlay_worst_*.png"))
    return metrics


def run_dirs(ran: Ran) -> list[Path]:
    """The run directories a training command made: its own, or every job of its multirun."""
    if "-m" not in ran.argv:
        return [ran.out / "run"]
    sweep = ran.out / "sweep"
    return sorted(path.parent for path in sweep.glob("*/.hydra"))


def check_train(ran: Ran) -> None:
    """README, Train: per run split.json, data_report.json, checkpoints/last.ckpt, csv/metrics.csv,
    metrics.json / .md, confusion matrix, per-image metrics, Figures 4 and 5; a multirun's jobs
    complete and the sweep table at its end."""
    classes = CLASS_NAMES.get(data_preset(ran.argv), PAPER_CLASSES)
    if "data.classes" in ran.options:
        classes = re.findall(r"name:(\w+)", ran.options["data.classes"])
    runs = run_dirs(ran)
    seeds = ran.options.get("seed", "").split(",")
    assert len(runs) == (len(seeds) if "-m" in ran.argv else 1), runs
    for run in runs:
        for name in (
            "checkpoints/last.ckpt",
            "data_report.json",
            "figure4_ground_truth.png",
            "figure5_class_pixels.png",
        ):
            written(run / name, ran.started)
        split = read_json(run / "split.json", ran.started)
        metrics = evaluation_files(run, ran.started, overlays=False)  # no overlays in smoke runs
        assert metrics["confusion_matrix"]["classes"] == classes
        assert split["train"] and split["test"] and not set(split["train"]) & set(split["test"])
        assert any(row["epoch"] for row in csv_rows(run / "csv" / "metrics.csv", ran.started))
        if "-m" in ran.argv:
            assert read_json(run / "job_status.json", ran.started)["status"] == "completed"
    if "-m" in ran.argv:  # "at the end of a multirun, the sweep table (also written as sweep_summary.csv)"
        rows = csv_rows(ran.out / "sweep" / "sweep_summary.csv", ran.started)
        assert sorted(row["job_dir"] for row in rows) == sorted(str(run) for run in runs)
        written(ran.out / "sweep" / "sweep_summary.md", ran.started)


def checkpoint_run(ckpt: Path) -> Path:
    """The run a checkpoint <run>/checkpoints/last.ckpt belongs to."""
    assert ckpt.parent.name == "checkpoints"
    return ckpt.parent.parent


def new_evaluation_folder(ran: Ran) -> Path:
    """README, Evaluate: "artifacts go to a new <run>/eval/<split>-<H>x<W>-<time>/ (or output_dir=...)"."""
    if "output_dir" in ran.options:
        return Path(ran.options["output_dir"])
    eval_root = checkpoint_run(Path(ran.options["ckpt_path"])) / "eval"
    (folder,) = set(eval_root.iterdir()) - ran.evals_before
    assert re.fullmatch(r"test-\d+x\d+-\d{8}-\d{6}", folder.name), folder.name
    return folder


def check_evaluate(ran: Ran) -> None:
    """README, Evaluate: metrics.json, metrics.md, confusion matrix, per-image metrics and overlays, and
    Tables 1 and 2 on stdout; a checkpoint without data=/tta gives exactly its run's own test numbers."""
    assert "Table 1." in ran.stdout and "Table 2." in ran.stdout
    folder = new_evaluation_folder(ran)
    metrics = evaluation_files(folder, ran.started)
    if "pred_dir" in ran.options:  # folder mode: one score per predicted PNG, the class table of data=
        assert metrics["num_images"] == len(list(Path(ran.options["pred_dir"]).glob("*.png")))
        assert metrics["confusion_matrix"]["classes"] == PAPER_CLASSES
        return
    ckpt = Path(ran.options["ckpt_path"])
    assert metrics["checkpoint"] == str(ckpt)
    assert metrics["test_time_augmentation"] == ran.options.get("evaluation.tta", "none")
    own = valid_metrics(checkpoint_run(ckpt) / "metrics.json", 0)
    assert metrics["confusion_matrix"]["classes"] == own["confusion_matrix"]["classes"]
    if "data" not in ran.options and "evaluation.tta" not in ran.options:
        assert metrics["confusion_matrix"]["counts"] == own["confusion_matrix"]["counts"]
        assert metrics["dataset"] == own["dataset"]


def input_images(ran: Ran) -> list[Path]:
    given = Path(ran.options["input"])
    return [given] if given.is_file() else sorted(p for p in given.iterdir() if p.suffix in IMAGE_SUFFIXES)


def check_predict(ran: Ran) -> None:
    """README, Predict: per image <stem>_labels.png (a palette PNG of the image's size), _overlay,
    one picture per non-background class, _instances, _outlines; counts.csv, cells.csv, summary.json."""
    out, images = Path(ran.options["output_dir"]), input_images(ran)
    summary = read_json(out / "summary.json", ran.started)
    assert summary["status"] == "complete" and summary["skipped"] == [] and summary["not_predicted"] == []
    assert summary["predicted"] == len(images) > 0
    assert [row["image"] for row in summary["images"]] == [image.name for image in images]
    assert f"predicted {len(images)} image(s)" in ran.stdout
    for image in images:
        labels = Image.open(written(out / f"{image.stem}_labels.png", ran.started))
        assert labels.mode == "P" and labels.size == Image.open(image).size
        assert np.asarray(labels).max() < len(summary["class_names"])
        pictures = ["overlay", "instances", "outlines", *summary["class_names"][1:]]
        for picture in pictures:
            written(out / f"{image.stem}_{picture}.png", ran.started)
    assert [row["image"] for row in csv_rows(out / "counts.csv", ran.started)] == [i.name for i in images]
    written(out / "cells.csv", ran.started)


def check_suggest(ran: Ran) -> None:
    """README, labelling loop: ranking.csv (every image, most uncertain first), suggested.txt (the top
    n files) and <stem>_uncertainty.png for those n."""
    out, images = Path(ran.options["output_dir"]), input_images(ran)
    ranking = csv_rows(out / "ranking.csv", ran.started)
    assert sorted(row["image"] for row in ranking) == sorted(image.name for image in images)
    scores = [float(row["score"]) for row in ranking]
    assert scores == sorted(scores, reverse=True)
    assert [int(row["rank"]) for row in ranking] == list(range(1, len(images) + 1))
    suggested = written(out / "suggested.txt", ran.started).read_text().splitlines()
    assert len(suggested) == min(int(ran.options["n"]), len(images))
    for path in suggested:
        written(out / f"{Path(path).stem}_uncertainty.png", ran.started)


def exported_metadata(path: Path) -> dict:
    """The bloodseg metadata inside an exported model: ONNX metadata_props, TorchScript's extra file."""
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props["bloodseg"])
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("/extra/bloodseg.json")]
        return json.loads(archive.read(name))


def check_export(ran: Ran) -> None:
    """README, Export: the model file (output=, else next to the checkpoint: last.onnx /
    last.torchscript.pt) with class names and training size in its metadata, parity checked."""
    ckpt, fmt = Path(ran.options["ckpt_path"]), ran.options["format"]
    default = ckpt.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")
    path = Path(ran.options.get("output", default))
    record = json.loads(ran.stdout.strip().splitlines()[-1])
    assert record["output"] == str(path) and record["format"] == fmt
    assert record["bytes"] == written(path, ran.started).stat().st_size
    assert record["meets_contract"] is True
    assert record["parity_images"] == int(ran.options.get("verify_count", 4))
    metadata = exported_metadata(path)
    own = read_json(checkpoint_run(ckpt) / "metrics.json")
    assert metadata["class_names"] == own["confusion_matrix"]["classes"]
    assert metadata["image_size"] == list(
        OmegaConf.load(Path(CONF_DIR) / "debug" / "smoke.yaml").data.image_size
    )


def check_sweep_report(ran: Ran) -> None:
    """README: sweep_report DIR writes sweep_summary.csv / .md (one row per job) and prints the table."""
    sweep = Path(ran.argv[1])
    rows = csv_rows(sweep / "sweep_summary.csv", ran.started)
    assert sorted(row["job_dir"] for row in rows) == sorted(str(p.parent) for p in sweep.glob("*/.hydra"))
    table = written(sweep / "sweep_summary.md", ran.started).read_text()
    assert table.strip() in ran.stdout


def check_aggregate(ran: Ran) -> None:
    """README: aggregate writes results.json (mean +- std per configuration over seeds) and the tables."""
    results = read_json(Path(ran.options["out"]), ran.started)
    (run,) = results["runs"]  # the seeds multirun: one configuration
    assert run["seeds"] == [1, 2, 3] and run["num_jobs"] == 3 and run["failed_jobs"] == 0
    assert 0 <= run["dataset"]["mean_iou"] <= 1 and run["dataset_std"]["mean_iou"] is not None
    assert results["ranked_by"] == "test/mean_iou" and results["best"] == run  # no validation split
    assert "±" in written(Path(ran.options["md"]), ran.started).read_text()


def check_report(ran: Ran) -> None:
    """README: report writes one self-contained HTML file (images embedded), <dir>/report.html or out=."""
    path = Path(ran.options.get("out", Path(ran.argv[1]) / "report.html"))
    assert str(path) in ran.stdout.splitlines()
    html = written(path, ran.started).read_text()
    assert "<html" in html and "data:image/png;base64," in html
    remote = re.search(r"""<(img|script|link|iframe)\b[^>]*\b(src|href)=["']?(https?:)?//""", html)
    assert not remote, f"the report loads {remote.group(0)}"


def check_bench(ran: Ran) -> None:
    """README, bench: stdout carries nothing but one JSON object per measurement, with the common keys."""
    lines = ran.stdout.strip().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert [record["name"] for record in records] == ["bf_score"]  # what BENCH_SMOKE measures
    keys = {"name", "model", "device", "precision", "batch_size", "images_per_s", "peak_mem_gib"}
    for record in records:
        assert keys <= set(record) and record["images_per_s"] > 0
        assert record["agrees_with_reference"] is True


CHECKS: dict[str, Callable[[Ran], None]] = {
    "bloodseg.train": check_train,
    "bloodseg.evaluate": check_evaluate,
    "bloodseg.predict": check_predict,
    "bloodseg.suggest": check_suggest,
    "bloodseg.export": check_export,
    "bloodseg.sweep_report": check_sweep_report,
    "bloodseg.aggregate": check_aggregate,
    "bloodseg.report": check_report,
    "bloodseg.bench": check_bench,
}


# ---- what an option must change -------------------------------------------------------------------------
def resumed_after_checkpoint(ran: Ran) -> None:
    """train ckpt_path=...: the run continues, training only epochs after the checkpoint's."""

    def trained_epochs(run: Path) -> set[int]:
        rows = csv_rows(run / "csv" / "metrics.csv")
        return {int(row["epoch"]) for row in rows if row.get("train/loss_step")}

    before = trained_epochs(checkpoint_run(Path(ran.options["ckpt_path"])))
    after = trained_epochs(ran.out / "run")
    assert after and min(after) == max(before) + 1, (before, after)


def class_weighting_recorded(ran: Ran) -> None:
    for run in run_dirs(ran):
        assert read_json(run / "metrics.json")["class_weighting"] == ran.options["loss.class_weighting"]


def validation_scored(ran: Ran) -> None:
    """A validation split (data.val_fraction, or the sweep presets): val metrics in metrics.json."""
    for run in run_dirs(ran):
        assert read_json(run / "split.json")["val"]
        assert 0 <= read_json(run / "metrics.json")["validation"]["mean_iou"] <= 1


def best_checkpoint_kept(ran: Ran) -> None:
    """callbacks.checkpoint.save_top_k=1 ...monitor=val/mean_iou: checkpoints/best-epochNNN.ckpt."""
    assert [p.name for p in (ran.out / "run" / "checkpoints").glob("best-epoch*.ckpt")] == [
        "best-epoch000.ckpt"
    ]


def model_in_checkpoint(ran: Ran) -> None:
    """model=NAME model.encoder=E: the checkpoint holds that network."""
    ckpt = torch.load(
        ran.out / "run" / "checkpoints" / "last.ckpt", map_location="cpu", mmap=True, weights_only=False
    )
    model = ckpt["bloodseg"]["config"]["model"]
    assert model["name"] == ran.options["model"] and model["encoder"] == ran.options["model.encoder"]


def trained_on_those_images(ran: Ran) -> None:
    """data.root=DIR: every image of the run's split is a file of DIR."""
    stems = {path.stem for path in Path(ran.options["data.root"]).rglob("*") if path.suffix in IMAGE_SUFFIXES}
    split = read_json(ran.out / "run" / "split.json")
    assert set(split["train"] + split["test"]) <= stems


def optuna_maximised_validation(ran: Ran) -> None:
    """+sweep=optuna_lr: Optuna's best value is the validation mean IoU of its best trial."""
    (job,) = run_dirs(ran)
    best = OmegaConf.load(written(ran.out / "sweep" / "optimization_results.yaml", ran.started))
    assert best.best_value == pytest.approx(read_json(job / "metrics.json")["validation"]["mean_iou"])


def tta_changes_the_predictions(ran: Ran) -> None:
    """evaluation.tta=dihedral: other predictions than the checkpoint's own test evaluation (no TTA)."""
    own = read_json(checkpoint_run(Path(ran.options["ckpt_path"])) / "metrics.json")
    metrics = read_json(new_evaluation_folder(ran) / "metrics.json")
    assert own["test_time_augmentation"] == "none" and ran.options["evaluation.tta"] != "none"
    assert metrics["confusion_matrix"]["counts"] != own["confusion_matrix"]["counts"]


def instance_setting_used(ran: Ran) -> None:
    """evaluation.instances.min_distance=N: the cells were split with N (the checkpoint's value otherwise)."""
    metrics = read_json(new_evaluation_folder(ran) / "metrics.json")
    assert metrics["instances"]["settings"]["min_distance"] == int(
        ran.options["evaluation.instances.min_distance"]
    )


def scored_at_the_preset_size(ran: Ran) -> None:
    """evaluate ckpt_path=... data=NAME: the run's test split (all of it), scored at NAME's data.image_size."""
    if "pred_dir" in ran.options:  # folder mode: data= only supplies the class table (check_evaluate)
        return
    height, width = OmegaConf.load(Path(CONF_DIR) / "data" / f"{ran.options['data']}.yaml").image_size
    folder = new_evaluation_folder(ran)
    assert folder.name.startswith(f"test-{height}x{width}-")
    split = read_json(checkpoint_run(Path(ran.options["ckpt_path"])) / "split.json")
    images = [row["image"] for row in csv_rows(folder / "per_image_metrics.csv")]
    assert sorted(images) == sorted(split["test"])


def predicted_in_that_mode(ran: Ran) -> None:
    summary = read_json(Path(ran.options["output_dir"]) / "summary.json")
    assert {row["mode"] for row in summary["images"]} == {ran.options["predict.mode"]}


# (tool, option key) -> what the option must have changed, checked after the tool's own CHECKS
OPTION_CHECKS: dict[tuple[str, str], Callable[[Ran], None]] = {
    ("bloodseg.train", "ckpt_path"): resumed_after_checkpoint,
    ("bloodseg.train", "loss.class_weighting"): class_weighting_recorded,
    ("bloodseg.train", "data.val_fraction"): validation_scored,
    ("bloodseg.train", "sweep"): validation_scored,  # the sweep presets carve a validation split
    ("bloodseg.train", "callbacks.checkpoint.save_top_k"): best_checkpoint_kept,
    ("bloodseg.train", "model"): model_in_checkpoint,
    ("bloodseg.train", "data.root"): trained_on_those_images,
    ("bloodseg.train", "hydra.sweeper.n_trials"): optuna_maximised_validation,
    ("bloodseg.evaluate", "evaluation.tta"): tta_changes_the_predictions,
    ("bloodseg.evaluate", "evaluation.instances.min_distance"): instance_setting_used,
    ("bloodseg.evaluate", "data"): scored_at_the_preset_size,
    ("bloodseg.predict", "predict.mode"): predicted_in_that_mode,
}


def check(ran: Ran) -> None:
    """What the command's README section promises, and what each of its options must change."""
    CHECKS[ran.module](ran)
    for key in ran.options:
        if (ran.module, key) in OPTION_CHECKS:
            OPTION_CHECKS[ran.module, key](ran)


def run_command(argv: list[str], out: Path, files: dict) -> Ran:
    """Run one substituted README command (in-process); returns what check() needs."""
    started = time.time()
    if argv[0] == "bloodseg.train" and "-m" not in argv:
        train_in_process(argv, out / "run", files)
        return Ran(argv, out, files, started)
    argv = smoke_sized(argv, out)
    evals_before = frozenset()
    if argv[0] == "bloodseg.evaluate" and "ckpt_path" in options(argv):
        eval_root = checkpoint_run(Path(options(argv)["ckpt_path"])) / "eval"
        evals_before = frozenset(eval_root.iterdir()) if eval_root.is_dir() else frozenset()
    result = run_tool(*argv)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    return Ran(argv, out, files, started, result.stdout, evals_before)


@pytest.fixture(scope="module")
def readme_multirun(files, request):
    """The README's seeds multirun, smoke-sized: the folder its sweep_report / aggregate / report lines
    read; and one README training line per data preset, whose checkpoints the evaluate lines score."""
    seeds = next(c for c in COMMANDS if c[0] == "bloodseg.train" and "-m" in c and "seed=1,2,3" in c)
    out = files["base"] / "seeds"
    files["done"] = {COMMANDS.index(seeds): run_command(seeds, out, files)}
    files["multirun"] = out / "sweep"
    for number, command in enumerate(COMMANDS):
        data = data_preset(command)
        if command[0] == "bloodseg.train" and "-m" not in command and data and data not in files["trained"]:
            if real_data(command):
                try:
                    provide_real_data(real_data(command), files, request)
                except pytest.skip.Exception:  # absent here: the lines that need it skip, saying so
                    continue
            train_out = files["base"] / f"train_{number}"
            files["done"][number] = run_command(substitute(command, files, train_out), train_out, files)
    return files


def test_readme_has_the_commands_this_test_expects():
    modules = {c[0] for c in COMMANDS}
    assert {"bloodseg.train", "bloodseg.evaluate", "bloodseg.predict", "bloodseg.report"} <= modules
    assert len(COMMANDS) >= 30
    # a new tool in the README needs a check of what it promises
    assert {c[0] for c in COMMANDS if not exempt_reason(c)} <= set(CHECKS)


@pytest.mark.parametrize("number", range(len(COMMANDS)), ids=lambda i: " ".join(COMMANDS[i])[:90])
def test_readme_command_runs(number, readme_multirun, tmp_path, monkeypatch, request):
    files = readme_multirun
    argv = COMMANDS[number]
    reason = exempt_reason(argv)
    if reason:
        pytest.skip(f"exempt: {reason}")
    if real_data(argv):
        provide_real_data(real_data(argv), files, request)  # skips, naming the folder, where absent
    if number in files["done"]:  # run by the fixture, which later lines need
        check(files["done"][number])
        return
    cwd = tmp_path / "cwd"  # relative paths a tool writes to land here
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    ran = run_command(substitute(argv, files, tmp_path), tmp_path, files)
    check(ran)
    if argv[0] in WRITE_ONLY_WHERE_POINTED:
        assert not list(cwd.iterdir()), f"{argv[0]} wrote into the working folder"
