"""Damaged checkpoints are refused with one line naming the file; intact and older ones still load."""

from __future__ import annotations

import importlib
import io
import pickletools
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ONE_BATCH, SMOKE, compose_train, run_tool

from bloodseg.errors import BloodsegError
from bloodseg.training.checkpoints import load_module, read_checkpoint
from bloodseg.training.integrity import DIGEST_KEY
from bloodseg.training.module import CHECKPOINT_KEY
from bloodseg.training.run import train


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
    from bloodseg.training.integrity import add_digest

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


# Every bloodseg path a checkpoint written before the package was split into subpackages stores
# (read off a smoke checkpoint of main aa43a30: its pickle names only collections/torch globals, and
# these _target_ strings): checkpoints load as long as these resolve and no bloodseg class is pickled.
PRE_SPLIT_TARGETS = {"bloodseg.models.segnet.SegNet", "bloodseg.models.baselines.build_smp"}


def pickled_names(path: Path) -> tuple[set[str], set[str]]:
    """The (module, name) globals a checkpoint's pickle references, and its strings naming bloodseg paths."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    ops = list(pickletools.genops(io.BytesIO(data)))
    globals_, strings = set(), set()
    for index, (op, arg, _) in enumerate(ops):
        if op.name == "GLOBAL":
            globals_.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            globals_.add(f"{ops[index - 2][1]}.{ops[index - 1][1]}")
        elif isinstance(arg, str) and arg.startswith("bloodseg."):
            strings.add(arg)
    return globals_, strings


def test_checkpoints_name_only_paths_that_survive_the_package_split(smoke_run):
    """A checkpoint pickles no bloodseg class (module moves cannot break unpickling), and the only
    bloodseg paths it stores are the models' _target_s of checkpoints from before the split."""
    run_dir, _ = smoke_run
    globals_, strings = pickled_names(run_dir / "checkpoints" / "last.ckpt")
    assert globals_, "no globals found: the pickle scan is broken"
    assert not [g for g in globals_ if g.startswith("bloodseg")], globals_
    assert {g.split(".")[0] for g in globals_} <= {"collections", "torch", "numpy", "builtins", "_codecs"}
    assert "bloodseg.models.segnet.SegNet" in strings
    assert strings <= PRE_SPLIT_TARGETS | {s for s in strings if not s.count(".") > 1}
    for target in PRE_SPLIT_TARGETS:
        module, _, name = target.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))


def test_loading_a_checkpoint_restores_exactly_its_stored_weights(smoke_run):
    """The stored model _target_ is one of the pre-split paths, and load_module restores every stored tensor."""
    run_dir, _ = smoke_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    meta = checkpoint[CHECKPOINT_KEY]
    assert meta["config"]["model"]["_target_"] in PRE_SPLIT_TARGETS
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    state = module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in checkpoint["state_dict"].items())
