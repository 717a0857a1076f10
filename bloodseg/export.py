"""``python -m bloodseg.export``: a checkpoint as a self-describing ONNX or TorchScript model.

    python -m bloodseg.export ckpt_path=CKPT format=onnx|torchscript [output=PATH]

The exported model takes RGB images as they come from a file: NCHW, values 0..255 (ONNX:
uint8 by default, ``input_dtype=float32`` for float input; TorchScript: either), and returns
the class scores (logits, NCHW); the normalisation is inside the model. Batch, height and width
are dynamic (SegNet: any size of at least 32x32; the training size is the natural one). What the
model is (class names and colours, training input size, mean/std, input and output layout) is
stored with it: in ONNX ``metadata_props`` (one JSON value per key, the whole record under
``bloodseg``), in TorchScript as the extra file ``bloodseg.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig
from torch import nn

from bloodseg.builders import load_module
from bloodseg.config import check_config
from bloodseg.errors import BloodsegError
from bloodseg.models.segnet import SegNet

log = logging.getLogger("bloodseg.export")

METADATA_FILE = "bloodseg.json"  # TorchScript extra file holding the model's description
METADATA_VERSION = 1


# ---- config ------------------------------------------------------------------------------------
class ExportFormat(Enum):
    onnx = "onnx"
    torchscript = "torchscript"


class InputDtype(Enum):
    uint8 = "uint8"
    float32 = "float32"


@dataclass
class ExportConfig:
    ckpt_path: str | None = None
    format: ExportFormat = ExportFormat.onnx
    output: str | None = None
    input_dtype: InputDtype = InputDtype.uint8
    opset: int = 18
    verify: bool = True


def register_configs() -> None:
    """Store the export schema in Hydra's ConfigStore (conf/export.yaml extends it)."""
    ConfigStore.instance().store(name="export_schema", node=ExportConfig)


register_configs()


# ---- the exported network ----------------------------------------------------------------------
class ScriptableSegNet(nn.Module):
    """SegNet's forward written with the ATen pooling ops, which TorchScript can compile.

    It shares the trained layers of the given SegNet (no copy); ``nn.MaxUnpool2d`` with an
    ``output_size`` can be neither scripted nor traced in torch 2.14.
    """

    def __init__(self, net: SegNet):
        super().__init__()
        self.encoder, self.decoder, self.classifier = net.encoder, net.decoder, net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, K, H, W) for normalised images (N, 3, H, W)."""
        indices: list[torch.Tensor] = []
        sizes: list[list[int]] = []
        for stage in self.encoder:
            x = stage(x)
            sizes.append([x.shape[-2], x.shape[-1]])
            x, idx = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
            indices.append(idx)
        level = len(indices)
        for stage in self.decoder:
            level -= 1
            x = stage(torch.ops.aten.max_unpool2d(x, indices[level], sizes[level]))
        return self.classifier(x)


class ImageSegmenter(nn.Module):
    """Images as read from a file (N, 3, H, W, RGB, 0..255, uint8 or float) in, class scores out."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W); argmax over dim 1 gives class ids."""
        return self.net((images.float() - self.mean) / self.std)


def exportable(module, torchscript: bool) -> ImageSegmenter:
    """The trained network of a SegmentationModule with its normalisation, in eval mode, on the CPU."""
    net = module.net
    if torchscript and isinstance(net, SegNet):
        net = ScriptableSegNet(net)
    return ImageSegmenter(net, module.meta["mean"], module.meta["std"]).eval().cpu()


# ---- metadata ----------------------------------------------------------------------------------
def model_metadata(meta: dict[str, Any], fmt: str, input_dtype: str, dynamic_size: bool, ckpt: str) -> dict:
    """What an exported model is and how to feed it: classes, colours, sizes, normalisation, layouts."""
    height, width = (int(v) for v in meta["image_size"])
    return {
        "bloodseg_metadata_version": METADATA_VERSION,
        "format": fmt,
        "model": meta["config"]["model"].get("name", meta["config"]["model"].get("_target_")),
        "class_names": list(meta["class_names"]),
        "class_colors": [list(c) for c in meta["class_colors"]],
        "background_class": 0,
        "image_size": [height, width],
        "mean": list(meta["mean"]),
        "std": list(meta["std"]),
        "input": {
            "name": "images",
            "layout": "NCHW",
            "channels": "RGB",
            "dtype": input_dtype,
            "range": "0..255 (raw pixel values)",
            "normalisation": "inside the model: (images - 255 * mean) / (255 * std)",
            "shape": ["batch", "height" if dynamic_size else height, "width" if dynamic_size else width],
            "recommended_size": [height, width],
            "note": "the training size; larger images: tile them (python -m bloodseg.predict does)",
        },
        "output": {
            "name": "logits",
            "layout": "NCHW",
            "channels": len(meta["class_names"]),
            "meaning": "unnormalised class scores; argmax over dim 1 = class id (index into class_names)",
        },
        "checkpoint": ckpt,
        "init_source": meta.get("init_source"),
    }


def read_metadata(path: str | Path) -> dict:
    """The bloodseg description stored in an exported ONNX or TorchScript file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props["bloodseg"])
    files = {METADATA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files[METADATA_FILE])


# ---- export ------------------------------------------------------------------------------------
def export_onnx(module, path: Path, input_dtype: str = "uint8", opset: int = 18, ckpt: str = "") -> dict:
    """Write the model as one self-contained ONNX file with its metadata; returns the metadata."""
    model = exportable(module, torchscript=False)
    height, width = (int(v) for v in module.meta["image_size"])
    dtype = torch.uint8 if input_dtype == "uint8" else torch.float32
    example = torch.randint(0, 256, (2, 3, height, width)).to(dtype)
    batch = torch.export.Dim("batch", min=1, max=1024)
    spatial = {
        2: torch.export.Dim("height", min=32, max=16384),
        3: torch.export.Dim("width", min=32, max=16384),
    }
    program, dynamic_size = None, True
    for name in ("onnx_ir", "onnxscript"):  # their INFO/WARNING chatter about graph passes is not for users
        logging.getLogger(name).setLevel(logging.ERROR)
    for shapes in ({0: batch, **spatial}, {0: batch}):  # any size if the network allows it, else batch only
        try:
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=(shapes,),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
            break
        except Exception as error:  # noqa: BLE001
            if len(shapes) == 1:
                raise BloodsegError(f"ONNX export of {ckpt} failed: {error}") from None
            log.warning(
                "dynamic height/width did not export (%s); exporting for %dx%d only", error, height, width
            )
            dynamic_size = False
    metadata = model_metadata(module.meta, "onnx", input_dtype, dynamic_size, ckpt)
    props = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    props["bloodseg"] = json.dumps(metadata)
    program.model.metadata_props.update(props)
    program.model.doc_string = (
        f"bloodseg {metadata['model']}: {input_dtype} RGB images NCHW 0..255 in (normalised inside), "
        f"logits NCHW over classes {metadata['class_names']} out; see metadata_props['bloodseg']"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)
    return metadata


def export_torchscript(module, path: Path, ckpt: str = "") -> dict:
    """Write the model as a TorchScript file with its metadata as the extra file bloodseg.json."""
    model = exportable(module, torchscript=True)
    try:
        scripted = torch.jit.script(model)
    except Exception as error:  # noqa: BLE001
        height, width = (int(v) for v in module.meta["image_size"])
        log.warning("torch.jit.script failed (%s); tracing at %dx%d instead", error, height, width)
        scripted = torch.jit.trace(model, torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8))
    metadata = model_metadata(module.meta, "torchscript", "uint8 or float32", True, ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: json.dumps(metadata, indent=2)})
    return metadata


# ---- parity ------------------------------------------------------------------------------------
def run_exported(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits of an exported model (ONNX Runtime on the CPU, or TorchScript) for uint8 NCHW images."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        images = images if feed.type == "tensor(uint8)" else images.astype(np.float32)
        return session.run(None, {feed.name: images})[0]
    model = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return model(torch.from_numpy(images)).numpy()


def parity(module, path: Path, images: np.ndarray) -> dict[str, float]:
    """Max absolute logit difference and share of equal argmax pixels, exported vs PyTorch model."""
    with torch.inference_mode():
        reference = module.cpu().eval()(torch.from_numpy(images)).numpy()
    exported = run_exported(path, images)
    return {
        "max_abs_diff": float(np.abs(exported - reference).max()),
        "argmax_agreement": float((exported.argmax(1) == reference.argmax(1)).mean()),
    }


def default_output(ckpt: Path, fmt: str) -> Path:
    """Next to the checkpoint: <stem>.onnx or <stem>.torchscript.pt."""
    return ckpt.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")


def export(cfg: DictConfig) -> dict:
    """Export cfg.ckpt_path in cfg.format; returns what was written (and the parity check's numbers)."""
    check_config(cfg)
    if not cfg.ckpt_path:
        raise BloodsegError("give ckpt_path=CKPT (a run's checkpoints/last.ckpt) and format=onnx|torchscript")
    ckpt = Path(cfg.ckpt_path).expanduser()
    fmt = cfg.format.value
    module = load_module(ckpt).cpu()
    output = Path(cfg.output).expanduser() if cfg.output else default_output(ckpt, fmt)
    if fmt == "onnx":
        metadata = export_onnx(module, output, cfg.input_dtype.value, cfg.opset, str(ckpt))
    else:
        metadata = export_torchscript(module, output, str(ckpt))
    result = {"output": str(output), "format": fmt, "bytes": output.stat().st_size}
    log.info("wrote %s (%s, classes %s)", output, fmt, metadata["class_names"])
    if cfg.verify:
        result.update(verify(module, output))
    return result


def parity_image(seed: int, height: int, width: int) -> np.ndarray:
    """A synthetic smear (1x3xHxW uint8) with +-3 grey levels of sensor-like noise, for parity checks.

    Real photographs are noisy; the generator's flat backgrounds are not, and in flat regions
    neighbouring activations tie exactly in PyTorch while ONNX Runtime's convolution breaks the tie
    by rounding, which moves a SegNet unpooling index. The noise removes those artificial ties.
    """
    from bloodseg.data.synthetic import generate_smear

    image = generate_smear(seed, height, width)[0].transpose(2, 0, 1)[None].astype(np.int16)
    noise = np.random.default_rng(seed).integers(-3, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def verify(module, output: Path, num_images: int = 4) -> dict[str, float]:
    """Compare the exported model with the PyTorch one on noisy synthetic smears of the training size."""
    height, width = (int(v) for v in module.meta["image_size"])
    diffs, agreements = [], []
    for seed in range(num_images):
        try:
            numbers = parity(module, output, parity_image(seed, height, width))
        except ImportError as error:
            log.warning("parity check skipped: %s (pip install onnxruntime)", error)
            return {}
        diffs.append(numbers["max_abs_diff"])
        agreements.append(numbers["argmax_agreement"])
    result = {
        "parity_images": num_images,
        "parity_images_within_1e-4": sum(d <= 1e-4 for d in diffs),
        "max_abs_diff": max(diffs),
        "min_argmax_agreement": min(agreements),
    }
    log.info("parity with PyTorch on %d synthetic %dx%d smears: %s", num_images, height, width, result)
    if result["parity_images_within_1e-4"] < num_images:
        level = logging.WARNING if result["min_argmax_agreement"] < 0.999 else logging.INFO
        log.log(
            level,
            "where logits differ (up to %.2g), rounding flipped a near-tied max-pooling choice, which SegNet's "
            "unpooling turns into a local difference; class agreement is %.4f at worst",
            result["max_abs_diff"],
            result["min_argmax_agreement"],
        )
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; prints one JSON line describing the exported file."""
    try:
        result = export(cfg)
    except BloodsegError as error:
        log.error("%s", error)
        raise SystemExit(2) from None
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
