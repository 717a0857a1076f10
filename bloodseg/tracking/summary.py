"""The one-screen end-of-run block printed by the train command: Tables 1 and 2, the files, the W&B run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bloodseg.tracking.wandb_run import WandbRunInfo


def run_summary(metrics: dict[str, Any] | None, run_dir: Path, wandb_info: WandbRunInfo | None = None) -> str:
    """The end-of-run block: Tables 1 and 2 of the test split, the run directory and the W&B run."""
    from bloodseg.metrics.tables import paper_tables

    rule = "=" * 78
    lines = [rule, "bloodseg: run finished", rule]
    if metrics is not None:
        lines += [paper_tables(metrics, "test split"), ""]
    else:
        lines += ["(no test evaluation: test_after_fit=false or an empty test split)", ""]
    run_dir = Path(run_dir).resolve()
    lines.append(f"Run directory : {run_dir}")
    lines.append("                metrics.json, metrics.md, csv/metrics.csv, the paper's Figures 4-7 as PNG")
    lines.append(f"HTML report   : python -m bloodseg.report {run_dir}")
    if wandb_info is None:
        lines.append(
            "W&B           : not used (logger=csv, mode disabled, or it could not start: see the warnings)"
        )
    elif wandb_info.mode == "offline":
        lines.append(f"W&B offline   : {wandb_info.directory}")
        lines.append(f"                view here:    wandb leet {wandb_info.directory}")
        lines.append(f"                upload later: wandb sync {wandb_info.directory}")
    else:
        lines.append(f"W&B           : {wandb_info.url or wandb_info.run_id}")
    lines.append(rule)
    return "\n".join(lines)
