"""Stopping a training run whose loss or gradients stop being finite (divergence), before it saves anything."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from bloodseg.errors import BloodsegError


class TrainingDiverged(BloodsegError):
    """The loss or a gradient became NaN or infinite: the run stops and counts as failed (exit code 1)."""

    exit_code = 1


class DivergenceGuard(Callback):
    """Fail the run, naming the step, once the training loss or a gradient is NaN or infinite.

    Every step only updates a flag on the device (no host sync); the flag is read where Lightning
    syncs anyway (logging steps), at the end of each training epoch, before validation and before
    every checkpoint is written, so a diverged model never replaces a good checkpoint and never gets
    evaluated. Gradients are not checked under fp16 mixed precision, whose loss scaler skips
    overflowing steps by design. ``hint`` is appended to the message (the likely causes).
    """

    def __init__(self, hint: str = ""):
        self.hint = hint
        self._first: torch.Tensor | None = (
            None  # [loss step, gradient step] of the first non-finite value; -1: none
        )
        self._check_gradients = True

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        """Skip the gradient check under fp16 loss scaling (inf gradients there are skipped steps)."""
        self._check_gradients = not str(trainer.precision).startswith("16")

    def _flag(self, which: int, bad: torch.Tensor, step: int) -> None:
        if self._first is None or self._first.device != bad.device:
            self._first = torch.full((2,), -1, dtype=torch.long, device=bad.device)
        update = (self._first[which] < 0) & bad
        self._first[which] = torch.where(update, step, self._first[which])

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        """Flag a non-finite gradient norm (one fused norm over all gradients, no sync)."""
        if not self._check_gradients:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads, foreach=True)
            self._flag(1, ~torch.isfinite(norm), trainer.global_step + 1)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        """Flag a non-finite loss; read the flags on logging steps."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._flag(0, ~torch.isfinite(loss.detach()), max(trainer.global_step, 1))
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self.check(trainer)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.check(trainer)

    def on_validation_start(self, trainer, module) -> None:
        if trainer.state.fn == "fit":  # before scoring (and possibly checkpointing) a diverged model
            self.check(trainer)

    def on_train_end(self, trainer, module) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer, module, checkpoint: dict[str, Any]) -> None:
        """Refuse to write a checkpoint after divergence, or one holding non-finite weights."""
        self.check(trainer)
        tensors = [
            t
            for t in checkpoint["state_dict"].values()
            if isinstance(t, torch.Tensor) and t.is_floating_point()
        ]
        if tensors and not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
            raise TrainingDiverged(
                f"training diverged: the weights hold NaN or infinite values at step {trainer.global_step}; "
                f"no checkpoint written. {self.hint}".strip()
            )

    def check(self, trainer: L.Trainer) -> None:
        """Raise TrainingDiverged when any step so far had a non-finite loss or gradient (all ranks agree)."""
        first = self._first.tolist() if self._first is not None else [-1, -1]
        seen = [(step, what) for step, what in zip(first, ("loss", "gradients"), strict=True) if step >= 0]
        seen.sort(key=lambda item: item[0])  # stable: a NaN loss (and so NaN gradients) is named as the loss
        if not trainer.strategy.reduce_boolean_decision(bool(seen), all=False):
            return
        if seen:
            step, what = seen[0]
            where = f"the {what} became NaN or infinite at step {step}"
        else:
            where = f"another process saw a NaN or infinite loss or gradient by step {trainer.global_step}"
        raise TrainingDiverged(
            f"training diverged: {where}; stopped without saving a checkpoint of it. {self.hint}".strip()
        )
