"""Bad settings and unusable output folders fail up front, in one line naming the key and the fix."""

from __future__ import annotations

import pytest
import torch
from conftest import CONF_DIR, ONE_BATCH, SMOKE, compose_train, run_tool
from hydra import compose, initialize_config_dir
from PIL import Image

from bloodseg.config import check_config
from bloodseg.errors import BloodsegError
from bloodseg.inference.model_export import export
from bloodseg.inference.predict_run import predict
from bloodseg.inference.tiling import resolve_device
from bloodseg.training.run import train
from bloodseg.training.testing import evaluate


def compose_app(name: str, *overrides: str):
    """The composed config of `python -m bloodseg.<name> overrides...`."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.mark.parametrize("data", ["folder", "allidb1"])
def test_folder_data_without_a_root_names_data_root(tmp_path, data):
    with pytest.raises(BloodsegError, match=r"data.root is not set.*fix: add data.root="):
        train(compose_train([*SMOKE, *ONE_BATCH, f"data={data}"]), tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", "optimizer.lr=-1.0 (must be > 0)"),
        ("data.batch_size=0", "data.batch_size=0 (must be >= 1)"),
        ("data.test_fraction=1.5", "data.test_fraction=1.5 (must be in [0, 1))"),
        ("loss.label_smoothing=1", "loss.label_smoothing=1.0 (must be in [0, 1))"),
        ("data.rotation=200", "data.rotation=200.0 (must be in [0, 180] degrees)"),
        ("data.color_jitter=1.5", "data.color_jitter=1.5 (must be in [0, 1))"),
    ],
)
def test_values_out_of_range_name_the_key(override, message):
    with pytest.raises(
        BloodsegError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        check_config(compose_train([*SMOKE, override]))


def test_output_folders_that_are_files_fail_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    image = tmp_path / "one.png"
    Image.new("RGB", (40, 40)).save(image)
    missing_ckpt = tmp_path / "never_read.ckpt"  # the output check comes first: the checkpoint is not needed
    with pytest.raises(BloodsegError, match=f"hydra.run.dir={blocker} is a file"):
        train(compose_train([*SMOKE, *ONE_BATCH]), blocker)
    with pytest.raises(BloodsegError, match=f"output_dir={blocker} is a file"):
        evaluate(compose_app("evaluate", f"ckpt_path={missing_ckpt}", f"output_dir={blocker}"), tmp_path)
    with pytest.raises(BloodsegError, match=f"output_dir={blocker} is a file"):
        predict(
            compose_app("predict", f"ckpt_path={missing_ckpt}", f"input={image}", f"output_dir={blocker}"),
            tmp_path,
        )
    with pytest.raises(BloodsegError, match=f"output={tmp_path} is a folder"):
        export(compose_app("export", f"ckpt_path={missing_ckpt}", f"output={tmp_path}"))
    with pytest.raises(BloodsegError, match="output's folder=.*a_file is a file"):
        export(compose_app("export", f"ckpt_path={missing_ckpt}", f"output={blocker / 'model.onnx'}"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_predict_on_cuda_without_a_gpu_is_one_line():
    with pytest.raises(BloodsegError, match="predict.device=cuda, but no CUDA GPU"):
        resolve_device("cuda")


def test_evaluate_data_keys_without_data_name_the_fix(tmp_path):
    result = run_tool("bloodseg.evaluate", f"ckpt_path={tmp_path / 'x.ckpt'}", "data.image_size=[64,64]")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data.image_size=[64,64] needs data=NAME" in result.stderr
