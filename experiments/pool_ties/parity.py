"""How much do a trained checkpoint's predictions depend on the CPU kernels, thread count and batch size?

Real CellaVision crops, resized to the checkpoint's training size, are scored once in this
process (the machine's best kernels, batch 8: the reference) and again in fresh processes under
``ATEN_CPU_CAPABILITY`` = default / avx2 / avx512 with 1 or 2 threads and batch 1 or 8, and by
ONNX Runtime (the exported file, 1 and all threads). Each comparison prints one JSON line with
the largest logit difference, the share of pixels with the same class, the pixels whose class
differs although the reference's two best classes are further apart than the parity tolerance
("decided"), and whether the parity contract of ``bloodseg.inference.parity`` holds.

    .venv/bin/python experiments/pool_ties/parity.py RUN_DIR [IMAGES_GLOB] [COUNT]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bloodseg.inference.model_export import export_onnx, folder_parity_images
from bloodseg.inference.parity import compare_logits
from bloodseg.training.checkpoints import load_module

SCORE = """
import sys
import numpy as np
import torch
from bloodseg.training.checkpoints import load_module

ckpt, images_path, threads, batch, out = sys.argv[1:]
torch.set_num_threads(int(threads))
module = load_module(ckpt).eval()
images = torch.from_numpy(np.load(images_path))
with torch.inference_mode():
    logits = torch.cat([module(part) for part in images.split(int(batch))])
np.save(out, logits.numpy())
print(torch.backends.cpu.get_cpu_capability())
"""

# oneDNN (the convolutions) picks its instruction set on its own: cap it too, to act as that CPU.
ONEDNN_ISA = {"default": "SSE41", "avx2": "AVX2", "avx512": "AVX512_CORE"}
SETTINGS = [
    ("default", 1, 1),
    ("default", 2, 8),
    ("avx2", 1, 1),
    ("avx2", 2, 8),
    ("avx512", 1, 1),
    ("avx512", 2, 8),
]


def score_elsewhere(ckpt: Path, images: Path, capability: str, threads: int, batch: int, out: Path) -> str:
    """Logits of the checkpoint in a fresh process with these kernels, threads and batch; the kernels it used."""
    env = dict(
        os.environ,
        ATEN_CPU_CAPABILITY=capability,
        ONEDNN_MAX_CPU_ISA=ONEDNN_ISA[capability],
        PYTHONWARNINGS="ignore",
    )
    args = [sys.executable, "-c", SCORE, str(ckpt), str(images), str(threads), str(batch), str(out)]
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def main(run_dir: Path, pattern: str, count: int) -> None:
    """Print one JSON comparison per kernel/thread/batch setting and per ONNX Runtime setting."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    module = load_module(ckpt).eval()
    height, width = (int(v) for v in module.meta["image_size"])
    images = np.concatenate([image for _, image in folder_parity_images(pattern, height, width, count)])
    with torch.inference_mode():
        reference = torch.cat([module(part) for part in torch.from_numpy(images).split(8)]).numpy()
    common = {
        "run": str(run_dir),
        "pool_tie_tolerance": getattr(module.net, "pool_tie_tolerance", None),
        "images": len(images),
        "image_size": [height, width],
        "reference": f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, batch 8",
    }
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "images.npy", images)
        for capability, threads, batch in SETTINGS:
            used = score_elsewhere(
                ckpt, Path(tmp) / "images.npy", capability, threads, batch, Path(tmp) / "l.npy"
            )
            record = compare_logits(reference, np.load(Path(tmp) / "l.npy"))
            setting = {"kernels": used, "asked": capability, "threads": threads, "batch": batch}
            print(json.dumps({**common, **setting, **record}), flush=True)
        import onnxruntime as ort

        export_onnx(module, Path(tmp) / "m.onnx")
        for threads in (1, 0):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(
                str(Path(tmp) / "m.onnx"), options, providers=["CPUExecutionProvider"]
            )
            logits = np.concatenate(
                [session.run(None, {"images": images[i : i + 8]})[0] for i in range(0, len(images), 8)]
            )
            setting = {"runtime": f"onnxruntime {ort.__version__}", "threads": threads or "all", "batch": 8}
            print(json.dumps({**common, **setting, **compare_logits(reference, logits)}), flush=True)


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        sys.argv[2] if len(sys.argv) > 2 else "../shared/data/cellavision_wbc/*.bmp",
        int(sys.argv[3]) if len(sys.argv) > 3 else 100,
    )
