"""Lightning callbacks of bloodseg: writing the evaluation artifacts of a test run; the notice of a run
stopped by Ctrl-C or a termination signal."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from bloodseg.data.loading import stray_summary
from bloodseg.evaluation.artifacts import write_evaluation
from bloodseg.termination import stopped_by
from bloodseg.training.job_status import write_job_status

log = logging.getLogger("bloodseg.train")


RECORDED_NOTE = "bloodseg: interruption recorded in job_status.json"


def record_interruption(run_dir: Path, stop: str, during: str, exception: BaseException) -> None:
    """Log one line saying what a stopped run kept and how to continue; job_status.json says interrupted.

    Once per interruption: ``exception`` is marked, and a second call with it does nothing.
    """
    if RECORDED_NOTE in getattr(exception, "__notes__", ()):
        return
    exception.add_note(RECORDED_NOTE)
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    kept = (
        f"{last} (written at the end of the last completed epoch)" if last.is_file() else "no checkpoint yet"
    )
    log.warning("interrupted (%s) %s; kept: %s; re-run the same command to continue", stop, during, kept)
    write_job_status(Path(run_dir), "interrupted", stopped_by=stop)


class InterruptNotice(Callback):
    """On Ctrl-C or a termination signal during training or testing: say in which epoch, what was kept
    and how to continue; job_status.json says interrupted."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        stop = stopped_by(exception)
        if stop is None or not trainer.is_global_zero:
            return
        during = f"during epoch {trainer.current_epoch + 1} (step {trainer.global_step})"
        record_interruption(self.run_dir, stop, during, exception)


class EvaluationArtifacts(Callback):
    """After a test run, write every evaluation artifact of the test split to out_dir (rank 0 only).

    metrics.json, metrics.md, confusion_matrix.csv/.png, per_image_metrics.csv, and overlays of
    the best and worst test images; the paper's Tables 1 and 2 go to the log.
    """

    def __init__(self, out_dir: Path, title: str = "test split", num_overlays: int = 1, **extra):
        self.out_dir = Path(out_dir)
        self.title, self.num_overlays, self.extra = title, num_overlays, extra
        self.metrics: dict | None = None

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        results = module.test_results
        if results is None or not trainer.is_global_zero:
            return
        meta, datamodule = module.meta, trainer.datamodule
        loaded = datamodule.splits[datamodule.eval_split]
        image_ids = [loaded.ids[i] for i in results["image_index"].tolist()]
        extra = {
            "model_init": meta.get("init_source"),
            "class_weighting": meta["config"]["loss"]["class_weighting"],
            "class_weights": dict(zip(meta["class_names"], meta["class_weights"], strict=True)),
            "stray_labels": stray_summary(loaded.stray, loaded.label_pixels),
            **self.extra,
        }

        def render(row: int):
            index = int(results["image_index"][row])
            image = loaded.images[index]
            with torch.no_grad():
                pred = module(image[None].to(module.device)).argmax(1)[0].cpu()
            return image.permute(1, 2, 0).numpy(), loaded.masks[index].numpy(), pred.numpy()

        self.metrics = write_evaluation(
            self.out_dir,
            results,
            meta["class_names"],
            meta["class_colors"],
            image_ids,
            self.title,
            extra,
            render,
            self.num_overlays,
            module.test_metrics.semantics,
            instance_settings=None
            if module.test_metrics.instances is None
            else module.test_metrics.instances.settings,
        )
