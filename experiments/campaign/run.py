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


def time_limit(step: dict, budget: Budget) -> list[str]:
    """For a step with ``fill_budget: S``: ``trainer.max_time`` set to the budget left minus S seconds, so
    training stops by itself and the test split is still scored; nothing without a budget."""
    left = budget.left_s()
    if "fill_budget" not in step or left is None:
        return []
    seconds = int(left - float(step["fill_budget"]))
    if seconds < 30:
        raise OutOfBudget
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return [f"trainer.max_time='00:{hours:02d}:{minutes:02d}:{secs:02d}'"]


def train_step(step: dict, out: Path, python: str, budget: Budget, common: list[str]) -> None:
    """The step's multirun (resumed job by job), its native-size scores, and its aggregated results."""
    sweep = out / step["name"]
    run(
        [
            python,
            "-m",
            "bloodseg.train",
            "-m",
            *step["args"],
            *common,
            *time_limit(step, budget),
            f"hydra.sweep.dir={sweep}",
        ],
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


CARRY = {  # what a device call carries beside the working tree, and how to make it (README, "offline GPU host")
    ".whl": "mkdir -p .whl && cp ../shared/wheels-gpu/*.whl .whl/",
    ".data": "mkdir -p .data && cp -r ../shared/data/cellavision_wbc .data/",
    ".campaign": "mkdir -p .campaign",
}
CARRY_LIMIT = 64 * 2**20  # bytes the device tool carries (working tree and carried paths together)
COMMAND_LIMIT = 2000  # characters of one device command


def device_command(profile: str, budget_minutes: float) -> str:
    """The one shell line a device call runs: install the carried wheels beside the host's torch, run the
    profile within the budget into /tmp/campaign (resumed from the carried .campaign state), return
    results, logs, the state and nvidia-smi's record through $OUT."""
    return (
        "nvidia-smi > $OUT/nvidia-smi.txt 2>&1; "
        "python3 -m pip install -q --upgrade --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl"
        " && export PYTHONPATH=$PWD:/tmp/site CELLAVISION_ROOT=$PWD/.data/cellavision_wbc"
        " && mkdir -p /tmp/campaign && cp -r .campaign/. /tmp/campaign/"
        f" && python3 experiments/campaign/run.py {profile} /tmp/campaign --python python3"
        f" --budget-minutes {budget_minutes:g} --save-state $OUT/state;"
        " cp -r /tmp/campaign/results $OUT/ 2>/dev/null; cp /tmp/campaign/*.log $OUT/ 2>/dev/null; true"
    )


def tree_bytes(path: Path) -> int:
    """Bytes of the files under path (or of the file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def working_tree_bytes() -> int:
    """Bytes of the files git would send: tracked, and untracked ones it does not ignore."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sum(
        (ROOT / name).stat().st_size for name in listing.split("\0") if name and (ROOT / name).is_file()
    )


def dry_run(profile: str, budget_minutes: float) -> int:
    """Print the exact device call (command, carry list, timeout) and the bytes it carries; exit 1 with
    what to fix when a carried folder is missing, the total is over the limit or the command too long."""
    command = device_command(profile, budget_minutes)
    problems = []
    sizes = {}
    for name, make in CARRY.items():
        path = ROOT / name
        if not path.exists():
            problems.append(f"{name} is missing; make it: {make}")
        sizes[name] = tree_bytes(path) if path.exists() else 0
    ignored = subprocess.run(["git", "check-ignore", *CARRY], cwd=ROOT, capture_output=True, text=True).stdout
    for name in CARRY:
        if name not in ignored.split():
            exclude = subprocess.run(
                ["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
            problems.append(
                f"{name} is not ignored by git (it would travel twice); fix: echo /{name}/ >> {exclude}"
            )
    tree = working_tree_bytes() - sum(sizes[n] for n in CARRY if n not in ignored.split())
    total = tree + sum(sizes.values())
    if total > CARRY_LIMIT:
        problems.append(f"{total / 2**20:.1f} MiB to carry, over the {CARRY_LIMIT / 2**20:.0f} MiB limit")
    if len(command) > COMMAND_LIMIT:
        problems.append(f"the command has {len(command)} characters, over {COMMAND_LIMIT}")
    timeout = int(60 * budget_minutes) + 90  # the install and the copies back
    print(json.dumps({"command": command, "carry": list(CARRY), "timeout_s": timeout}, indent=2))
    print(
        f"working tree {tree / 2**20:.1f} MiB + "
        + " + ".join(f"{n} {b / 2**20:.1f} MiB" for n, b in sizes.items())
    )
    print(
        f"total {total / 2**20:.1f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB; command {len(command)} of {COMMAND_LIMIT} characters"
    )
    for problem in problems:
        print(f"problem: {problem}")
    print(
        "ready: pass the command, carry and timeout_s above to the device tool"
        if not problems
        else "not ready"
    )
    return 1 if problems else 0


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
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the device call that runs this profile (command, carry list, sizes) and check it; runs nothing",
    )
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    if args.dry_run:
        return dry_run(args.profile, args.budget_minutes or 7.5)
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
