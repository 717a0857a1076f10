#!/usr/bin/env python3
"""Run every owed measurement of one profile, resumably: ``experiments/campaign/run.py PROFILE OUT_DIR``.

A profile (``experiments/campaign/profiles/PROFILE.yaml``) is a list of steps. A ``bench`` step runs
``python -m bloodseg.bench`` once per variant and keeps its JSON lines; a ``train`` step is one
``python -m bloodseg.train -m ...`` multirun into ``OUT_DIR/<step>/`` (the layout `bloodseg.aggregate`
and `bloodseg.sweep_report` read), optionally re-scored at the data's native size by
``python -m bloodseg.evaluate`` into ``OUT_DIR/native/<step>/``. After each step its results are written
to ``OUT_DIR/results/``: ``<step>.json`` and ``<step>.md`` from `bloodseg.aggregate`, ``bench.jsonl``
with one ``machine`` record (host, device, versions, date) before each step's records.

Resumable: a finished step leaves ``OUT_DIR/<step>/.done`` and is skipped; an interrupted one is run
again with the same command, and every training job continues from its own ``last.ckpt``.
``--budget-minutes M`` stops (exit code 3, "re-run the same command to continue") once M minutes have
passed, killing the step in progress, so a device call of fixed length ends cleanly and the next call
carries on. ``--record DIR`` copies ``OUT_DIR/results/`` into DIR (e.g. experiments/campaign/gpu) when
every step is done.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

PROFILES = Path(__file__).resolve().parent / "profiles"
ROOT = Path(__file__).resolve().parents[2]
INCOMPLETE = 3  # exit code: the budget ran out, re-run the same command


class Budget:
    """Wall-clock budget of one call; None means unlimited."""

    def __init__(self, minutes: float | None):
        self.deadline = None if minutes is None else time.monotonic() + 60 * minutes

    def left_s(self) -> float | None:
        """Seconds left, or None when unlimited."""
        return None if self.deadline is None else self.deadline - time.monotonic()


class OutOfBudget(Exception):
    """The budget ran out before the campaign finished."""


def expand(value):
    """Environment variables (``${CELLAVISION_ROOT}``) replaced in every string of a profile."""
    if isinstance(value, str):
        return os.path.expandvars(value)
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    return value


def load_profile(name: str) -> dict:
    """The profile's steps, environment variables expanded; a clear error for an unknown profile."""
    path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise SystemExit(f"error: unknown profile {name!r} (known: {', '.join(known)})")
    os.environ.setdefault("CELLAVISION_ROOT", str(ROOT.parent / "shared" / "data" / "cellavision_wbc"))
    profile = expand(yaml.safe_load(path.read_text()))
    names = [step["name"] for step in profile["steps"]]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: {path} has duplicate step names")
    return profile


def run(command: list[str], log: Path, budget: Budget, stdout: Path | None = None) -> None:
    """Run one command with its output in log (stdout to its own file if given), within the budget."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("+ " + " ".join(command), flush=True)
    with open(log, "a") as err, open(stdout or log, "a") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, start_new_session=True)
        try:
            code = process.wait(timeout=budget.left_s())
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise OutOfBudget from None
    if code != 0:
        raise SystemExit(f"error: step command failed with exit code {code}; its output is in {log}")


def machine_record(python: str) -> dict:
    """Where and with what the following records were measured."""
    probe = (
        "import json,torch,lightning;"
        "print(json.dumps({'torch':torch.__version__,'lightning':lightning.__version__,"
        "'cuda':torch.version.cuda,'device':torch.cuda.get_device_name(0) if torch.cuda.is_available()"
        " else 'cpu','cpu_threads':torch.get_num_threads()}))"
    )
    versions = json.loads(
        subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout
    )
    return {
        "name": "machine",
        "host": platform.node(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **versions,
    }


def bench_step(step: dict, out: Path, python: str, budget: Budget) -> None:
    """Each variant's bench records, after a machine record, appended to results/bench.jsonl."""
    records = out / "results" / "bench.jsonl"
    records.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({**machine_record(python), "step": step["name"]})]
    for number, variant in enumerate(step.get("variants", [[]])):
        raw = out / step["name"] / f"variant{number}.jsonl"
        raw.unlink(missing_ok=True)
        command = [python, "-m", "bloodseg.bench", *step["args"], *variant]
        run(command, raw.with_suffix(".log"), budget, raw)
        for line in raw.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.dumps({**json.loads(line), "overrides": variant}))
    with open(records, "a") as handle:
        handle.write("\n".join(lines) + "\n")


def train_step(step: dict, out: Path, python: str, budget: Budget, common: list[str]) -> None:
    """The step's multirun (resumed job by job), its native-size scores, and its aggregated results."""
    sweep = out / step["name"]
    run(
        [python, "-m", "bloodseg.train", "-m", *step["args"], *common, f"hydra.sweep.dir={sweep}"],
        sweep.with_suffix(".log"),
        budget,
    )
    scored = sweep
    if step.get("native"):
        scored = out / "native" / step["name"]
        for job in sorted(p for p in sweep.iterdir() if (p / "checkpoints" / "last.ckpt").is_file()):
            dest = scored / job.name
            if (dest / "metrics.json").is_file():
                continue
            (dest / ".hydra").mkdir(parents=True, exist_ok=True)
            shutil.copy(job / ".hydra" / "overrides.yaml", dest / ".hydra")
            command = [python, "-m", "bloodseg.evaluate", f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}"]
            command += [*step["native"], f"output_dir={dest}"]
            run(command, scored.with_suffix(".log"), budget)
    results = out / "results"
    run(
        [
            python,
            "-m",
            "bloodseg.aggregate",
            str(scored),
            "--out",
            str(results / f"{step['name']}.json"),
            "--md",
            str(results / f"{step['name']}.md"),
        ],
        results / "aggregate.log",
        budget,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", help="smoke (CPU, minutes), cpu (2 cores, about an hour) or gpu")
    parser.add_argument("out", type=Path, help="output folder (runs, logs, results/); reuse it to resume")
    parser.add_argument("--budget-minutes", type=float, default=None, help="stop cleanly after this long")
    parser.add_argument("--only", nargs="+", default=None, help="run only these steps")
    parser.add_argument(
        "--record", type=Path, default=None, help="copy results/ here once all steps are done"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs bloodseg")
    parser.add_argument(
        "--save-state",
        type=Path,
        default=None,
        help="also copy results/ and the finished-step marks here (small: what a fresh machine needs to resume)",
    )
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    steps = [s for s in profile["steps"] if args.only is None or s["name"] in args.only]
    unknown = set(args.only or []) - {s["name"] for s in profile["steps"]}
    if unknown:
        raise SystemExit(f"error: no step named {', '.join(sorted(unknown))} in profile {args.profile}")
    budget = Budget(args.budget_minutes)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return run_steps(steps, profile, args, budget)
    finally:
        if args.save_state:
            save_state(args.out, args.save_state)


def save_state(out: Path, state: Path) -> None:
    """Copy results/ and every step's .done mark from out to state, keeping their relative paths."""
    for path in [*out.glob("*/.done"), *(out / "results").rglob("*")]:
        if path.is_file():
            (state / path.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, state / path.relative_to(out))


def run_steps(steps: list[dict], profile: dict, args: argparse.Namespace, budget: Budget) -> int:
    """Run the steps not done yet; 0 when all are done, INCOMPLETE when the budget ran out."""
    try:
        for step in steps:
            done = args.out / step["name"] / ".done"
            if done.is_file():
                print(f"= {step['name']}: done earlier", flush=True)
                continue
            if step["kind"] == "bench":
                bench_step(step, args.out, args.python, budget)
            else:
                train_step(step, args.out, args.python, budget, profile.get("common", []))
            done.parent.mkdir(parents=True, exist_ok=True)
            done.touch()
    except OutOfBudget:
        print(f"budget of {args.budget_minutes} min reached: re-run the same command to continue", flush=True)
        return INCOMPLETE
    if args.record:
        shutil.copytree(args.out / "results", args.record, dirs_exist_ok=True)
        print(f"results recorded in {args.record}", flush=True)
    print(f"all {len(steps)} steps done; results in {args.out / 'results'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
