"""`python -m bloodseg.export`: self-describing ONNX / TorchScript models that match the PyTorch model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, run_cli, run_tool
from hydra import compose, initialize_config_dir

from bloodseg.config import ExportFormat, check_config
from bloodseg.inference.model_export import (
    export_onnx,
    folder_parity_images,
    read_metadata,
    synthetic_parity_images,
    verify,
)
from bloodseg.inference.parity import compare_logits
from bloodseg.training.checkpoints import load_module

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")

SEEDS = range(4)  # parity test images: generated smears at the training size, flat and noisy


def test_export_config_composes_with_its_schema():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="export", overrides=["ckpt_path=x.ckpt", "format=torchscript"])
        check_config(cfg)
        assert cfg.format == ExportFormat.torchscript and cfg.input_dtype.value == "uint8"
        with pytest.raises(Exception, match="onnnx"):
            compose(config_name="export", overrides=["format=onnnx"])


def export_cli(smoke_run, tmp_path, *args):
    """Run the export command on the smoke checkpoint; returns (module, its printed JSON record)."""
    run_dir, _ = smoke_run
    ckpt = run_dir / "checkpoints/last.ckpt"
    result = run_tool("bloodseg.export", f"ckpt_path={ckpt}", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_module(ckpt), json.loads(result.stdout.strip().splitlines()[-1])


def noisy(image: np.ndarray, seed: int) -> np.ndarray:
    """The image with +-3 grey levels of sensor-like noise, as in a photograph."""
    noise = np.random.default_rng(seed).integers(-3, 4, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def smear_images(module, seeds=SEEDS) -> list[np.ndarray]:
    """Generated smears (flat regions: exactly tied pooling windows) and noisy copies of them."""
    height, width = module.meta["image_size"]
    flat = [image for _, image in synthetic_parity_images(height, width, len(seeds))]
    return flat + [noisy(image, seed) for seed, image in enumerate(flat)]


def reference(module, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(images)).numpy()


def check_metadata(metadata: dict, module) -> None:
    meta = module.meta
    assert metadata["class_names"] == meta["class_names"] and metadata["class_colors"] == meta["class_colors"]
    assert metadata["image_size"] == meta["image_size"]
    assert metadata["mean"] == meta["mean"] and metadata["std"] == meta["std"]
    assert metadata["input"]["layout"] == "NCHW" and "inside the model" in metadata["input"]["normalisation"]
    assert metadata["output"]["channels"] == len(meta["class_names"])


def assert_parity(reference: np.ndarray, other: np.ndarray) -> None:
    """The parity contract: logits within tolerance, the same class on every decided pixel."""
    record = compare_logits(reference, other)
    assert record["meets_contract"], record


@pytest.mark.slow
def test_onnx_export_is_self_describing_and_matches_pytorch(smoke_run, tmp_path, cellavision_dir):
    """ONNX Runtime (CPU) vs PyTorch meet the parity contract: on real photographs (the export
    command's own check, verify_images=), on flat and on noisy smears."""
    import onnx
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    module, record = export_cli(
        smoke_run, tmp_path, f"output={path}", f"verify_images={cellavision_dir}/*.bmp", "verify_count=3"
    )
    assert record["output"] == str(path) and not list(tmp_path.glob("*.data"))  # one self-contained file
    assert record["parity_images"] == 3 and record["meets_contract"], record
    assert record["min_argmax_agreement"] > 0.99 and record["max_abs_diff"] < 1e-2
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["class_names"]) == ["background", "rbc", "wbc"]
    check_metadata(json.loads(props["bloodseg"]), module)
    assert read_metadata(path)["input"]["dtype"] == "uint8"

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    one_thread = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (feed,) = session.get_inputs()
    assert feed.name == "images" and feed.type == "tensor(uint8)"
    batch, channels, height, width = feed.shape
    assert channels == 3 and all(isinstance(d, str) for d in (batch, height, width))  # dynamic axes
    for images in smear_images(module):
        expected = reference(module, images)
        for runtime in (session, one_thread):
            assert_parity(expected, runtime.run(None, {"images": images})[0])

    batch = np.concatenate(smear_images(module)[:2])  # dynamic batch
    assert session.run(None, {"images": batch})[0].shape == (2, 3, *module.meta["image_size"])
    (_, large), *_ = synthetic_parity_images(128, 192, 1)  # dynamic size
    assert_parity(reference(module, large), session.run(None, {"images": large})[0])


@pytest.mark.slow
def test_onnx_export_of_a_float_input_model(smoke_run, tmp_path):
    module = load_module(smoke_run[0] / "checkpoints/last.ckpt")
    path = tmp_path / "float.onnx"
    assert export_onnx(module, path, input_dtype="float32")["input"]["dtype"] == "float32"
    images = synthetic_parity_images(*module.meta["image_size"], 2)
    record = verify(module, path, images)  # the export command's own check; float32 0..255 fed
    assert record["parity_images"] == 2 and record["meets_contract"], record


def test_verify_images_takes_a_folder_a_pattern_or_a_file(cellavision_dir):
    """verify_images= picks the first images of a folder or pattern, in name order, at the training size."""
    picked = folder_parity_images(f"{cellavision_dir}/*.bmp", 64, 96, 3)
    assert [name for name, _ in picked] == ["001.bmp", "002.bmp", "003.bmp"]
    assert all(image.shape == (1, 3, 64, 96) and image.dtype == np.uint8 for _, image in picked)
    assert [name for name, _ in folder_parity_images(str(cellavision_dir / "002.bmp"), 64, 64, 3)] == [
        "002.bmp"
    ]


def test_verify_images_without_images_is_a_clear_error(tmp_path):
    from bloodseg.errors import BloodsegError

    with pytest.raises(BloodsegError, match="verify_images=.*holds no image files"):
        folder_parity_images(str(tmp_path), 64, 96, 2)


@pytest.mark.slow
def test_torchscript_export_is_self_describing_and_matches_pytorch(smoke_run, tmp_path):
    path = tmp_path / "model.pt"
    module, record = export_cli(smoke_run, tmp_path, "format=torchscript", f"output={path}", "verify=false")
    assert record["format"] == "torchscript"
    files = {"bloodseg.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=files)
    check_metadata(json.loads(files["bloodseg.json"]), module)
    images = np.concatenate(smear_images(module, range(3)))
    with torch.inference_mode():
        ours = scripted(torch.from_numpy(images)).numpy()
        alone = scripted(torch.from_numpy(images[:1])).numpy()
        as_float = scripted(torch.from_numpy(images[:1]).float()).numpy()
    assert_parity(reference(module, images), ours)
    assert_parity(ours[:1], alone)  # batch of 6 vs alone: other kernels, same classes
    np.testing.assert_array_equal(alone, as_float)  # uint8 and float input are the same computation
    # any size works, not only the training size
    (_, large), *_ = synthetic_parity_images(100, 150, 1)
    with torch.inference_mode():
        assert_parity(reference(module, large), scripted(torch.from_numpy(large)).numpy())


@pytest.mark.slow
def test_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    result = run_cli("bloodseg.export", f"ckpt_path={tmp_path / 'x.ckpt'}")
    assert result.returncode == 2 and "x.ckpt does not exist" in result.stderr
    assert "Traceback" not in result.stderr
