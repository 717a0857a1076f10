"""Damaged checkpoints are refused with one line naming the file; intact and older ones still load."""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ONE_BATCH, SMOKE, compose_train, run_tool

from bloodseg.builders import load_module, read_checkpoint
from bloodseg.errors import BloodsegError
from bloodseg.integrity import DIGEST_KEY
from bloodseg.module import CHECKPOINT_KEY
from bloodseg.train import train


def flip_bytes_inside_largest_tensor(path: Path) -> None:
    """Invert 64 bytes in the middle of the largest tensor record: the zip stays readable."""
    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack(
        "<HH", data[record.header_offset + 26 : record.header_offset + 30]
    )
    middle = record.header_offset + 30 + name_length + extra_length + record.file_size // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
    path.write_bytes(data)


def small_checkpoint(path: Path, weights: torch.Tensor, digest: bool = True) -> Path:
    """A checkpoint as the training module writes it, holding one weight tensor."""
    from bloodseg.integrity import add_digest

    checkpoint = {CHECKPOINT_KEY: {"class_names": ["a"]}, "state_dict": {"net.w": weights}}
    if digest:
        add_digest(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_changed_bytes_inside_a_weight_tensor_are_caught(tmp_path):
    path = small_checkpoint(tmp_path / "w.ckpt", torch.arange(4096, dtype=torch.float32))
    read_checkpoint(path)  # intact: loads
    flip_bytes_inside_largest_tensor(path)
    torch.load(path, weights_only=False)  # torch itself notices nothing
    with pytest.raises(BloodsegError, match=f"checkpoint {path} is damaged"):
        read_checkpoint(path)


def test_non_finite_weights_are_refused_and_old_checkpoints_without_a_hash_load(tmp_path):
    old = small_checkpoint(tmp_path / "old.ckpt", torch.ones(8), digest=False)
    assert DIGEST_KEY not in read_checkpoint(old)
    nan = small_checkpoint(tmp_path / "nan.ckpt", torch.tensor([1.0, float("nan")]), digest=False)
    with pytest.raises(BloodsegError, match=f"checkpoint {nan} holds NaN or infinite weights"):
        read_checkpoint(nan)


@pytest.mark.slow
def test_damaged_checkpoint_is_one_line_in_evaluate_predict_export_and_resume(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    assert DIGEST_KEY in torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)
    damaged = tmp_path / "damaged.ckpt"
    shutil.copyfile(run_dir / "checkpoints/last.ckpt", damaged)
    flip_bytes_inside_largest_tensor(damaged)
    result = run_tool("bloodseg.evaluate", f"ckpt_path={damaged}", f"output_dir={tmp_path / 'eval'}")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"checkpoint {damaged} is damaged" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "eval" / "metrics.json").exists()
    with pytest.raises(BloodsegError, match="is damaged"):  # predict and export load through this
        load_module(damaged)
    cfg = compose_train([*SMOKE, *ONE_BATCH, f"ckpt_path={damaged}"])
    with pytest.raises(BloodsegError, match="is damaged"):
        train(cfg, tmp_path / "resume")


@pytest.mark.slow
def test_resuming_with_another_model_family_is_one_line(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    cfg = compose_train([*SMOKE, *ONE_BATCH, "model=unet", f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}"])
    with pytest.raises(BloodsegError, match="holds a segnet_vgg16 model that does not fit model=unet"):
        train(cfg, tmp_path / "resume")
