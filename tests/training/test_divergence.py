"""A diverging run fails loudly, names the step, and keeps only finite checkpoints."""

from __future__ import annotations

import json
import re

import lightning as L
import pytest
import torch
from conftest import ONE_BATCH, run_tool
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from bloodseg.sweeps.results import collect_jobs
from bloodseg.training.divergence import DivergenceGuard, TrainingDiverged


class Poisoned(L.LightningModule):
    """A one-weight model whose loss (or only its gradient) turns non-finite from step `bad_step` on."""

    def __init__(self, bad_step: int, where: str):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.bad_step, self.where = bad_step, where

    def training_step(self, batch, batch_idx):
        loss = (self.w * batch[0]).pow(2).mean()
        if self.global_step + 1 >= self.bad_step:
            if self.where == "loss":
                loss = loss * float("nan")
            else:  # sqrt'(0) is infinite: a finite loss (0) with an infinite gradient
                loss = loss + torch.sqrt(self.w - self.w.detach()).sum()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # weights stay finite: only the flag can stop it


@pytest.mark.parametrize("where", ["loss", "gradients"])
def test_guard_stops_at_the_first_non_finite_step_and_keeps_the_last_good_checkpoint(tmp_path, where):
    data = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=1)  # 4 steps per epoch
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last", every_n_epochs=1)
    trainer = L.Trainer(
        max_epochs=3,
        log_every_n_steps=50,  # the flag is read at epoch end / before saving, not at a logging step
        callbacks=[DivergenceGuard("Likely cause: test"), checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with pytest.raises(TrainingDiverged, match=f"the {where} became NaN or infinite at step 6; .*test"):
        trainer.fit(Poisoned(bad_step=6, where=where), data)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert (saved["epoch"], saved["global_step"]) == (0, 4)  # epoch 1's checkpoint, not replaced


@pytest.mark.slow
def test_diverging_smoke_run_exits_non_zero_naming_the_step(tmp_path):
    run_dir = tmp_path / "run"
    result = run_tool(
        "bloodseg.train",
        "experiment=segnet_vgg16",
        *ONE_BATCH,
        "trainer.max_epochs=5",
        "optimizer.lr=1e6",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(error) == 1 and "training diverged" in error[0] and "at step " in error[0]
    assert "optimizer.lr=1000000.0" in error[0] and "Traceback" not in result.stderr
    assert json.loads((run_dir / "job_status.json").read_text())["status"] == "failed"
    assert not (run_dir / "metrics.json").exists()
    step = int(re.search(r"at step (\d+)", error[0]).group(1))  # steps are counted from 0
    saved = sorted(run_dir.rglob("*.ckpt"))
    assert bool(saved) == (step >= 1)  # one batch per epoch: every step before it ended a saved epoch
    for ckpt in saved:  # the checkpoints of the epochs before divergence: finite, none of a later step
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert state["global_step"] <= step, ckpt
        assert all(t.isfinite().all() for t in state["state_dict"].values() if t.is_floating_point()), ckpt


@pytest.mark.slow
def test_diverged_sweep_job_is_listed_as_failed(tmp_path):
    result = run_tool(
        "bloodseg.train",
        "-m",
        "experiment=segnet_vgg16",
        *ONE_BATCH,
        "trainer.max_epochs=5",
        "optimizer.lr=1e6",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode != 0
    (job,) = collect_jobs(tmp_path)
    assert job.status == "failed" and "training diverged" in job.error and job.metrics is None
