"""The same checkpoint gives the same classes under every CPU kernel set, thread count and batch size."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from bloodseg.inference.model_export import synthetic_parity_images
from bloodseg.inference.parity import compare_logits
from bloodseg.training.checkpoints import load_module

# oneDNN (the convolutions) picks its instruction set on its own: cap it too, to act as that CPU.
ONEDNN_ISA = {"default": "SSE41", "avx2": "AVX2", "avx512": "AVX512_CORE"}

# Run in a fresh process: ATEN_CPU_CAPABILITY and the thread count are fixed when torch starts.
SCRIPT = """
import sys
import numpy as np
import torch
from bloodseg.training.checkpoints import load_module

ckpt, images_path, threads, batch, out = sys.argv[1:]
torch.set_num_threads(int(threads))
module = load_module(ckpt)
images = torch.from_numpy(np.load(images_path))
with torch.inference_mode():
    logits = torch.cat([module(part) for part in images.split(int(batch))])
np.save(out, logits.numpy())
print(torch.backends.cpu.get_cpu_capability())
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("capability", "threads", "batch"),
    [
        ("default", 1, 1),
        ("default", 2, 8),
        ("avx2", 2, 3),
        ("avx2", 1, 8),
        ("avx512", 1, 8),
        ("avx512", 2, 1),
    ],
)
def test_classes_do_not_depend_on_cpu_kernels_threads_or_batch_size(
    smoke_run, tmp_path, capability, threads, batch
):
    """Each kernel set the CPU has is checked, and the child reports it in force (a set the CPU lacks
    would silently fall back to another and repeat that case: it is skipped, naming the CPU)."""
    supported = {
        "default": True,
        "avx2": torch.cpu._is_avx2_supported(),
        "avx512": torch.cpu._is_avx512_supported(),
    }
    if not supported[capability]:
        pytest.skip(f"this CPU has no {capability.upper()} kernels; the case runs on CPUs that have them")
    ckpt = smoke_run[0] / "checkpoints/last.ckpt"
    module = load_module(ckpt)
    height, width = module.meta["image_size"]
    images = np.concatenate([image for _, image in synthetic_parity_images(height, width, 8)])
    np.save(tmp_path / "images.npy", images)
    with torch.inference_mode():
        reference = module(torch.from_numpy(images)).numpy()  # this process: its own kernels, batch 8
    env = dict(
        os.environ,
        ATEN_CPU_CAPABILITY=capability,
        ONEDNN_MAX_CPU_ISA=ONEDNN_ISA[capability],
        PYTHONWARNINGS="ignore",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(ckpt),
            str(tmp_path / "images.npy"),
            str(threads),
            str(batch),
            str(tmp_path / "logits.npy"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == capability.upper()  # the kernels asked for are the ones that ran
    record = compare_logits(reference, np.load(tmp_path / "logits.npy"))
    assert record["meets_contract"], (result.stdout.strip(), record)
