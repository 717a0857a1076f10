"""The W&B run of a job (``logger=wandb``): offline unless W&B is configured, never fatal.

- ``build_wandb_logger(cfg, run_dir)``: a Lightning ``WandbLogger`` whose W&B run lives in
  ``<run_dir>/wandb``, named and grouped from the Hydra config (bloodseg.tracking.wandb_naming), with the fully
  resolved config under flat keys (``optimizer.lr``) so that W&B's parallel coordinates and group-by
  work on swept keys. A run continued from a checkpoint (``ckpt_path=``, or a resubmitted job's own
  ``last.ckpt``) keeps the W&B run id recorded in that run directory's ``wandb_run_id.txt``.
- ``finish(loggers, run_dir, succeeded)``: records the best validation mean IoU and its epoch in the
  run summary, logs metrics.json and the best checkpoint as artifacts and finishes the W&B run. Called
  at the end of every job, so a multirun's jobs never merge into one run.

The media callback lives in bloodseg.training.wandb_media, the end-of-run console block in bloodseg.tracking.summary.
Whatever goes wrong inside W&B (no network, no key, quota, a full disk) is reported once as a warning;
training goes on with the CSV logger.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from bloodseg.tracking.wandb_naming import (
    flat_config,
    hydra_context,
    resolved_config,
    run_group,
    run_name,
    run_tags,
)

log = logging.getLogger("bloodseg.tracking")

RUN_ID_FILE = "wandb_run_id.txt"
MODES = ("auto", "offline", "online", "disabled")
DEFAULT_BASE_URL = "https://api.wandb.ai"


# ---- mode, resume -------------------------------------------------------------------------
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
        config = flat_config(resolved_config(cfg))
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
            logger.guarded("defining summaries", define_summaries, run)
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


SUMMARIES = {"val/mean_iou": "max", "val/mean_bf_score": "max", "train/mean_iou": "max", "val/loss": "min"}


def define_summaries(run) -> None:
    """Per-epoch charts against ``epoch`` and run summaries: the best (max) validation mean IoU / BF and the
    lowest validation loss, not only the last value (the best epoch is added by ``finish``)."""
    run.define_metric("epoch")
    for key, summary in SUMMARIES.items():
        run.define_metric(key, summary=summary)


def best_epoch_summary(run_dir: Path, key: str = "val/mean_iou") -> dict[str, float]:
    """``{"best/val_mean_iou", "best/epoch"}`` from csv/metrics.csv (empty without that column)."""
    from bloodseg.tracking.csv_log import read_curves

    points = read_curves(run_dir).get(key, [])
    if not points:
        return {}
    epoch, value = max(points, key=lambda point: point[1])
    return {"best/" + key.replace("/", "_"): value, "best/epoch": int(epoch)}


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
        best = best_epoch_summary(Path(run_dir))
        if best:
            logger.guarded("recording the best epoch", run.summary.update, best)
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
