"""`python -m bloodseg.export`: self-describing ONNX / TorchScript models that match the PyTorch model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, run_cli
from hydra import compose, initialize_config_dir

from bloodseg.builders import load_module
from bloodseg.config import check_config
from bloodseg.data.synthetic import generate_smear
from bloodseg.export import ExportFormat, export_onnx, parity_image, read_metadata, verify

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")

SEEDS = range(8)  # parity test images: noisy synthetic smears at the training size


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
    result = run_cli("bloodseg.export", f"ckpt_path={ckpt}", *args, f"hydra.run.dir={tmp_path / 'hydra'}")
    assert result.returncode == 0, result.stderr[-3000:]
    return load_module(ckpt), json.loads(result.stdout.strip().splitlines()[-1])


def smear_images(module, seeds=SEEDS) -> list[np.ndarray]:
    height, width = module.meta["image_size"]
    return [parity_image(seed, height, width) for seed in seeds]


def flat_smear_images(module, seeds=SEEDS) -> list[np.ndarray]:
    """The generator's noiseless smears: flat regions, hence exactly tied pooling windows."""
    height, width = module.meta["image_size"]
    return [generate_smear(seed, height, width)[0].transpose(2, 0, 1)[None].copy() for seed in seeds]


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


@pytest.mark.slow
def test_onnx_export_is_self_describing_and_matches_pytorch(smoke_run, tmp_path):
    """ONNX Runtime (CPU) vs PyTorch: logits within 1e-4 and identical argmax.

    On photograph-like (noisy) images. On the generator's noiseless smears, flat regions give
    exactly tied max-pooling windows that ONNX Runtime's convolution (another summation order)
    breaks by rounding, and SegNet's unpooling carries the other choice: there the classes
    must still agree on >= 99% of the pixels (measured on the smoke model: >= 99.85%).
    """
    import onnx
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    module, record = export_cli(smoke_run, tmp_path, f"output={path}", "verify=false")
    assert record["output"] == str(path) and not list(tmp_path.glob("*.data"))  # one self-contained file
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["class_names"]) == ["background", "rbc", "wbc"]
    check_metadata(json.loads(props["bloodseg"]), module)
    assert read_metadata(path)["input"]["dtype"] == "uint8"

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (feed,) = session.get_inputs()
    assert feed.name == "images" and feed.type == "tensor(uint8)"
    batch, channels, height, width = feed.shape
    assert channels == 3 and all(isinstance(d, str) for d in (batch, height, width))  # dynamic axes
    for images in smear_images(module):
        ours, theirs = session.run(None, {"images": images})[0], reference(module, images)
        assert np.abs(ours - theirs).max() <= 1e-4 and (ours.argmax(1) == theirs.argmax(1)).all()
    for images in flat_smear_images(module):
        ours, theirs = session.run(None, {"images": images})[0], reference(module, images)
        assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.99

    batch = np.concatenate(smear_images(module)[:2])  # dynamic batch
    assert session.run(None, {"images": batch})[0].shape == (2, 3, *module.meta["image_size"])
    large = parity_image(0, 128, 192)  # dynamic size
    ours, theirs = session.run(None, {"images": large})[0], reference(module, large)
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-4


@pytest.mark.slow
def test_onnx_export_of_a_float_input_model(smoke_run, tmp_path):
    module = load_module(smoke_run[0] / "checkpoints/last.ckpt")
    path = tmp_path / "float.onnx"
    assert export_onnx(module, path, input_dtype="float32")["input"]["dtype"] == "float32"
    record = verify(module, path, num_images=2)  # the export command's own check; float32 0..255 fed
    assert record["parity_images_within_1e-4"] == 2 and record["min_argmax_agreement"] == 1.0


@pytest.mark.slow
def test_torchscript_export_is_self_describing_and_matches_pytorch(smoke_run, tmp_path):
    path = tmp_path / "model.pt"
    module, record = export_cli(smoke_run, tmp_path, "format=torchscript", f"output={path}", "verify=false")
    assert record["format"] == "torchscript"
    files = {"bloodseg.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=files)
    check_metadata(json.loads(files["bloodseg.json"]), module)
    images = np.concatenate(smear_images(module, range(3)))  # same kernels as PyTorch: every image matches
    with torch.inference_mode():
        ours = scripted(torch.from_numpy(images)).numpy()
        as_float = scripted(torch.from_numpy(images[:1]).float()).numpy()
    theirs = reference(module, images)
    assert np.abs(ours - theirs).max() <= 1e-4 and (ours.argmax(1) == theirs.argmax(1)).all()
    np.testing.assert_allclose(ours[:1], as_float, atol=1e-5)
    # any size works, not only the training size
    large = generate_smear(0, 100, 150)[0].transpose(2, 0, 1)[None].copy()
    with torch.inference_mode():
        assert np.abs(scripted(torch.from_numpy(large)).numpy() - reference(module, large)).max() <= 1e-4


@pytest.mark.slow
def test_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    result = run_cli("bloodseg.export", f"ckpt_path={tmp_path / 'x.ckpt'}", f"hydra.run.dir={tmp_path / 'h'}")
    assert result.returncode == 2 and "x.ckpt does not exist" in result.stderr
    assert "Traceback" not in result.stderr
