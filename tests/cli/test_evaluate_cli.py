"""`python -m bloodseg.evaluate`: a checkpoint on its stored split, and folders of index PNGs."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil

import matlab_reference as ref
import numpy as np
import pytest
from conftest import run_cli, run_tool
from PIL import Image
from test_metrics import random_case

from bloodseg.data.labels import palette_label
from bloodseg.data.synthetic import generate_smear

pytestmark = pytest.mark.slow


def evaluate_checkpoint(run_dir, out_dir, *overrides: str) -> None:
    """`python -m bloodseg.evaluate` on the run's last checkpoint into out_dir; it must succeed."""
    result = run_tool(
        "bloodseg.evaluate",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        *overrides,
        f"output_dir={out_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_checkpoint_evaluation_reproduces_the_training_numbers(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    evaluate_checkpoint(run_dir, tmp_path)
    trained = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluated["dataset"] == trained["dataset"] and evaluated["classes"] == trained["classes"]
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
    split = json.loads((run_dir / "split.json").read_text())
    with open(tmp_path / "per_image_metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["image"] for r in rows) == sorted(split["test"])
    for name in ("confusion_matrix.png", "confusion_matrix.csv", "metrics.md"):
        assert (tmp_path / name).is_file()


def test_evaluation_writes_its_own_folder_and_leaves_the_run_untouched(smoke_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run[0], run_dir)

    def digests():
        return {
            p.relative_to(run_dir): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in run_dir.rglob("*")
            if p.is_file()
        }

    before = digests()
    ckpt = f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}"
    result = run_tool("bloodseg.evaluate", ckpt)
    assert result.returncode == 0, result.stderr[-3000:]
    after = digests()
    assert {k: after[k] for k in before} == before  # metrics.json & co. of the training run: byte-identical
    (written,) = [p for p in set(after) - set(before) if p.name == "metrics.json"]
    assert written.parts[0] == "eval" and written.parent.name.startswith("test-64x96-")
    again = run_tool("bloodseg.evaluate", ckpt, f"output_dir={run_dir / written.parent}")
    assert again.returncode == 2 and "overwrite=true" in again.stderr and "Traceback" not in again.stderr
    assert digests() == after


def test_checkpoint_evaluation_does_not_depend_on_the_batch_size(smoke_run, tmp_path):
    """Scored one image at a time, the test split gets the training run's classes (rounding-only ties aside)."""
    run_dir, _ = smoke_run
    evaluate_checkpoint(run_dir, tmp_path, "batch_size=1")
    trained = np.array(json.loads((run_dir / "metrics.json").read_text())["confusion_matrix"]["counts"])
    alone = np.array(json.loads((tmp_path / "metrics.json").read_text())["confusion_matrix"]["counts"])
    assert alone.sum() == trained.sum()
    assert np.abs(alone - trained).sum() <= 2 * 0.0005 * trained.sum()  # at most 0.05% of pixels change class


def test_checkpoint_evaluation_on_the_training_split(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    evaluate_checkpoint(run_dir, tmp_path, "split=train")
    assert json.loads((tmp_path / "metrics.json").read_text())["num_images"] == 29


def write_folders(root, n=4, shift=True):
    for sub in ("gt", "pred", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, truth, _ = generate_smear(100 + i, 60, 80)
        pred = np.where(truth == 255, 0, truth)
        if shift:
            pred = np.roll(pred, i, axis=1)
        Image.fromarray(truth).save(root / "gt" / f"s{i}.png")
        Image.fromarray(pred.astype(np.uint8)).save(root / "pred" / f"s{i}.png")
        Image.fromarray(image).save(root / "images" / f"s{i}.png")


def folder_args(root, *extra):
    return [
        "bloodseg.evaluate",
        f"pred_dir={root / 'pred'}",
        f"gt_dir={root / 'gt'}",
        "data=synthetic",
        f"output_dir={root / 'out'}",
        *extra,
    ]


def test_folders_of_index_pngs(tmp_path):
    write_folders(tmp_path)
    result = run_cli(*folder_args(tmp_path, f"image_dir={tmp_path / 'images'}"))  # a real process
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_images"] == 4
    with open(tmp_path / "out" / "per_image_metrics.csv") as handle:
        rows = {r["image"]: r for r in csv.DictReader(handle)}
    assert float(rows["s0"]["global_accuracy"]) == 1.0 and float(rows["s0"]["mean_iou"]) == 1.0  # unshifted
    assert float(rows["s3"]["mean_iou"]) < 1.0 and float(rows["s3"]["mean_bf_score"]) < float(
        rows["s0"]["mean_bf_score"]
    )
    assert len(list((tmp_path / "out").glob("overlay_best_s0.png"))) == 1


def test_palette_predictions_score_like_index_ones(tmp_path):
    """predict's labels (palette PNGs in the class colours) are read by colour: same numbers as index PNGs."""
    write_folders(tmp_path)
    colours = [[255, 255, 0], [0, 0, 255], [0, 255, 0]]  # data=synthetic's class colours
    for path in (tmp_path / "pred").iterdir():
        palette_label(np.asarray(Image.open(path)), colours).save(path)
    gt = tmp_path / "gt" / "s1.png"  # and one GIMP-style colour ground truth with 2 pixels of no class
    ids = np.asarray(Image.open(gt))
    rgb = np.array(colours, np.uint8)[np.where(ids == 255, 0, ids)]
    rgb[0, :2] = [200, 10, 10]
    Image.fromarray(rgb).save(gt)
    result = run_cli(*folder_args(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "out" / "per_image_metrics.csv") as handle:
        rows = {r["image"]: r for r in csv.DictReader(handle)}
    assert float(rows["s0"]["mean_iou"]) == 1.0 and float(rows["s3"]["mean_iou"]) < 1.0
    truth = np.where(ids == 255, 0, ids)  # the colour truth as written: unlabelled drawn as background
    truth[0, :2] = 255  # its 2 pixels of no class are not scored
    pred = np.roll(np.where(ids == 255, 0, ids), 1, axis=1)  # s1: the index truth shifted by a pixel
    scored = truth != 255
    expected = float((pred[scored] == truth[scored]).mean())
    assert float(rows["s1"]["global_accuracy"]) == pytest.approx(expected, abs=5e-7)  # 6 decimals in the CSV
    assert expected < 0.99  # the shift shows
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["stray_ground_truth_pixels"] == 2 and "s1.png: 2 px" in result.stderr


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("class_id", "holds class ids [7]"),
        ("size", "must be the same size"),
        ("colour", "is a colour image"),
        ("missing", "have no partner"),
    ],
)
def test_folder_mode_bad_input(tmp_path, damage, message):
    write_folders(tmp_path, n=2, shift=False)
    pred = tmp_path / "pred" / "s1.png"
    if damage == "class_id":
        array = np.asarray(Image.open(pred)).copy()
        array[0, 0] = 7
        Image.fromarray(array).save(pred)
    elif damage == "size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(pred)
    elif damage == "colour":
        Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(pred)
    else:
        pred.unlink()
    result = run_tool(*folder_args(tmp_path))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_folder_mode_needs_a_class_table(tmp_path):
    write_folders(tmp_path, n=1)
    result = run_tool(
        "bloodseg.evaluate",
        f"pred_dir={tmp_path / 'pred'}",
        f"gt_dir={tmp_path / 'gt'}",
    )
    assert result.returncode == 2 and "data=NAME" in result.stderr


def test_stray_ground_truth_values_are_ignored_and_counted(tmp_path):
    write_folders(tmp_path, n=2, shift=False)
    gt = tmp_path / "gt" / "s0.png"
    array = np.asarray(Image.open(gt)).copy()
    array[:2, :3] = 9
    Image.fromarray(array).save(gt)
    result = run_tool(*folder_args(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["stray_ground_truth_pixels"] == 6
    label_pixels = 2 * array.size  # two ground-truth images of the same size
    assert metrics["stray_labels"] == {"pixels": 6, "share": 6 / label_pixels, "files": 1, "worst": "s0.png"}
    assert "s0.png" in result.stderr  # the start-up warning, and again under the final tables:
    line = f"Ignored: 6 label pixel(s), {100 * 6 / label_pixels:.2f}% of this split's, in 1 file(s) (most in s0.png)"
    assert line in result.stdout and line in (tmp_path / "out" / "metrics.md").read_text()


def test_scoring_at_another_resolution_resizes_around_the_network(smoke_run, tmp_path):
    """The paper's resize-predict-resize: network at its training size (64x96), scores at 128x192."""
    run_dir, _ = smoke_run
    result = run_tool(
        "bloodseg.evaluate",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        "data=synthetic",
        "data.image_size=[128,192]",
        f"output_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    total = sum(map(sum, metrics["confusion_matrix"]["counts"]))
    assert metrics["num_images"] == 13 and total > 3.5 * sum(map(sum, trained["confusion_matrix"]["counts"]))
    overlay = next(tmp_path.glob("overlay_best_*.png"))
    assert Image.open(overlay).height >= 128


def write_random_folders(root, seed=7):
    """Index PNGs of random blob masks: sizes where theta is a whole number of pixels (240x320:
    3 px, 480x640: 6 px) with predictions shifted by exactly theta, objects cut by the border,
    unlabelled (255) blobs, and classes missing from some images."""
    rng = np.random.default_rng(seed)
    sizes = [(240, 320), (480, 640), (300, 300), (37, 53), (240, 320)]
    preds, truths = [], []
    for i, (height, width) in enumerate(sizes):
        pred, truth = random_case(rng, height, width, 3)
        if i == 0:
            pred, truth = np.where(pred == 2, 0, pred), np.where(truth == 2, 0, truth)  # wbc in neither
        if i == 4:
            pred = np.roll(np.where(truth == 255, 0, truth), 3, axis=1)  # shifted by theta exactly
        for sub, array in (("pred", pred), ("gt", truth)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array.astype(np.uint8)).save(root / sub / f"r{i}.png")
        preds.append(pred)
        truths.append(truth)
    return preds, truths


def cell(value: str) -> float:
    return float("nan") if value == "" else float(value)


@pytest.mark.parametrize("semantics", ["matlab_current", "matlab_2017"])
def test_folder_mode_agrees_with_an_independent_implementation(tmp_path, semantics):
    preds, truths = write_random_folders(tmp_path)
    result = run_tool(*folder_args(tmp_path, f"evaluation.semantics={semantics}"))
    assert result.returncode == 0, result.stderr[-3000:]
    expected = ref.evaluate(preds, truths, 3, semantics)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["semantics"] == semantics and metrics["metrics_version"] == 2
    as_float = lambda v: float("nan") if v is None else v  # noqa: E731  (null = NaN in metrics.json)
    for key, value in metrics["dataset"].items():
        np.testing.assert_allclose(as_float(value), expected[key], atol=1e-6, equal_nan=True, err_msg=key)
    for i, name in enumerate(["background", "rbc", "wbc"]):
        for key, ours in metrics["classes"][name].items():
            theirs = expected[{"mean_bf_score": "class_bf_score"}.get(key, f"class_{key}")][i]
            np.testing.assert_allclose(
                as_float(ours), theirs, atol=1e-6, equal_nan=True, err_msg=f"{name} {key}"
            )
    with open(tmp_path / "out" / "per_image_metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows] == [f"r{i}" for i in range(5)]
    columns = {f"{k}": f"image_{k}" for k in ("global_accuracy", "mean_accuracy", "mean_iou", "mean_dice")}
    columns["mean_bf_score"] = "image_bf_score"
    for column, key in columns.items():
        np.testing.assert_allclose([cell(r[column]) for r in rows], expected[key], atol=1e-6, equal_nan=True)
    for i, name in enumerate(["background", "rbc", "wbc"]):
        for prefix, key in (("iou", "image_class_iou"), ("bf", "image_class_bf_score")):
            ours = [cell(r[f"{prefix}_{name}"]) for r in rows]
            np.testing.assert_allclose(ours, expected[key][:, i], atol=1e-6, equal_nan=True)
    assert f"Rules: evaluation.semantics={semantics}" in result.stdout
    if semantics == "matlab_current":  # image r0 has no wbc: its mean IoU is NaN, and the console says why
        line = next(x for x in result.stdout.splitlines() if "have NaN mean IoU" in x)
        assert math.isnan(cell(rows[0]["mean_iou"])) and "r0" in line and "in neither" in line


def test_unknown_rule_set_is_rejected_with_the_key(tmp_path):
    write_folders(tmp_path, n=1)
    result = run_tool(*folder_args(tmp_path, "evaluation.semantics=matlab_2019"))
    assert result.returncode == 2 and "evaluation.semantics='matlab_2019'" in result.stderr
    assert "Traceback" not in result.stderr


def test_folder_mode_decodes_ground_truth_with_the_class_table(tmp_path, cellavision_dir):
    """CellaVision masks hold 0/128/255: all-background predictions must not score a mean IoU of 1."""
    for sub in ("gt", "pred"):
        (tmp_path / sub).mkdir()
    for stem in ("001", "002", "003"):
        shutil.copyfile(cellavision_dir / f"{stem}.png", tmp_path / "gt" / f"{stem}.png")
        truth = np.asarray(Image.open(cellavision_dir / f"{stem}.png"))
        Image.fromarray(np.zeros(truth.shape[:2], np.uint8)).save(tmp_path / "pred" / f"{stem}.png")
    args = [a for a in folder_args(tmp_path, "evaluation.num_overlays=0") if a != "data=synthetic"]
    result = run_tool(*args, "data=cellavision")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["classes"]["cytoplasm"]["iou"] == 0.0 and metrics["classes"]["nucleus"]["iou"] == 0.0
    assert metrics["dataset"]["mean_iou"] < 0.5


def test_folder_mode_honours_allow_unpaired_as_its_error_suggests(tmp_path):
    write_folders(tmp_path, n=2, shift=False)
    (tmp_path / "pred" / "s1.png").unlink()
    result = run_tool(*folder_args(tmp_path, "data.allow_unpaired=true", "evaluation.num_overlays=0"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["num_images"] == 1


def hand_flip_averaged_confusion(run_dir) -> np.ndarray:
    """The test split's confusion counts with each image's class probabilities averaged by hand over
    the identity, horizontal, vertical and double flip (labelled pixels only)."""
    import torch
    from omegaconf import OmegaConf

    from bloodseg.data.datamodule import BloodSmearDataModule
    from bloodseg.training.checkpoints import load_module

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    data = BloodSmearDataModule(cfg.data, seed=cfg.seed)
    data.setup()
    test = data.splits["test"]
    module = load_module(run_dir / "checkpoints" / "last.ckpt").eval()
    k = len(module.meta["class_names"])
    with torch.inference_mode():
        probabilities = module(test.images).softmax(1)
        for dims in ((-1,), (-2,), (-2, -1)):  # the image's last two axes are its rows and columns
            probabilities += module(test.images.flip(dims)).softmax(1).flip(dims)
    predicted, truth = probabilities.argmax(1).numpy(), test.masks.numpy().astype(np.int64)
    labelled = truth < k
    return np.bincount(truth[labelled] * k + predicted[labelled], minlength=k * k).reshape(k, k)


def test_checkpoint_evaluation_with_test_time_augmentation(smoke_run, tmp_path):
    """evaluation.tta scores every image with its flipped views and says so in metrics.json."""
    run_dir, _ = smoke_run
    evaluate_checkpoint(run_dir, tmp_path, "evaluation.tta=flip")
    trained = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert trained["test_time_augmentation"] == "none" and evaluated["test_time_augmentation"] == "flip"
    counts = np.array(evaluated["confusion_matrix"]["counts"])
    plain = np.array(trained["confusion_matrix"]["counts"])
    assert counts.sum() == plain.sum()
    expected = hand_flip_averaged_confusion(run_dir)  # softmax averaged over the 4 flips, written here
    assert np.abs(counts - expected).sum() <= 4  # a near-tie pixel or two may fall the other way
    assert np.abs(plain - expected).sum() > 4 * np.abs(counts - expected).sum() + 4  # TTA changed them
    wrong = run_tool(
        "bloodseg.evaluate", f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}", "evaluation.tta=rot"
    )
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert (
        "expected one of [none, flip, dihedral]" in wrong.stderr
        and "full_key: evaluation.tta" in wrong.stderr
    )


@pytest.mark.slow
def test_evaluate_prints_only_its_tables_on_stdout(smoke_run, tmp_path):
    """Logs and the progress bar go to stderr: a script reading stdout gets the tables alone."""
    run_dir, _ = smoke_run
    result = run_cli(
        "bloodseg.evaluate", f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}", f"output_dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        result.stdout.startswith("Table 1. Semantic segmentation metrics") and "Testing" not in result.stdout
    )
    assert "Testing" in result.stderr  # the progress bar is still shown
