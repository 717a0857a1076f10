"""A checkpoint as a self-describing ONNX or TorchScript model.

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

import glob
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torchvision.transforms.v2.functional import InterpolationMode, resize

from bloodseg.cli import check_output_dir, exit_2_on_user_error
from bloodseg.config import check_config
from bloodseg.data.imageio import IMAGE_SUFFIXES, read_rgb
from bloodseg.errors import BloodsegError
from bloodseg.extras import require
from bloodseg.files import partial_path
from bloodseg.inference.parity import LOGIT_ATOL, LOGIT_RTOL, compare_logits
from bloodseg.training.checkpoints import load_module

log = logging.getLogger("bloodseg.export")


METADATA_FILE = "bloodseg.json"  # TorchScript extra file holding the model's description


METADATA_VERSION = 1


# ---- the exported network ----------------------------------------------------------------------
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
    return ImageSegmenter(module.net, module.meta["mean"], module.meta["std"]).eval().cpu()


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
    save_in_one_piece(path, lambda staged: program.save(str(staged), external_data=False))
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
    extra = {METADATA_FILE: json.dumps(metadata, indent=2)}
    save_in_one_piece(path, lambda staged: torch.jit.save(scripted, str(staged), _extra_files=extra))
    return metadata


def save_in_one_piece(path: Path, save: Callable[[Path], None]) -> None:
    """Let ``save(staged)`` write the model to a hidden file beside ``path``, then rename it into place:
    a stopped or failed export leaves no half-written model (and an earlier one untouched)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = partial_path(path)
    try:
        save(staged)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


# ---- parity ------------------------------------------------------------------------------------
def load_exported(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """An exported model (ONNX Runtime on the CPU, or TorchScript) as a function: uint8 NCHW images -> logits."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        dtype = np.uint8 if feed.type == "tensor(uint8)" else np.float32
        return lambda images: session.run(None, {feed.name: images.astype(dtype, copy=False)})[0]
    model = torch.jit.load(str(path), map_location="cpu")

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images)).numpy()

    return run


def parity(module, exported: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> dict:
    """The exported model's logits vs PyTorch's on uint8 NCHW images, as ``compare_logits`` measures them."""
    with torch.inference_mode():
        reference = module.cpu().eval()(torch.from_numpy(images)).numpy()
    return compare_logits(reference, exported(images))


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
    if fmt == "onnx":  # the `export` extra; checked before anything is loaded or written
        for module_name in ("onnx", "onnxscript", *(["onnxruntime"] if cfg.verify else [])):
            require(module_name, "export", "format=onnx")
    output = Path(cfg.output).expanduser() if cfg.output else default_output(ckpt, fmt)
    if output.is_dir():
        raise BloodsegError(
            f"output={output} is a folder; fix: give the file to write, e.g. {output / 'model.onnx'}"
        )
    check_output_dir(output.parent, "output's folder")  # before any work
    module = load_module(ckpt).cpu()
    if fmt == "onnx":
        metadata = export_onnx(module, output, cfg.input_dtype.value, cfg.opset, str(ckpt))
    else:
        metadata = export_torchscript(module, output, str(ckpt))
    result = {"output": str(output), "format": fmt, "bytes": output.stat().st_size}
    log.info("wrote %s (%s, classes %s)", output, fmt, metadata["class_names"])
    if cfg.verify:
        height, width = (int(v) for v in module.meta["image_size"])
        count = cfg.verify_count
        images = (
            folder_parity_images(cfg.verify_images, height, width, count)
            if cfg.verify_images
            else synthetic_parity_images(height, width, count)
        )
        result.update(verify(module, output, images))
    return result


def synthetic_parity_images(height: int, width: int, count: int) -> list[tuple[str, np.ndarray]]:
    """Generated smears (1x3xHxW uint8) of the training size; their flat regions are full of tied pooling windows."""
    from bloodseg.data.synthetic import generate_smear

    return [
        (f"synthetic smear {seed}", generate_smear(seed, height, width)[0].transpose(2, 0, 1)[None].copy())
        for seed in range(count)
    ]


def folder_parity_images(path: str, height: int, width: int, count: int) -> list[tuple[str, np.ndarray]]:
    """Up to ``count`` images of a folder, a file or a glob pattern, resized to the training size as in training."""
    pattern = Path(path).expanduser()
    if glob.has_magic(str(pattern)):
        files = sorted(Path(f) for f in glob.glob(str(pattern)))
    else:
        files = [pattern] if pattern.is_file() else sorted(pattern.glob("*"))
    files = [f for f in files if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise BloodsegError(
            f"verify_images={path} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
            "fix: give a folder, a file or a pattern such as 'DIR/*.bmp'"
        )
    images = []
    for file in files[:count]:
        rgb = torch.from_numpy(read_rgb(file)[0].copy()).permute(2, 0, 1)
        resized = resize(rgb, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=True)
        images.append((file.name, resized[None].contiguous().numpy()))
    return images


def verify(module, output: Path, images: list[tuple[str, np.ndarray]]) -> dict:
    """Compare the exported model with the PyTorch one on (name, image) pairs; the worst case of each number."""
    try:
        exported = load_exported(output)
    except ImportError as error:
        log.warning("parity check skipped: %s (pip install onnxruntime)", error)
        return {}
    records = [parity(module, exported, image) for _, image in images]
    result = {
        "parity_images": len(records),
        "max_abs_diff": max(r["max_abs_diff"] for r in records),
        "min_argmax_agreement": min(r["argmax_agreement"] for r in records),
        "undecided_pixels": sum(r["undecided_pixels"] for r in records),
        "decided_pixels_disagreeing": sum(r["decided_pixels_disagreeing"] for r in records),
        "meets_contract": all(r["meets_contract"] for r in records),
    }
    failing = [name for (name, _), r in zip(images, records, strict=True) if not r["meets_contract"]]
    log.info("parity with PyTorch on %d images (%s ...): %s", len(records), images[0][0], result)
    if failing:
        log.warning(
            "the exported model differs from PyTorch beyond the contract (logits within %g + %g|x|, the same "
            "class wherever the two best classes are further apart than that) on %s; max logit difference "
            "%.3g, class agreement %.4f at worst",
            LOGIT_ATOL,
            LOGIT_RTOL,
            ", ".join(failing),
            result["max_abs_diff"],
            result["min_argmax_agreement"],
        )
    return result


def run_export(cfg: DictConfig) -> None:
    """One ``python -m bloodseg.export`` run: export, print one JSON line describing the exported file.

    A BloodsegError ends the process with one log line and exit status 2.
    """
    with exit_2_on_user_error(log):
        result = export(cfg)
    print(json.dumps(result), flush=True)
