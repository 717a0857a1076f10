"""A sweep with damaged job files: every sweep tool lists them, reports the good jobs, and exits 0 (1 with
--strict, 2 when no job is readable), never with a traceback."""

from __future__ import annotations

import csv
import json
import os
import statistics

import pytest
from conftest import run_cli
from sweeps.test_aggregate import make_job  # tests/ is on the path: works from any test folder

from bloodseg.aggregate import main as aggregate
from bloodseg.sweep_report import main as sweep_report

GOOD = [("0.01", 1, 0.70), ("0.01", 2, 0.74), ("0.001", 1, 0.80), ("0.001", 2, 0.84)]
# job number: (the damaged file, its content, the reason the tools must give); each of these jobs has a
# metrics.json of mean IoU 0.99 in the lr 0.001 configuration unless that is the damaged file, so a job
# that leaked into the ranking or a mean would change the numbers checked below
DAMAGED = {
    4: ("metrics.json", '{"dataset": {"mean_iou": 0.9', "invalid JSON (truncated?): Expecting"),
    5: ("metrics.json", "", "empty file"),
    6: ("metrics.json", "[0.99, 0.98]", "a list, not a JSON object"),
    7: ("metrics.json", '{"classes": {}, "num_images": 3}', 'no "dataset" key'),
    8: ("job_status.json", '{"status": "compl', "invalid JSON (truncated?): Unterminated string"),
    9: ("job_status.json", '{"status": 3}', '"status" is a number, not text'),
    10: (".hydra/overrides.yaml", "[optimizer.lr=0.001, seed=9\n", "invalid YAML: expected ',' or ']'"),
    11: (".hydra/overrides.yaml", "optimizer.lr: 0.001\n", "a mapping, not a YAML list"),
}


def damage(root, num: int) -> None:
    """Job ``num`` of the lr 0.001 configuration (seed num) with its file of DAMAGED written over."""
    make_job(root, num, ["experiment=segnet_vgg16", "optimizer.lr=0.001", f"seed={num}"], 0.99)
    name, content, _ = DAMAGED[num]
    (root / str(num) / name).write_text(content)


def damaged_sweep(root):
    """The four good jobs of GOOD (jobs 0-3, two seeds per lr) and one job per kind of damage."""
    for num, (lr, seed, iou) in enumerate(GOOD):
        make_job(root, num, ["experiment=segnet_vgg16", f"optimizer.lr={lr}", f"seed={seed}"], iou)
    for num in DAMAGED:
        damage(root, num)
    return root


def problems(root) -> list[tuple[int, str]]:
    """What every tool must say of each damaged job (job number, line): the job, the file with its path,
    the reason (the start of it: the parser's position follows)."""
    return [
        (num, f"job {num}: {name.rsplit('/', 1)[-1]} unreadable: {root / str(num) / name}: {reason}")
        for num, (name, _, reason) in DAMAGED.items()
    ]


def expected_lines(root) -> list[str]:
    return [line for _, line in problems(root)]


@pytest.fixture
def sweep(tmp_path):
    return damaged_sweep(tmp_path / "sweep")


def assert_lists_the_damage(text: str, root) -> None:
    for line in expected_lines(root):
        assert line in text, line


def test_sweep_report_ranks_the_good_jobs_and_lists_each_damaged_file(sweep, capsys):
    assert sweep_report([str(sweep)]) == 0
    out, err = capsys.readouterr()
    with open(sweep / "sweep_summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 + len(DAMAGED)  # every job has a row, the unreadable ones last
    good, bad = rows[:4], rows[4:]
    assert [(r["optimizer.lr"], r["seed"], r["mean_iou"], r["status"]) for r in good] == [
        ("0.001", "2", "0.84000", "completed"),
        ("0.001", "1", "0.80000", "completed"),
        ("0.01", "2", "0.74000", "completed"),
        ("0.01", "1", "0.70000", "completed"),
    ]
    assert all(r["mean_iou"] == "" for r in bad)  # no number of a damaged job is used
    statuses = {row["job_dir"]: row["status"] for row in bad}
    assert set(statuses) == {str(sweep / str(num)) for num in DAMAGED}
    for num, line in problems(sweep):  # the status cell: the file, its path, the reason
        assert statuses[str(sweep / str(num))].startswith(line.split(": ", 1)[1]), line
    md = (sweep / "sweep_summary.md").read_text()
    assert f"4 of {4 + len(DAMAGED)} jobs read; {len(DAMAGED)} unreadable" in md
    assert "## Unreadable jobs (left out of the ranking)" in md
    assert "| 0.001 | 2 | 0.90000 | 0.80000 | 0.84000 |" in md  # best first: the good job, not a 0.99
    assert_lists_the_damage(md, sweep)
    assert md.strip() in out  # the console shows the summary
    assert_lists_the_damage(err, sweep)  # and stderr each damaged file
    assert "--strict would make this exit status 1" in err
    assert "Traceback" not in out + err


def test_strict_exits_1_after_writing_every_summary(sweep, capsys):
    assert sweep_report([str(sweep), "--strict"]) == 1
    assert "0.84000" in (sweep / "sweep_summary.csv").read_text()
    assert "(--strict: exit status 1)" in capsys.readouterr().err
    out, md = sweep / "results.json", sweep / "tables.md"
    assert aggregate([str(sweep), f"out={out}", f"md={md}", "--strict"]) == 1
    assert json.loads(out.read_text())["jobs_read"] == 4 and "0.820 ± 0.028" in md.read_text()


def test_aggregate_means_are_over_the_readable_jobs_only(sweep, capsys):
    out, md = sweep / "results.json", sweep / "tables.md"
    assert aggregate([str(sweep), "--out", str(out), "--md", str(md)]) == 0
    stdout, err = capsys.readouterr()
    results = json.loads(out.read_text())
    assert (results["jobs_total"], results["jobs_read"]) == (4 + len(DAMAGED), 4)
    listed = {j["job"]: j["problems"] for j in results["unreadable"]}
    assert set(listed) == {str(sweep / str(num)) for num in DAMAGED}
    for num, line in problems(sweep):
        (problem,) = listed[str(sweep / str(num))]
        assert problem.startswith(line.split(": ", 1)[1]), line
    runs = {tuple(r["overrides"]): r for r in results["runs"]}
    assert len(runs) == 2  # the job with unreadable overrides made no configuration of its own
    best = runs[("experiment=segnet_vgg16", "optimizer.lr=0.001")]
    assert best["seeds"] == [1, 2] and best["num_jobs"] == 2 and best["failed_jobs"] == 0
    assert best["dataset"]["mean_iou"] == statistics.fmean([0.80, 0.84])
    assert best["dataset_std"]["mean_iou"] == statistics.stdev([0.80, 0.84])
    other = runs[("experiment=segnet_vgg16", "optimizer.lr=0.01")]
    assert other["dataset"]["mean_iou"] == statistics.fmean([0.70, 0.74])
    assert results["best"]["command"].endswith("optimizer.lr=0.001 seed=1,2")
    text = md.read_text()
    assert text.startswith(f"**4 of {4 + len(DAMAGED)} jobs read**; {len(DAMAGED)} unreadable")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert "optimizer.lr=0.001" in rows[0] and "| n=2 |" in rows[0] and "| 0.820 ± 0.028 |" in rows[0]
    assert "optimizer.lr=0.01" in rows[1] and "| 0.720 ± 0.028 |" in rows[1]
    assert_lists_the_damage(text, sweep)
    assert f"2 configurations from 4 of {4 + len(DAMAGED)} jobs read" in stdout
    assert_lists_the_damage(err, sweep)
    assert "Traceback" not in stdout + err


def test_no_readable_job_is_one_line_and_writes_nothing(tmp_path, capsys):
    from bloodseg.report import main as report

    root = tmp_path / "sweep"
    for num in (4, 8):
        damage(root, num)
    before = sorted(p.name for p in root.iterdir())
    first = expected_lines(root)[0]
    runs = {
        "sweep_report": lambda: sweep_report([str(root), "--strict"]),
        "aggregate": lambda: aggregate([str(root), f"out={root / 'results.json'}", f"md={root / 't.md'}"]),
        "report": lambda: report([str(root)]),
    }
    for tool, run in runs.items():
        status = run()
        err = capsys.readouterr().err
        assert status == 2, tool
        assert err.count("\n") == 1 and err.startswith("error: none of the 2 jobs under"), (tool, err)
        assert first in err, (tool, err)
    assert sorted(p.name for p in root.iterdir()) == before  # no summary, results, tables or page


def test_every_summary_is_written_all_or_nothing(sweep, monkeypatch):
    """Each file goes through a staged file and one rename (bloodseg.files), none left behind."""
    from bloodseg.report import main as report

    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (renamed.append(os.fspath(dst)), real_replace(src, dst))
    )
    assert sweep_report([str(sweep)]) == 0
    assert aggregate([str(sweep), f"out={sweep / 'r.json'}", f"md={sweep / 't.md'}"]) == 0
    assert report([str(sweep)]) == 0
    names = ["sweep_summary.csv", "sweep_summary.md", "sweep_heatmap.png", "r.json", "t.md", "report.html"]
    assert sorted(renamed) == sorted(str(sweep / name) for name in names)
    assert not list(sweep.rglob("*.partial"))


def test_a_real_process_lists_the_damage_without_a_traceback(sweep):
    result = run_cli("bloodseg.sweep_report", str(sweep))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "0.84000" in result.stdout
    assert all(line.startswith("warning: ") for line in result.stderr.splitlines()), result.stderr
    assert_lists_the_damage(result.stderr, sweep)
    strict = run_cli("bloodseg.sweep_report", str(sweep), "--strict")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert strict.stderr.splitlines()[-1].startswith(f"error: {len(DAMAGED)} of {4 + len(DAMAGED)} jobs")
    assert "0.84000" in (sweep / "sweep_summary.csv").read_text()
