"""The CSV metrics log (csv/metrics.csv) of a run, written through at every row and kept across resumes.

Lightning's CSVLogger buffers rows (100 steps) and deletes an existing metrics.csv when a run
starts again in the same folder, so a resumed run would hold only the rows logged after the resume
and a killed one lost its buffered rows. Here every row reaches the file when it is logged, and a
resumed run keeps the rows of the steps its checkpoint covers (step < the checkpoint's global step)
and appends after them: each step and epoch appears exactly once.

:func:`read_curves` reads the per-epoch history back from csv/metrics.csv.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from bloodseg.files import atomic_text


def keep_rows_before(metrics_file: Path, step: int) -> list[str]:
    """Cut metrics_file to its rows with step < ``step`` (rewritten beside it, then swapped in); the header."""
    with open(metrics_file, newline="") as handle:
        reader = csv.DictReader(handle)
        header = sorted(reader.fieldnames or [])
        rows = [row for row in reader if row.get("step") not in (None, "") and int(float(row["step"])) < step]
    with atomic_text(metrics_file) as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return header


class _ResumedWriter(ExperimentWriter):
    """Lightning's CSV writer, which on a resume keeps the earlier rows instead of deleting the file."""

    def __init__(self, log_dir: str, keep_before_step: int | None):
        self.keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        existing = Path(self.metrics_file_path)
        if self.keep_before_step is None or not existing.is_file():
            super()._check_log_dir_exists()
            return
        self.metrics_keys = keep_rows_before(existing, self.keep_before_step)


class ResumableCSVLogger(CSVLogger):
    """CSVLogger writing every row at once; with ``keep_before_step`` (a resume) it continues the old file."""

    def __init__(self, *args, keep_before_step: int | None = None, **kwargs):
        super().__init__(*args, flush_logs_every_n_steps=1, **kwargs)
        self._keep_before_step = keep_before_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer, created on first use (which is when an old file is cut back)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumedWriter(self.log_dir, self._keep_before_step)
        return self._experiment


Series = dict[str, list[tuple[float, float]]]


def read_curves(run_dir: Path) -> Series:
    """Per-epoch series of csv/metrics.csv: {key: [(epoch, value), ...]} (the learning rate included,
    step-wise rows left out); empty when the run has no csv/metrics.csv."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    series: Series = {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        epoch = row.get("epoch") or ""
        for key, text in row.items():
            if key in ("epoch", "step") or key is None or text in ("", None):
                continue
            try:
                value = float(text)
            except ValueError:
                continue
            if key.startswith("lr-"):  # LearningRateMonitor rows carry a step, no epoch: one per epoch
                series.setdefault(key, []).append((float(len(series.get(key, []))), value))
            elif epoch != "" and not key.endswith("_step"):
                series.setdefault(key, []).append((float(epoch), value))
    return {key: sorted(points) for key, points in series.items()}


def class_names_of(series: Series) -> list[str]:
    """The class names of the per-class series (``<split>/iou/<class>``), in first-seen order."""
    names: list[str] = []
    for key in series:
        parts = key.split("/")
        if len(parts) == 3 and parts[2] not in names:
            names.append(parts[2])
    return names
