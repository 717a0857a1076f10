"""Weights & Biases tracking (``logger=wandb``): offline unless W&B is configured, never fatal.

- ``build_wandb_logger(cfg, run_dir)``: a Lightning ``WandbLogger`` whose W&B run lives in
  ``<run_dir>/wandb``, named and grouped from the Hydra config (a multirun's jobs share a group named
  after the sweep; the run name shows the command-line overrides), with the fully resolved config.
  A run continued from a checkpoint (``ckpt_path=``, or a resubmitted job's own ``last.ckpt``) keeps
  the W&B run id recorded in that run directory's ``wandb_run_id.txt``.
- ``WandbMedia``: a callback that logs class weights, mask overlays of a fixed set of test images
  every N epochs (W&B mask overlays, so the dashboard's mask toggles work) and, after testing, the
  confusion matrix (plot, table and image) and the per-class metric table.
- ``finish(loggers, run_dir, succeeded)``: logs metrics.json and the best checkpoint as artifacts and
  finishes the W&B run. Called at the end of every job, so a multirun's jobs never merge into one run.
- ``run_summary(...)``: the one-screen end-of-run block (paper Tables 1 and 2, where the files are).

Whatever goes wrong inside W&B (no network, no key, quota, a full disk) is reported once as a warning;
training goes on with the CSV logger.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from bloodseg.config import IGNORE_INDEX

log = logging.getLogger("bloodseg.tracking")

RUN_ID_FILE = "wandb_run_id.txt"
MODES = ("auto", "offline", "online", "disabled")
DEFAULT_BASE_URL = "https://api.wandb.ai"
MAX_NAME = 128  # W&B display names longer than this are cut
MAX_TAG = 64  # W&B rejects longer tags


# ---- mode, naming, resume -------------------------------------------------------------------------
def api_key_configured() -> bool:
    """Whether W&B credentials exist on this machine: WANDB_API_KEY (or an identity token) or a netrc entry
    for the W&B host (what ``wandb login`` writes). Nothing is sent anywhere."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base_url = os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    try:  # wandb's own reader (knows about $NETRC and _netrc on Windows)
        from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth

        return bool(read_netrc_auth(host=base_url))
    except Exception:  # noqa: BLE001  (older/newer wandb, unreadable file): plain netrc
        pass
    try:
        host = urlsplit(base_url).netloc
        return bool(host and netrc.netrc(os.environ.get("NETRC")).authenticators(host))
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str) -> str:
    """offline | online | disabled for ``logger.wandb.mode``.

    auto: WANDB_MODE when set, else online when credentials are configured (see api_key_configured),
    else offline. An explicit offline / online / disabled is used as is.
    """
    requested = str(requested).lower()
    if requested not in MODES:
        from bloodseg.errors import BloodsegError

        raise BloodsegError(f"logger.wandb.mode={requested} is unknown; use one of {', '.join(MODES)}")
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("offline", "dryrun"):
        return "offline"
    if env == "disabled":
        return "disabled"
    if env in ("online", "run"):
        return "online"
    return "online" if api_key_configured() else "offline"


@dataclass
class HydraContext:
    """What the Hydra app knows about this job (empty when train() is called outside Hydra)."""

    multirun: bool = False
    sweep_dir: str | None = None
    job_num: int | None = None
    overrides: tuple[str, ...] = ()
    choices: dict[str, Any] | None = None


def hydra_context() -> HydraContext:
    """The running Hydra job's mode, sweep dir, job number and task overrides (hydra.* left out)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return HydraContext()
        hc = HydraConfig.get()
        overrides = tuple(str(o) for o in hc.overrides.task if not str(o).lstrip("+~").startswith("hydra"))
        multirun = hc.mode == RunMode.MULTIRUN
        return HydraContext(
            multirun=multirun,
            sweep_dir=str(hc.sweep.dir) if multirun else None,
            job_num=int(hc.job.num) if multirun and hc.job.get("num") is not None else None,
            overrides=overrides,
            choices=dict(hc.runtime.choices),
        )
    except Exception:  # noqa: BLE001  (a half-set HydraConfig, e.g. in tests): no Hydra context
        return HydraContext()


NAME_SKIP = ("experiment", "logger", "hydra")  # overrides that do not describe the experiment


def run_name(cfg: DictConfig, context: HydraContext) -> str:
    """``<name>`` followed by the command-line overrides, e.g. ``segnet_vgg16 optimizer.lr=0.01 seed=2``."""
    if cfg.logger.wandb.name:
        return str(cfg.logger.wandb.name)
    shown = []
    for override in context.overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.split(".", 1)[0].split("/", 1)[0] in NAME_SKIP:
            continue
        shown.append(override)
    name = " ".join([str(cfg.name), *sorted(shown)])
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


def run_group(cfg: DictConfig, context: HydraContext) -> str:
    """logger.wandb.group, else ``<name>-<sweep dir name>`` for a multirun's jobs, else ``<name>``."""
    if cfg.logger.wandb.group:
        return str(cfg.logger.wandb.group)
    if context.multirun and context.sweep_dir:
        return f"{cfg.name}-{Path(context.sweep_dir).name}"
    return str(cfg.name)


def run_tags(cfg: DictConfig, context: HydraContext) -> list[str]:
    """The experiment name, model, class weighting, multirun / debug markers and logger.wandb.tags."""
    weighting = cfg.loss.class_weighting
    tags = [str(cfg.name), str(cfg.model.name), f"weighting:{getattr(weighting, 'value', weighting)}"]
    if context.multirun:
        tags.append("multirun")
    debug = (context.choices or {}).get("debug")
    if debug:
        tags.append(f"debug:{debug}")
    tags += [str(t) for t in cfg.logger.wandb.tags or []]
    return list(dict.fromkeys(t[:MAX_TAG] for t in tags))


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config with interpolations resolved and enums as strings (as W&B wants it)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception:  # noqa: BLE001  (${hydra:...} outside a Hydra app)
        return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def previous_run_id(cfg: DictConfig, run_dir: Path) -> str | None:
    """The W&B run id to continue: the one recorded next to ``ckpt_path``'s run, else this run dir's own."""
    candidates = []
    if cfg.ckpt_path:
        ckpt = Path(str(cfg.ckpt_path)).expanduser()
        candidates += [ckpt.parent.parent / RUN_ID_FILE, ckpt.parent / RUN_ID_FILE]
    candidates.append(Path(run_dir) / RUN_ID_FILE)
    for path in candidates:
        try:
            run_id = path.read_text().strip()
        except OSError:
            continue
        if run_id:
            return run_id
    return None


# ---- the logger -------------------------------------------------------------------------------------
class SafeWandbLogger(WandbLogger):
    """Lightning's WandbLogger, except that an exception raised by W&B is reported once and switches W&B
    off for the rest of the run instead of stopping training (the CSV logger keeps everything)."""

    def __init__(self, *args, log_artifacts: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_artifacts = log_artifacts
        self.failed = False  # W&B raised: switched off for the rest of the run
        self.closed = False  # finish() ended the W&B run
        self.best_checkpoint: str | None = None
        self.previous_wandb_dir: str | None = None  # WANDB_DIR before this run set it

    def disable(self, error: BaseException, doing: str) -> None:
        """Report the failure once and stop using W&B in this run."""
        if not self.failed:
            self.failed = True
            log.warning(
                "W&B failed while %s (%s: %s); continuing without W&B: metrics go to the CSV logger only",
                doing,
                type(error).__name__,
                error,
            )

    def guarded(self, doing: str, fn, *args, **kwargs):
        """Run a W&B call; on failure, warn once and switch W&B off. Returns the call's result or None."""
        if self.failed or self.closed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            self.disable(error, doing)
            return None

    @property
    def active(self) -> bool:
        """Whether this process logs to a live W&B run (rank 0, initialised, not failed)."""
        return not (self.failed or self.closed) and rank_zero_only.rank == 0 and self._experiment is not None

    def log_metrics(self, metrics, step=None) -> None:
        self.guarded("logging metrics", super().log_metrics, metrics, step)

    def log_hyperparams(self, params) -> None:
        self.guarded("logging hyperparameters", super().log_hyperparams, params)

    def log_table(self, *args, **kwargs) -> None:
        self.guarded("logging a table", super().log_table, *args, **kwargs)

    def log_image(self, *args, **kwargs) -> None:
        self.guarded("logging images", super().log_image, *args, **kwargs)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.guarded("recording a checkpoint", super().after_save_checkpoint, checkpoint_callback)

    def finalize(self, status: str) -> None:
        self.guarded("finalising", super().finalize, status)

    def log_now(self, data: dict[str, Any], step: int) -> None:
        """Log media/tables against the trainer's global step (the x-axis of every bloodseg chart)."""
        if self.active:
            self.guarded("logging media", self._experiment.log, {**data, "trainer/global_step": step})


def build_wandb_logger(cfg: DictConfig, run_dir: Path) -> SafeWandbLogger | None:
    """The W&B logger of ``cfg.logger.wandb``, its run started now (rank 0), or None when W&B is disabled
    or cannot start (one warning; training continues with the CSV logger)."""
    w = cfg.logger.wandb
    mode = resolve_mode(w.mode)
    if mode == "disabled":
        log.info("W&B disabled (logger.wandb.mode / WANDB_MODE); metrics go to the CSV logger only")
        return None
    run_dir = Path(run_dir).resolve()
    context = hydra_context()
    try:
        import wandb

        if wandb.run is not None:  # a previous job of this process left its run open: never merge into it
            log.warning("finishing a W&B run left open by a previous job (%s)", wandb.run.id)
            wandb.finish()
        run_id = previous_run_id(cfg, run_dir) if w.resume else None
        config = resolved_config(cfg)
        config["run_dir"] = str(run_dir)
        config["overrides"] = list(context.overrides)
        logger = SafeWandbLogger(
            name=run_name(cfg, context),
            save_dir=str(run_dir),
            id=run_id,
            project=w.project,
            entity=w.entity,
            group=run_group(cfg, context),
            job_type=w.job_type or "train",
            tags=run_tags(cfg, context),
            config=config,
            mode=mode,
            resume="allow",
            log_model=False,  # artifacts are logged once, at the end (finish)
            log_artifacts=bool(w.log_artifacts),
            settings=wandb.Settings(init_timeout=float(w.init_timeout)),
        )
        # Lightning passes anonymous=None to wandb.init, which recent wandb versions warn about
        getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        # processes that attach to this run (ddp_spawn workers) write their media under the same directory
        logger.previous_wandb_dir = os.environ.get("WANDB_DIR")
        os.environ["WANDB_DIR"] = str(run_dir)
        if rank_zero_only.rank == 0:
            (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
            run = logger.experiment  # start now, so that a failure is caught here and not mid-training
            (run_dir / RUN_ID_FILE).write_text(f"{run.id}\n")
            where = run.url if mode == "online" and run.url else run.settings.sync_dir
            log.info(
                "W&B %s run %s%s (group %s): %s",
                mode,
                run.id,
                " (continued)" if run_id else "",
                run.group,
                where,
            )
        return logger
    except Exception as error:  # noqa: BLE001  (no key, no network, bad entity, unwritable dir, ...)
        log.warning(
            "W&B could not start (%s: %s); training continues with the CSV logger only (%s). "
            "Set logger.wandb.mode=offline to keep a local W&B run, or logger=csv to skip W&B.",
            type(error).__name__,
            str(error).strip().splitlines()[0] if str(error).strip() else "",
            run_dir / "csv" / "metrics.csv",
        )
        _abandon_run()
        return None


def _abandon_run(exit_code: int = 1) -> None:
    """Finish whatever W&B run is still open in this process (quietly)."""
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    try:
        wandb.finish(exit_code=exit_code)
    except Exception:  # noqa: BLE001
        pass


def wandb_logger_of(trainer: L.Trainer) -> SafeWandbLogger | None:
    """The trainer's live W&B logger, if any."""
    for logger in trainer.loggers:
        if isinstance(logger, SafeWandbLogger) and logger.active:
            return logger
    return None


# ---- media ------------------------------------------------------------------------------------------
class WandbMedia(Callback):
    """Class weights at the start; mask overlays of a fixed set of images every ``every_n_epochs`` epochs
    and at the end of training; after testing, the confusion matrix and per-class metric table.

    Rank 0 only, a handful of single-image forward passes every N epochs: W&B stays off the hot path.
    The images are ``num_images`` test images spread evenly over the split (val, then train, when the test
    split is empty), the same ones every time.
    """

    def __init__(self, every_n_epochs: int = 10, num_images: int = 4):
        self.every_n_epochs = int(every_n_epochs)
        self.num_images = int(num_images)

    # which images
    def _fixed_images(self, trainer: L.Trainer) -> tuple[str, Any, list[int]] | None:
        splits = getattr(trainer.datamodule, "splits", None) or {}
        for split in ("test", "val", "train"):
            loaded = splits.get(split)
            if loaded is not None and len(loaded.ids) > 0:
                n = len(loaded.ids)
                count = min(self.num_images, n)
                rows = sorted({int(round(i)) for i in np.linspace(0, n - 1, count)}) if count > 0 else []
                return split, loaded, rows
        return None

    def _class_labels(self, module: L.LightningModule) -> dict[int, str]:
        labels = {i: str(n) for i, n in enumerate(module.class_names)}
        labels[IGNORE_INDEX] = "unlabelled"
        return labels

    def _overlays(self, trainer: L.Trainer, module: L.LightningModule) -> tuple[str, list] | None:
        import wandb

        found = self._fixed_images(trainer)
        if found is None or not found[2]:
            return None
        split, loaded, rows = found
        labels = self._class_labels(module)
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                batch = loaded.images[rows].to(module.device)
                eager = hasattr(module, "net") and hasattr(module, "normalize")  # no torch.compile recompiles
                if eager:
                    logits = module.net(module.normalize(batch))
                else:
                    logits = module(batch)
                preds = logits.argmax(1).to(torch.uint8).cpu().numpy()
        finally:
            module.train(was_training)
        images = []
        for row, pred in zip(rows, preds, strict=True):
            truth = loaded.masks[row].numpy().astype(np.uint8)
            images.append(
                wandb.Image(
                    loaded.images[row].permute(1, 2, 0).numpy(),
                    masks={
                        "predictions": {"mask_data": pred, "class_labels": labels},
                        "ground_truth": {"mask_data": truth, "class_labels": labels},
                    },
                    caption=loaded.ids[row],
                )
            )
        return f"overlays/{split}", images

    def _log_overlays(self, trainer: L.Trainer, module: L.LightningModule, logger: SafeWandbLogger) -> None:
        made = logger.guarded("rendering overlays", self._overlays, trainer, module)
        if made:
            logger.log_now({made[0]: made[1]}, trainer.global_step)

    # hooks
    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logger = wandb_logger_of(trainer)
        meta = getattr(module, "meta", None)
        if logger is None or not meta or "class_weights" not in meta:
            return
        weights = dict(zip(meta["class_names"], meta["class_weights"], strict=True))
        logger.guarded(
            "logging class weights",
            logger.experiment.config.update,
            {"class_weights": weights, "model_init": meta.get("init_source")},
            allow_val_change=True,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logger = wandb_logger_of(trainer)
        if logger is None or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        due = self.every_n_epochs > 0 and epoch % self.every_n_epochs == 0
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        if due or last:
            self._log_overlays(trainer, module, logger)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logger = wandb_logger_of(trainer)
        callback = trainer.checkpoint_callback
        if logger is None or callback is None:
            return
        best = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        logger.best_checkpoint = best or None
        # stopped early or by max_steps: the final state still gets its overlays
        if trainer.max_epochs is None or trainer.current_epoch < trainer.max_epochs:
            self._log_overlays(trainer, module, logger)

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        logger = wandb_logger_of(trainer)
        results = getattr(module, "test_results", None)
        if logger is None or results is None:
            return
        logger.guarded("logging test results", self._log_test_results, trainer, module, logger, results)

    def _log_test_results(self, trainer, module, logger: SafeWandbLogger, results: dict[str, Any]) -> None:
        import wandb

        from bloodseg.viz import confusion_matrix_figure

        names = [str(n) for n in module.class_names]
        counts = results["counts"].double().numpy()
        cm_rows = [[a, p, int(counts[i, j])] for i, a in enumerate(names) for j, p in enumerate(names)]
        cm_table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cm_rows)

        def value(key, i):
            x = float(results[key][i]) if key in results else float("nan")
            return None if np.isnan(x) else x

        per_class = wandb.Table(
            columns=["class", "accuracy", "iou", "mean_bf_score", "dice"],
            data=[
                [
                    n,
                    value("class_accuracy", i),
                    value("class_iou", i),
                    value("class_bf_score", i),
                    value("class_dice", i),
                ]
                for i, n in enumerate(names)
            ],
        )
        data = {
            "test/confusion_matrix": wandb.plot_table(
                "wandb/confusion_matrix/v1",
                cm_table,
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": "Confusion matrix (test, pixels)"},
            ),
            "test/per_class_metrics": per_class,
        }
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "confusion_matrix.png"
            confusion_matrix_figure(counts, names, png, "Normalized confusion matrix (%), test split")
            data["test/confusion_matrix_image"] = wandb.Image(str(png))
            logger.log_now(data, trainer.global_step)


# ---- the end of a job -------------------------------------------------------------------------------
@dataclass
class WandbRunInfo:
    """Where a finished W&B run lives."""

    run_id: str
    mode: str
    directory: str | None
    url: str | None


def _log_artifacts(logger: SafeWandbLogger, run_dir: Path) -> None:
    import wandb

    run = logger.experiment
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        artifact = wandb.Artifact(f"metrics-{run.id}", type="evaluation")
        artifact.add_file(str(metrics), name="metrics.json")
        for extra in ("metrics.md", "confusion_matrix.csv", "per_image_metrics.csv"):
            if (run_dir / extra).is_file():
                artifact.add_file(str(run_dir / extra), name=extra)
        run.log_artifact(artifact, aliases=["latest"])
    checkpoint = (
        Path(logger.best_checkpoint) if logger.best_checkpoint else run_dir / "checkpoints" / "last.ckpt"
    )
    if checkpoint.is_file():
        artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata={"file": checkpoint.name})
        artifact.add_file(str(checkpoint), name="model.ckpt")
        run.log_artifact(artifact, aliases=["latest", "best"])


def finish(loggers, run_dir: Path, succeeded: bool = True) -> WandbRunInfo | None:
    """End this job's W&B run (rank 0): artifacts when it succeeded and logger.wandb.log_artifacts is on,
    then ``finish``. Always leaves no W&B run open, so the next job of a multirun starts its own."""
    info = None
    for logger in loggers or []:
        if not isinstance(logger, SafeWandbLogger) or not logger.active:
            continue
        run = logger.experiment
        if succeeded and logger.log_artifacts:
            logger.guarded("logging artifacts", _log_artifacts, logger, Path(run_dir))
        offline = bool(getattr(run, "offline", False)) or run.settings.mode == "offline"
        info = WandbRunInfo(
            run_id=run.id,
            mode="offline" if offline else "online",
            directory=str(run.settings.sync_dir) if run.settings.sync_dir else None,
            url=None if offline else run.url,
        )
        logger.guarded("finishing the run", run.finish, exit_code=0 if succeeded else 1)
        logger.closed = True
    for logger in loggers or []:
        if isinstance(logger, SafeWandbLogger) and os.environ.get("WANDB_DIR") == str(logger.save_dir):
            if logger.previous_wandb_dir is None:
                os.environ.pop("WANDB_DIR", None)
            else:
                os.environ["WANDB_DIR"] = logger.previous_wandb_dir
    _abandon_run(exit_code=0 if succeeded else 1)
    return info


def run_summary(metrics: dict[str, Any] | None, run_dir: Path, wandb_info: WandbRunInfo | None = None) -> str:
    """The end-of-run block: Tables 1 and 2 of the test split, the run directory and the W&B run."""
    from bloodseg.metrics.report import paper_tables

    rule = "=" * 78
    lines = [rule, "bloodseg: run finished", rule]
    if metrics is not None:
        lines += [paper_tables(metrics, "test split"), ""]
    else:
        lines += ["(no test evaluation: test_after_fit=false or an empty test split)", ""]
    run_dir = Path(run_dir).resolve()
    lines.append(f"Run directory : {run_dir}")
    lines.append("                metrics.json, metrics.md, confusion_matrix.png, overlays, csv/metrics.csv")
    lines.append(f"HTML report   : python -m bloodseg.report {run_dir}")
    if wandb_info is None:
        lines.append(
            "W&B           : not used (logger=csv, mode disabled, or it could not start: see the warnings)"
        )
    elif wandb_info.mode == "offline":
        lines.append(f"W&B offline   : {wandb_info.directory}")
        lines.append(f"                upload later: wandb sync {wandb_info.directory}")
    else:
        lines.append(f"W&B           : {wandb_info.url or wandb_info.run_id}")
    lines.append(rule)
    return "\n".join(lines)
