"""Large fields: streamed prediction equals in-memory prediction, TIFF read in tiles, bad files passed over."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as TF
from conftest import run_tool
from PIL import Image
from test_input_checks import compose_app
from test_predict import META, TILE, full_forward, local_model  # noqa: F401  (a fixture)

import bloodseg.inference.predict_run as predict_module
from bloodseg.config import PredictMode
from bloodseg.data.fieldio import ArrayReader, TiffReader, needs_streaming, open_field
from bloodseg.data.labels import palette_label
from bloodseg.data.synthetic import generate_smear
from bloodseg.inference.counting import cells_in_windows, disc_field, label_cells
from bloodseg.inference.png_rows import PngRows
from bloodseg.inference.streaming import RowUpsampler, WorkImage, plan_stream, stream_field
from bloodseg.inference.tiling import predict_image, resample


def streamed(module, reader, mode="tile", scale=1.0, stream_tile=64) -> tuple[np.ndarray, list[int]]:
    """Class ids of a field predicted streamed, and the first row of every band the sink got."""
    plan = plan_stream(reader.size, mode, TILE, scale, 0.25, stream_tile)
    labels = np.full(reader.size, 99, np.uint8)
    starts = []

    def sink(y0, rows):
        starts.append(y0)
        labels[y0 : y0 + len(rows)] = rows

    stream_field(module, reader, plan, torch.device("cpu"), 8 * TILE[0] * TILE[1], sink)
    assert (labels != 99).all()
    return labels, starts


@pytest.mark.parametrize("size", [(150, 211), (40, 300)])
def test_streamed_prediction_equals_whole_image_prediction(local_model, size):  # noqa: F811
    """At scale 1, streamed tiles blend to the network's whole-image output (the tiling tests' rule:
    >= 99.9% of pixels, the rest at tile seams), rows arrive top to bottom, and with training-size
    tiles the streamed and in-memory tiled predictions are the same."""
    image, _, _ = generate_smear(3, *size)
    labels, starts = streamed(local_model, ArrayReader(image))
    assert (labels == full_forward(local_model, image)).mean() >= 0.999
    assert starts == sorted(starts) and len(starts) > 1 or size[0] <= 64
    same_tiles, _ = streamed(local_model, ArrayReader(image), stream_tile=0)
    assert (same_tiles == predict_image(local_model, image, PredictMode.tile)).mean() >= 0.9999


@pytest.mark.parametrize("scale", [0.5, 0.25, 0.3])
def test_scaled_streaming_resamples_like_the_whole_field(local_model, scale):  # noqa: F811
    """Each scaled tile is resampled from its region onto the whole field's grid: the same pixels to
    within one uint8 level, so streamed prediction with training-size tiles matches the in-memory tiled prediction."""
    image, _, _ = generate_smear(4, 400, 520)
    plan = plan_stream(image.shape[:2], "tile", TILE, scale, 0.25, 0)
    whole = resample(torch.from_numpy(image).permute(2, 0, 1), plan.work)
    work = WorkImage(ArrayReader(image), plan)
    for y, x in [(plan.ys[1], plan.xs[1]), (plan.ys[-1], plan.xs[-1])]:
        crop = work.crop(y, x)
        expected = whole[:, y : y + TILE[0], x : x + TILE[1]]
        # uint8 rounding of a region's resample may differ by one level from the whole field's
        # (the vectorised and scalar antialias kernels round differently), on any CPU
        assert (crop.int() - expected.int()).abs().max() <= 1
    labels, _ = streamed(local_model, ArrayReader(image), scale=scale, stream_tile=0)
    tiled = predict_image(local_model, image, PredictMode.tile, scale=scale)
    assert (labels == tiled).mean() >= 0.999
    resized, _ = streamed(local_model, ArrayReader(image), mode="resize")
    np.testing.assert_array_equal(resized, predict_image(local_model, image, PredictMode.resize))


def test_row_upsampler_decides_like_interpolating_the_whole_score_map():
    torch.manual_seed(1)
    scores = torch.randn(3, 37, 53)
    expected = TF.interpolate(scores[None], size=(150, 211), mode="bilinear", align_corners=False)[0].argmax(
        0
    )
    out = np.full((150, 211), 99, np.uint8)
    upsampler = RowUpsampler(
        (37, 53), (150, 211), lambda y, rows: out.__setitem__(slice(y, y + len(rows)), rows)
    )
    for a, b in [(0, 5), (5, 6), (6, 30), (30, 37)]:  # bands of any height, in order
        upsampler.push(scores[:, a:b])
    assert (out == expected.numpy()).mean() >= 0.9999


@pytest.mark.parametrize(
    "layout",
    [{"tile": (64, 64), "compression": "zlib"}, {"rowsperstrip": 7, "compression": "zlib"}, {}],
    ids=["tiled", "strips", "contiguous"],
)
def test_tiff_regions_are_read_without_reading_the_whole_file(tmp_path, layout):
    image, _, _ = generate_smear(5, 300, 410)
    tifffile.imwrite(tmp_path / "f.tif", image, **layout)
    reader = TiffReader(tmp_path / "f.tif")
    assert reader.size == (300, 410) and reader.note is None
    for box in [(0, 300, 0, 410), (10, 77, 5, 400), (250, 300, 390, 410)]:
        np.testing.assert_array_equal(reader.read(*box), image[box[0] : box[1], box[2] : box[3]])
    reader.close()
    grey = (image[..., 0].astype(np.uint16) * 257)[:70]
    tifffile.imwrite(tmp_path / "g.tif", grey, tile=(32, 32))
    reader = TiffReader(tmp_path / "g.tif")
    assert "16-bit" in reader.note and "greyscale" in reader.note
    np.testing.assert_array_equal(reader.read(0, 70, 0, 410), np.repeat(image[:70, :, :1], 3, 2))
    reader.close()


def test_a_tiff_beyond_pils_limit_is_read_in_tiles_not_rejected(tmp_path, monkeypatch):
    image, _, _ = generate_smear(6, 120, 160)
    tifffile.imwrite(tmp_path / "scan.tif", image, tile=(64, 64), compression="zlib")
    Image.fromarray(image).save(tmp_path / "scan.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # PIL raises DecompressionBombError beyond 8000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "scan.tif")
    assert needs_streaming((120, 160), stream_pixels=10**9)
    reader = open_field(tmp_path / "scan.tif", stream_pixels=10**9)
    assert isinstance(reader, TiffReader)
    np.testing.assert_array_equal(reader.read(0, 120, 0, 160), image)
    reader.close()
    other = open_field(tmp_path / "scan.png", stream_pixels=10**9)  # other formats: whole, with a note
    assert "beyond PIL's limit" in other.note and Image.MAX_IMAGE_PIXELS == 4000
    np.testing.assert_array_equal(other.read(0, 120, 0, 160), image)


def test_png_rows_read_back_like_palette_label(tmp_path):
    labels = (np.arange(37 * 53).reshape(37, 53) % 3).astype(np.uint8)
    labels[0, :4] = 255
    palette = np.zeros((256, 3), np.uint8)
    palette[:3] = META["class_colors"]
    png = PngRows(tmp_path / "rows.png", labels.shape, palette, transparent=255)
    png.write(labels[:10])
    png.write(labels[10:])
    png.close()
    palette_label(labels, META["class_colors"]).save(tmp_path / "pil.png")
    ours, theirs = Image.open(tmp_path / "rows.png"), Image.open(tmp_path / "pil.png")
    assert ours.mode == "P" and ours.getpalette()[:9] == theirs.getpalette()[:9]
    np.testing.assert_array_equal(np.asarray(ours), labels)
    np.testing.assert_array_equal(np.asarray(ours.convert("RGBA")), np.asarray(theirs.convert("RGBA")))
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    png = PngRows(tmp_path / "rgb.png", (9, 11))
    png.write(rgb)
    png.close()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), rgb)
    with pytest.raises(ValueError, match="rows written"):
        PngRows(tmp_path / "short.png", (9, 11)).close()


def test_cells_counted_window_by_window_are_those_of_the_whole_field():
    labels, known = disc_field(4, (420, 530), (9.0, 14.0), 25, 6, 6)
    names = ["background", "rbc", "wbc"]
    _, whole = label_cells(labels, names)
    windows = cells_in_windows(lambda a, b: labels[a:b], labels.shape, names, core=128, margin=48)
    assert len(windows) == len(whole) == known
    key = lambda c: (c["class"], round(c["centroid_y"]), round(c["centroid_x"]), c["area_px"])  # noqa: E731
    assert sorted(map(key, windows)) == sorted(map(key, whole))
    assert [c["cell_id"] for c in windows] == list(range(1, known + 1))


# ---- through the CLI with the trained smoke checkpoint ------------------------------------------
@pytest.mark.slow
def test_predict_streams_large_fields_and_passes_over_bad_files(smoke_run, tmp_path, monkeypatch):
    """A TIFF beyond PIL's limit is streamed (progress in tiles), a damaged TIFF and an unreadable
    file are reported while the others are written, and the exit status (1) names both."""
    run_dir, _ = smoke_run
    folder = tmp_path / "in"
    folder.mkdir()
    field, _, _ = generate_smear(21, 200, 300)
    tifffile.imwrite(folder / "scan.tif", field, tile=(64, 64), compression="zlib")
    tifffile.imwrite(folder / "damaged.tif", field, tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(folder / "damaged.tif") as tiff:  # garbage inside one tile's data
        offset = tiff.pages[0].dataoffsets[5]
    data = bytearray((folder / "damaged.tif").read_bytes())
    data[offset : offset + 64] = bytes(64)
    (folder / "damaged.tif").write_bytes(bytes(data))
    tifffile.imwrite(folder / "wide.tif", generate_smear(23, 100, 700)[0], tile=(64, 64))
    Image.fromarray(generate_smear(22, 40, 50)[0]).save(folder / "small.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # scan.tif (60,000 px) is beyond it
    out = tmp_path / "out"
    result = run_tool(
        "bloodseg.predict",
        f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
        f"input={folder}",
        f"output_dir={out}",
        "predict.stream_tile=128",
        "predict.max_picture_pixels=20000",
        "predict.max_count_pixels=65000",  # scan.tif is counted, wide.tif (70,000 px) is not
    )
    monkeypatch.undo()  # PIL's own limit back, to read the outputs
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "DecompressionBomb" not in result.stderr
    assert "2 file(s) not predicted: broken.png, damaged.tif" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["image"] for r in summary["images"]) == ["scan.tif", "small.png", "wide.tif"]
    scan = next(r for r in summary["images"] if r["image"] == "scan.tif")
    tiles = scan["tiles"]
    assert scan["streamed"] and tiles == plan_stream((200, 300), "tile", (64, 96), 1, 0.25, 128).tiles == 6
    assert "scan: 100%" in result.stderr and f"{tiles}/{tiles}" in result.stderr  # progress counts tiles
    assert scan["picture_step"] == 2
    labels = Image.open(out / "scan_labels.png")
    assert labels.mode == "P" and labels.size == (300, 200) and np.asarray(labels).max() < 3
    assert Image.open(out / "scan_overlay.png").size == (150, 100)
    area = int((np.asarray(labels) == 1).sum())
    assert scan["counts"]["rbc"]["area_px"] == area
    assert not list(out.glob("damaged*")) and not list(out.glob(".*raw"))
    assert (out / "small_instances.png").exists() and not (out / "scan_instances.png").exists()
    wide = next(r for r in summary["images"] if r["image"] == "wide.tif")
    assert "wide.tif: cells not counted" in result.stderr and wide["counts"]["rbc"]["count"] is None
    assert np.asarray(Image.open(out / "wide_labels.png")).shape == (100, 700)
    with open(out / "counts.csv") as handle:
        rows = {row["image"]: row for row in csv.DictReader(handle)}
    assert rows["wide.tif"]["rbc_count"] == "" and int(rows["scan.tif"]["rbc_area_px"]) == area


class FailsOnLargeInputs(torch.nn.Module):
    """The trained network, failing like a GPU out of memory on inputs above max_pixels."""

    def __init__(self, net: torch.nn.Module, max_pixels: int):
        super().__init__()
        self.inner, self.max_pixels = net, max_pixels

    def forward(self, x):
        if x.shape[-2] * x.shape[-1] > self.max_pixels:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return self.inner(x)


@pytest.mark.slow
def test_a_network_failure_costs_only_the_image_that_fails_alone(smoke_run, tmp_path, monkeypatch):
    """The network fails on the batch of a large image (as out of memory would): the images batched
    before it are written, those after it are predicted one at a time, and only the large one is
    reported as not predicted."""
    run_dir, _ = smoke_run
    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed, (h, w) in (
        ("a", 30, (40, 50)),
        ("b", 31, (200, 300)),
        ("c", 32, (40, 50)),
        ("d", 33, (40, 50)),
    ):
        Image.fromarray(generate_smear(seed, h, w)[0]).save(folder / f"{name}.png")
    load_module = predict_module.load_module

    def load_with_failing_network(path):
        module = load_module(path)
        module.net = FailsOnLargeInputs(module.net, max_pixels=128 * 128)
        return module

    monkeypatch.setattr(predict_module, "load_module", load_with_failing_network)
    cfg = compose_app(
        "predict", f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}", f"input={folder}", f"output_dir={tmp_path / 'out'}",
        "predict.mode=whole",
    )  # fmt: skip
    summary = predict_module.predict(cfg, tmp_path)
    assert [r["image"] for r in summary["images"]] == ["a.png", "c.png", "d.png"]
    (skipped,) = summary["skipped"]
    assert skipped["file"].endswith("b.png") and "out of memory" in skipped["reason"]
    for name in "acd":
        assert (tmp_path / "out" / f"{name}_labels.png").is_file()
    assert not list((tmp_path / "out").glob("b_*"))
