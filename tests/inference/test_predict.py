"""Whole-smear prediction: tiling without seams, sizes back to the input's, outputs, counts, bad files."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, run_tool
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn

from bloodseg.config import PredictMode, check_config
from bloodseg.data.synthetic import generate_smear
from bloodseg.errors import BloodsegError
from bloodseg.inference.predict_run import predict, separation
from bloodseg.inference.tiling import (
    choose_mode,
    edge_ramp,
    list_inputs,
    make_field,
    output_stems,
    predict_fields,
    predict_image,
    predict_logits,
    tile_origins,
)
from bloodseg.training.module import SegmentationModule

TILE = (64, 96)
META = {
    "class_names": ["background", "rbc", "wbc"],
    "class_colors": [[255, 255, 0], [0, 0, 255], [0, 255, 0]],
    "image_size": list(TILE),
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


@pytest.fixture(scope="module")
def local_model() -> SegmentationModule:
    """A fully convolutional network whose outputs see 7x7 pixels: tiles can reproduce it exactly."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 3, 3, padding=1),
    )
    return SegmentationModule(net, torch.ones(3), META).eval()


def full_forward(module, image: np.ndarray) -> np.ndarray:
    """The untiled prediction: one forward pass of the fully convolutional net on the whole image."""
    with torch.inference_mode():
        return module(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous())[0].argmax(0).numpy()


def test_predict_config_composes_with_its_schema():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="predict", overrides=["ckpt_path=x.ckpt", "input=in", "predict.mode=tile"])
        check_config(cfg)
        assert cfg.predict.mode == PredictMode.tile and cfg.predict.scale == 1.0
        with pytest.raises(Exception, match="min_cel_area"):
            compose(config_name="predict", overrides=["predict.min_cel_area=3"])
        with pytest.raises(Exception) as error:
            compose(config_name="predict", overrides=["predict.mode=tiles"])
        assert "expected one of [auto, whole, tile, resize]" in str(error.value.__cause__)
        with pytest.raises(BloodsegError, match="predict.extra"):
            check_config(compose(config_name="predict", overrides=["+predict.extra=1"]))


@pytest.mark.parametrize("length", [64, 65, 100, 300, 1944])
def test_tiles_cover_the_image_and_overlap(length):
    starts = tile_origins(length, 64, 16)
    assert starts[0] == 0 and starts[-1] + 64 == max(length, 64)
    assert all(0 < b - a <= 64 - 16 for a, b in zip(starts, starts[1:], strict=False))


def test_blending_weights_are_never_zero_and_untapered_at_the_image_border():
    inner = edge_ramp(64, 16, start=True, end=True)
    border = edge_ramp(64, 16, start=False, end=True)
    assert inner.min() > 0 and inner[16:-16].eq(1).all() and inner[0] < 0.01
    assert border[0] == 1 and border[-1] < 0.01
    assert edge_ramp(64, 0, True, True).eq(1).all()


@pytest.fixture(scope="module")
def colour_model() -> SegmentationModule:
    """A structured network: class c's score is the 7x7 mean of input channel c (after normalisation), so
    its labels follow the smear's colours (every synthetic field has two classes of >= 18% each) and a
    tile whose edge shows (zero padding within 3 px of it) changes scores by a measurable amount."""
    conv = nn.Conv2d(3, 3, 7, padding=3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(3):
            conv.weight[c, c] = 1 / 49
    return SegmentationModule(nn.Sequential(conv), torch.ones(3), META).eval()


def full_logits(module, image: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return module(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous())[0]


@pytest.mark.parametrize("size", [(128, 192), (150, 211)])
def test_tiling_leaves_no_seams(colour_model, size):
    """Tiled and untiled predictions agree on >= 99.95% of pixels and within 0.05 in every score; tiles
    pasted without blending (overlap 0: each tile's zero-padded edge at full weight) miss by > 0.5,
    which a label-only check at 99% would still have passed (99.5-99.7% agree)."""
    image, _, _ = generate_smear(3, *size)
    full = full_logits(colour_model, image)
    shares = np.bincount(full.argmax(0).numpy().ravel(), minlength=3) / full[0].numel()
    assert (shares >= 0.05).sum() >= 2  # not one class everywhere: labels can show a seam
    tiled = predict_logits(colour_model, image, PredictMode.tile, overlap=0.25, batch_size=5)
    assert tiled.shape == full.shape
    assert float((tiled - full).abs().max()) < 0.05
    assert (tiled.argmax(0) == full.argmax(0)).float().mean() >= 0.9995
    pasted = predict_logits(colour_model, image, PredictMode.tile, overlap=0.0, batch_size=5)
    assert float((pasted - full).abs().max()) > 0.5  # the measure sees seams where there are some
    field = make_field("x", image, PredictMode.tile, TILE, 1.0, 0.25)
    assert len(field.boxes) > 1  # it really was tiled


def test_auto_mode_predicts_whole_within_the_pixel_budget_and_tiles_beyond():
    # the rule: whole while the scaled image, padded to multiples of 32, holds at most max_whole_pixels
    assert choose_mode(PredictMode.auto, (480, 640), 480 * 640) == "whole"
    assert choose_mode(PredictMode.auto, (481, 640), 480 * 640) == "tile"  # pads to 512 x 640
    assert choose_mode(PredictMode.auto, (1944, 2592)) == "tile"  # a whole ALL-IDB1 field: 5.0 Mpx > 4.2
    assert choose_mode(PredictMode.auto, (486, 648)) == "whole"  # the same field at scale 0.25
    assert choose_mode(PredictMode.resize, (10, 10)) == "resize"
    large, _, _ = generate_smear(0, 200, 300)
    small, _, _ = generate_smear(0, 50, 60)
    assert make_field("l", large, PredictMode.auto, TILE, 1.0, 0.25).mode == "whole"
    assert make_field("l", large, PredictMode.auto, TILE, 1.0, 0.25, max_whole_pixels=50_000).mode == "tile"
    assert make_field("l", large, PredictMode.auto, TILE, 0.5, 0.25, max_whole_pixels=50_000).mode == "whole"
    whole = make_field("s", small, PredictMode.auto, TILE, 1.0, 0.25)
    assert whole.mode == "whole" and whole.crop_size == (64, 64) and whole.boxes == [(0, 0)]
    assert make_field("l", large, PredictMode.resize, TILE, 1.0, 0.25).boxes == [(0, 0)]


@pytest.mark.parametrize(("size", "agree"), [((128, 192), 1.0), ((150, 211), 0.9998), ((37, 45), 0.9995)])
def test_whole_mode_is_one_forward_pass_over_the_image(colour_model, size, agree):
    """Whole-image prediction = the network on the unpadded image (exact at multiples of 32; mirrored
    padding only touches the last 3 pixels of the bottom and right edges otherwise)."""
    image, _, _ = generate_smear(4, *size)
    whole = predict_image(colour_model, image, PredictMode.whole)
    assert whole.shape == size
    full = full_logits(colour_model, image)
    assert (whole == full.argmax(0).numpy()).mean() >= agree
    inner = predict_logits(colour_model, image, PredictMode.whole)[:, : size[0] - 3, : size[1] - 3]
    torch.testing.assert_close(inner, full[:, : size[0] - 3, : size[1] - 3], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("mode", "scale", "size"),
    [
        ("whole", 0.5, (130, 250)),
        ("tile", 1.0, (130, 250)),
        ("tile", 0.5, (260, 500)),
        ("resize", 1.0, (130, 250)),
        ("tile", 1.0, (40, 300)),
    ],
)
def test_labels_come_back_at_the_input_size(local_model, mode, scale, size):
    image, _, _ = generate_smear(1, *size)
    labels = predict_image(local_model, image, PredictMode(mode), scale=scale)
    assert labels.shape == size and labels.dtype == np.uint8 and labels.max() < 3


def test_scaling_matches_predicting_the_resampled_image(colour_model):
    """predict.scale=0.5 scores what the network gives on the half-size image (up to resampling): its
    scores, sampled back on the half grid, stay within 0.03 on average (0.2 at the 99th percentile) of the
    direct ones, where ignoring the scale (the full-size image) misses by 0.06 on average, 0.44 at p99."""
    image, _, _ = generate_smear(2, 256, 384)
    half = np.asarray(Image.fromarray(image).resize((192, 128), Image.BILINEAR))
    direct = predict_logits(colour_model, half, PredictMode.tile)

    def distance(scores):  # on the half-size grid
        gap = (scores[:, ::2, ::2] - direct).abs()
        return float(gap.mean()), float(gap.flatten().quantile(0.99))

    scaled = predict_logits(colour_model, image, PredictMode.tile, scale=0.5)
    assert scaled.shape[1:] == image.shape[:2]
    mean, p99 = distance(scaled)
    assert mean < 0.03 and p99 < 0.2
    unscaled_mean, unscaled_p99 = distance(predict_logits(colour_model, image, PredictMode.tile))
    assert unscaled_mean > 2 * mean and unscaled_p99 > 2 * p99  # the measure tells a scale from none


def test_batches_across_images_give_the_same_labels(local_model):
    images = [generate_smear(s, h, w)[0] for s, (h, w) in enumerate([(100, 150), (40, 50), (130, 100)])]
    alone = [predict_image(local_model, im, batch_size=1) for im in images]
    fields = [make_field(str(i), im, PredictMode.auto, TILE, 1.0, 0.25) for i, im in enumerate(images)]
    batched = list(predict_fields(local_model, iter(fields), TILE, 4, torch.device("cpu")))
    assert [f.name for f in batched] == ["0", "1", "2"]
    for one, field in zip(alone, batched, strict=True):
        np.testing.assert_array_equal(one, field.labels())


def test_separation_keeps_one_class_and_whitens_the_rest():
    image = np.full((2, 2, 3), 7, np.uint8)
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    out = separation(image, labels, 1)
    assert (out[0, 1] == 7).all() and (out[1, 1] == 7).all()
    assert (out[0, 0] == 255).all() and (out[1, 0] == 255).all()


def test_inputs_missing_or_empty_fail_clearly(tmp_path):
    with pytest.raises(BloodsegError, match="does not exist"):
        list_inputs(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BloodsegError, match="no image files"):
        list_inputs(tmp_path)
    names = output_stems([tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "b.png"])
    assert sorted(names.values()) == ["a_jpg", "a_png", "b"]


# ---- through the CLI with the trained smoke checkpoint (SegNet, 64x96) ----------------------------
def write_inputs(folder):
    """A whole field larger than the training size, RGBA, 16-bit grey, a small crop and a corrupt file."""
    folder.mkdir()
    field, _, _ = generate_smear(11, 130, 200)
    Image.fromarray(field).save(folder / "field.png")
    Image.fromarray(generate_smear(12, 90, 120)[0]).convert("RGBA").save(folder / "rgba.png")
    grey = generate_smear(13, 70, 100)[0].mean(2).astype(np.uint16) * 257
    Image.fromarray(grey).save(folder / "grey16.png")
    Image.fromarray(generate_smear(14, 40, 50)[0]).save(folder / "small.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return {"field.png": (130, 200), "rgba.png": (90, 120), "grey16.png": (70, 100), "small.jpg": (40, 50)}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["auto", "resize"])
def test_predict_cli_on_a_folder(smoke_run, tmp_path, mode):
    run_dir, _ = smoke_run
    sizes = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    result = run_tool(
        "bloodseg.predict",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        f"input={tmp_path / 'in'}",
        f"output_dir={out}",
        f"predict.mode={mode}",
        "predict.batch_size=4",
        *(["predict.pixel_size_um=0.5"] if mode == "resize" else []),
    )
    assert result.returncode == 1, result.stderr[-3000:]  # the others are written; the status names it
    assert "1 file(s) not predicted: broken.png" in result.stderr and "skipped 1" in result.stdout
    assert "alpha channel dropped" in result.stderr and "scaled to 8-bit" in result.stderr
    with open(out / "cells.csv") as handle:
        cells = list(csv.DictReader(handle))
    for name, size in sizes.items():
        stem = name.rsplit(".", 1)[0]
        opened = Image.open(out / f"{stem}_labels.png")
        labels = np.asarray(opened)
        assert opened.mode == "P" and opened.getpalette()[:9] == sum(META["class_colors"], [])
        assert labels.shape == size and labels.max() < 3
        for suffix in ("overlay", "rbc", "wbc", "outlines"):
            assert Image.open(out / f"{stem}_{suffix}.png").size == (size[1], size[0])
        image = np.asarray(Image.open(out / f"{stem}_rbc.png"))
        assert (image[labels != 1] == 255).all()
        instances = np.asarray(Image.open(out / f"{stem}_instances.png"))
        assert instances.dtype == np.uint16 and instances.shape == size
        rows = [c for c in cells if c["image"] == name]
        assert sorted(int(c["cell_id"]) for c in rows) == list(range(1, len(rows) + 1))
        assert set(np.unique(instances)) == {0, *range(1, len(rows) + 1)}
        for cell in rows:  # every cell row describes the pixels with its id (its class, plus filled holes)
            where = instances == int(cell["cell_id"])
            assert int(cell["area_px"]) == where.sum()
            assert (labels[where] == META["class_names"].index(cell["class"])).mean() > 0.5
    with open(out / "counts.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "rbc_count", "rbc_area_px", "wbc_count", "wbc_area_px"]
    assert sorted(r["image"] for r in rows) == sorted(sizes)
    labels = np.asarray(Image.open(out / "field_labels.png"))
    row = next(r for r in rows if r["image"] == "field.png")
    assert int(row["rbc_area_px"]) == int((labels == 1).sum())
    for name in ("rbc", "wbc"):
        assert int(row[f"{name}_count"]) == sum(
            c["image"] == "field.png" and c["class"] == name for c in cells
        )
    header = (out / "cells.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "image",
        "cell_id",
        "class",
        "centroid_y",
        "centroid_x",
        "area_px",
        "equivalent_diameter_px",
        "touching",
        *(["area_um2", "equivalent_diameter_um"] if mode == "resize" else []),
    ]
    for cell in cells if mode == "resize" else []:  # 0.5 um per pixel
        assert float(cell["area_um2"]) == pytest.approx(int(cell["area_px"]) * 0.25, abs=1e-3)
        assert float(cell["equivalent_diameter_um"]) == pytest.approx(
            float(cell["equivalent_diameter_px"]) / 2, abs=1e-3
        )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["predicted"] == 4
    assert [s["file"].rsplit("/", 1)[-1] for s in summary["skipped"]] == ["broken.png"]
    modes = {r["image"]: r["mode"] for r in summary["images"]}
    assert modes["field.png"] == modes["small.jpg"] == ("whole" if mode == "auto" else "resize")


def compose_predict(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="predict", overrides=list(overrides))


@pytest.mark.slow
def test_predict_errors_are_clear(smoke_run, tmp_path):
    """Bad input fails with one line and exit code 2 (through the CLI), naming what to fix."""
    run_dir, _ = smoke_run
    ckpt = f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}"
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not an image")
    Image.fromarray(generate_smear(0, 40, 50)[0]).save(tmp_path / "one.png")
    for args, message in (
        ([ckpt, f"input={tmp_path / 'missing'}"], "does not exist"),
        ([ckpt, f"input={tmp_path / 'bad'}"], "none of the 1 file(s)"),
    ):
        result = run_tool("bloodseg.predict", *args, f"output_dir={tmp_path / 'out'}")
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in result.stderr and "Traceback" not in result.stderr
    for args, message in (
        ([ckpt, f"input={tmp_path / 'empty'}"], "no image files"),
        ([f"ckpt_path={tmp_path / 'x.ckpt'}", f"input={tmp_path / 'one.png'}"], "x.ckpt does not exist"),
        ([ckpt, f"input={tmp_path / 'one.png'}", "predict.scale=0"], "predict.scale"),
        ([ckpt, f"input={tmp_path / 'one.png'}", "predict.overlap=1.5"], "predict.overlap"),
        ([ckpt], "input=FILE_OR_DIR"),
    ):
        with pytest.raises(BloodsegError, match=re.escape(message)):
            predict(compose_predict(*args), tmp_path / "out")


@pytest.mark.slow
def test_segnet_classes_do_not_depend_on_batch_or_prediction_path(smoke_run):
    """One image scored alone, in a batch shared with another image's tiles, and as one tile: the same classes.

    Checked on every decided pixel (top-two logit margin beyond the parity tolerance; see
    bloodseg.inference.parity); the trained SegNet's tie-robust pooling keeps rounding from flipping the rest.
    """
    from bloodseg.inference.parity import LOGIT_ATOL, LOGIT_RTOL, top_two_margin
    from bloodseg.training.checkpoints import load_module

    module = load_module(smoke_run[0] / "checkpoints/last.ckpt")
    tile = tuple(module.meta["image_size"])
    images = [generate_smear(seed, *tile)[0] for seed in range(3)]
    large = generate_smear(7, 2 * tile[0], 2 * tile[1])[0]
    with torch.inference_mode():
        logits = module(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()).numpy()
    decided = top_two_margin(logits) > 2 * (LOGIT_ATOL + LOGIT_RTOL * np.abs(logits).max(1))
    classes = logits.argmax(1)
    fields = [make_field("large", large, PredictMode.tile, tile, 1.0, 0.25)]
    fields += [make_field(str(i), im, PredictMode.auto, tile, 1.0, 0.25) for i, im in enumerate(images)]
    shared = {f.name: f.labels() for f in predict_fields(module, iter(fields), tile, 5, torch.device("cpu"))}
    for i, image in enumerate(images):
        for labels in (
            predict_image(module, image, PredictMode.resize, batch_size=1),
            predict_image(module, image, PredictMode.tile, batch_size=1),
            shared[str(i)],
        ):
            assert (labels[decided[i]] == classes[i][decided[i]]).all()
    assert decided.mean() > 0.95


@pytest.mark.slow
def test_predicted_labels_train_a_model_as_allidb1_labels(smoke_run, tmp_path):
    """The labelling loop: predict, (edit the labels in GIMP,) train data=allidb1 on them: the same ids."""
    from conftest import ONE_BATCH, compose_train

    from bloodseg.data.datamodule import BloodSmearDataModule
    from bloodseg.data.labels import palette_label
    from bloodseg.training.run import train

    run_dir, _ = smoke_run
    root = tmp_path / "labelled"
    (root / "images").mkdir(parents=True)
    for seed in range(4):
        Image.fromarray(generate_smear(20 + seed, 64, 96)[0]).save(root / "images" / f"f{seed}.png")
    cfg = compose_predict(
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        f"input={root / 'images'}",
        f"output_dir={tmp_path / 'p'}",
    )
    predict(cfg, tmp_path / "hydra")
    (tmp_path / "p" / "f0_labels.png").rename(tmp_path / "p" / "keep.png")  # f0 gets a hand-edited label
    edited = np.asarray(Image.open(tmp_path / "p" / "keep.png")).copy()
    edited[:10] = 2
    edited[-5:, :7] = 255  # left unlabelled
    palette_label(edited, META["class_colors"]).save(tmp_path / "p" / "f0_labels.png")
    (root / "labels").mkdir()
    predicted = {}
    for seed in range(4):
        labels_png = tmp_path / "p" / f"f{seed}_labels.png"
        predicted[f"f{seed}"] = np.asarray(Image.open(labels_png))
        labels_png.rename(root / "labels" / f"f{seed}.png")
    overrides = ["experiment=segnet_vgg16", "data=allidb1", f"data.root={root}", "data.image_size=[64,96]"]
    train_cfg = compose_train([*overrides, *ONE_BATCH, "trainer.max_epochs=1"])
    datamodule = BloodSmearDataModule(train_cfg.data)
    datamodule.setup()
    masks = {i: m.numpy() for s in datamodule.splits.values() for i, m in zip(s.ids, s.masks, strict=True)}
    assert sorted(masks) == sorted(predicted)
    for stem, labels in predicted.items():
        np.testing.assert_array_equal(masks[stem], labels)
    assert datamodule.label_report()["stray_pixels_total"] == 0
    train(train_cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["num_images"] == 1


def test_outlines_draw_each_cell_edge_in_its_class_colour_and_its_id(tmp_path):
    from scipy import ndimage

    from bloodseg.inference.counting import label_cells
    from bloodseg.inference.predict_run import instance_png
    from bloodseg.viz.pictures import cell_outlines

    yy, xx = np.mgrid[0:80, 0:120]
    labels = np.zeros((80, 120), np.uint8)
    labels[(yy - 40) ** 2 + (xx - 30) ** 2 <= 15**2] = 1
    labels[(yy - 40) ** 2 + (xx - 85) ** 2 <= 20**2] = 2
    instances, cells = label_cells(labels, META["class_names"])
    image = np.full((80, 120, 3), 200, np.uint8)
    out = cell_outlines(
        image, instances, cells, dict(zip(META["class_names"], META["class_colors"], strict=True))
    )
    for cell_id, colour in ((1, [0, 0, 255]), (2, [0, 255, 0])):
        cell = instances == cell_id
        edge = cell & ~ndimage.binary_erosion(cell)  # the inner boundary, by hand
        centre = (round(cells[cell_id - 1]["centroid_y"]), round(cells[cell_id - 1]["centroid_x"]))
        ring = edge & (np.hypot(yy - centre[0], xx - centre[1]) > 8)  # away from the drawn id
        assert (out[ring] == colour).all()
        assert (out[centre[0] - 6 : centre[0] + 6, centre[1] - 6 : centre[1] + 6] != 200).any()  # the id
    assert (out[~ndimage.binary_dilation(instances > 0)] == 200).all()  # nothing drawn outside the cells
    instance_png(instances, tmp_path / "i.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "i.png")), instances)
    with pytest.raises(BloodsegError, match="do not fit a 16-bit PNG"):
        instance_png(np.array([[70000]]), tmp_path / "big.png")


@pytest.mark.slow
def test_predict_with_test_time_augmentation_writes_the_averaged_labels(smoke_run, tmp_path):
    """predict.tta=flip: the labels written are those of the flip-averaged scores, not the plain ones."""
    from bloodseg.training.checkpoints import load_module

    ckpt = smoke_run[0] / "checkpoints/last.ckpt"
    image = generate_smear(40, 64, 96)[0]
    Image.fromarray(image).save(tmp_path / "field.png")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="predict",
            overrides=[f"ckpt_path={ckpt}", f"input={tmp_path / 'field.png'}", f"output_dir={tmp_path / 'out'}",
                       "predict.mode=whole", "predict.tta=flip"],
        )  # fmt: skip
    predict(cfg, tmp_path)
    written = np.asarray(Image.open(tmp_path / "out" / "field_labels.png"))
    module = load_module(ckpt)
    module.tta = "flip"
    assert np.array_equal(written, predict_image(module, image, PredictMode.whole))
    module.tta = "none"
    assert not np.array_equal(written, predict_image(module, image, PredictMode.whole))


class BatchRecorder(nn.Module):
    """A 1x1-convolution network that records the shape of every batch it is given."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, images):
        self.shapes.append(tuple(images.shape))
        return self.conv(images.float())


@pytest.mark.parametrize(
    ("crop_size", "batches"),
    [(None, [(2, 3, 64, 96), (1, 3, 64, 96)]), ([32, 32], [(1, 3, 64, 96)] * 3)],
    ids=["trained-whole", "trained-on-windows"],
)
def test_whole_fields_are_batched_by_the_training_windows_pixels(crop_size, batches):
    """batch_size counts what the network saw per sample in training: a model trained on 32x32 windows
    gets its 64x96 whole fields one at a time (batch_size=2 is 2 windows' worth), not two at once."""
    from bloodseg.inference.tiling import training_window

    meta = {"image_size": [64, 96], "config": {"data": {"crop_size": crop_size}}}
    window = training_window(meta)
    assert window == tuple(crop_size or (64, 96))
    module = BatchRecorder()
    images = [generate_smear(seed, 64, 96)[0] for seed in range(3)]
    fields = [make_field(str(i), im, PredictMode.whole, (64, 96), 1.0, 0.25) for i, im in enumerate(images)]
    with torch.inference_mode():
        done = [f.name for f in predict_fields(module, iter(fields), window, 2, torch.device("cpu"))]
    assert done == ["0", "1", "2"] and module.shapes == batches
