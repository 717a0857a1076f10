"""``python -m bloodseg.report``: one self-contained HTML file for a run and for a sweep."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, run_tool
from test_wandb import run_smoke_sweep, wandb_sandbox  # noqa: F401  (W&B caches in a temp dir)

from bloodseg.html_report.page import write_report

RUN_SECTIONS = {"curves", "metrics", "figure4", "figure5", "confusion", "overlays", "config", "files"}
SWEEP_SECTIONS = {"sweep", "comparison", "sweep-curves", "job-0", "job-1"}
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What the checks need from a report: section ids, images, links, tags, and every attribute value."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.attributes: list[str] = []
        self.sections: list[str] = []
        self.open_section: str | None = None
        self.section_images: dict[str, int] = {}
        self.classes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.attributes += [v for v in attrs.values() if v]
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "section":
            self.sections.append(attrs.get("id"))
            self.open_section = attrs.get("id")
        if tag == "img":
            self.images.append(attrs)
            self.section_images[self.open_section] = self.section_images.get(self.open_section, 0) + 1
        if tag in ("a", "link") and "href" in attrs:
            self.links.append(attrs["href"])
        if attrs.get("class"):
            self.classes.append(attrs["class"])

    def handle_data(self, data):
        self.text.append(data)


def parse_report(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    page.close()
    return text, page


def assert_self_contained(text: str, page: Page) -> None:
    """No network: no URL anywhere in the source, images embedded as PNG data URIs, no scripts/styles fetched."""
    assert "http://" not in text and "https://" not in text
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    for value in page.attributes:
        assert not value.startswith("//") and "://" not in value, value
    assert all(link.startswith("#") for link in page.links), page.links
    assert {link[1:] for link in page.links} <= set(page.ids)  # every link lands on a section of the file
    assert page.images
    for image in page.images:
        src = image["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)


def table_rows(html: str) -> list[list[str]]:
    """The cells of every row of the first HTML table in ``html``, tags stripped."""
    table = html[: html.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    return [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, re.S)]
        for r in rows
    ]


def assert_tables_show(text: str, metrics: dict) -> None:
    """The page's Tables 1 and 2 hold metrics.json's numbers (to their 5 printed decimals), every one."""

    def same(cell: str, value) -> bool:
        return cell == "n/a" if value is None else abs(float(cell) - value) <= 5e-6

    table1 = {row[0]: row[1] for row in table_rows(text[text.index("Table 1. Semantic") :])[1:]}
    keys = ["global_accuracy", "mean_accuracy", "mean_iou", "weighted_iou", "mean_bf_score", "mean_dice"]
    shown = list(table1.values())
    assert len(shown) == len(keys)
    assert all(same(cell, metrics["dataset"][key]) for cell, key in zip(shown, keys, strict=True)), table1
    table2 = {row[0]: row[1:] for row in table_rows(text[text.index("Table 2. Class") :])[1:]}
    assert list(table2) == list(metrics["classes"])
    for name, cells in table2.items():  # columns as the paper's Table 2, then Dice
        values = [metrics["classes"][name][key] for key in ("accuracy", "iou", "dice", "mean_bf_score")]
        assert len(cells) == len(values) and all(map(same, cells, values)), (name, cells, values)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return run_smoke_sweep(tmp_path_factory)


@pytest.mark.slow
def test_report_of_a_run(smoke_run):
    run_dir, _ = smoke_run
    result = run_cli("bloodseg.report", str(run_dir))  # a real process
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir / "report.html"
    assert result.stdout.strip() == str(out)
    text, page = parse_report(out)
    assert_self_contained(text, page)
    assert RUN_SECTIONS <= set(page.sections), page.sections
    # summary curves and the per-class panel; Figures 4 to 7, each from its PNG in the run directory
    assert page.section_images.get("curves") == 2 and "Per-class curves" in text
    assert {img["alt"] for img in page.images} >= {
        "training curves",
        "per-class curves",
        "Figure 4",
        "Figure 5",
    }
    assert page.section_images.get("figure4") == 1 and page.section_images.get("figure5") == 1
    assert page.section_images.get("confusion") == 1  # Figure 6
    # Figure 7: best and worst test image, then per cell class the image showing it best
    class_overlays = sorted(p.stem.split("_")[1] for p in run_dir.glob("overlay_*.png"))
    assert {"best", "worst"} < set(class_overlays) and any(k.endswith("1") for k in class_overlays)
    assert page.section_images.get("overlays") == len(class_overlays)
    assert (run_dir / "figure4_ground_truth.png").is_file() and (
        run_dir / "figure5_class_pixels.png"
    ).is_file()
    for words in (
        "Figure 4. Ground truth",
        "Figure 5. Labelled pixels",
        "Figure 6. Normalised confusion",
        "Figure 7. Best and worst",
        "Per-class IoU: background",
        "rbc test image",
    ):
        assert words in text, words
    # a colour legend under every Figure 7 overlay: one swatch per class and "unlabelled" (Figure 4 draws
    # its own, with the hatching that marks unlabelled pixels)
    legends = text.count('<div class="legend">')
    assert legends == len(class_overlays)
    assert text.count("unlabelled (image shows through)") == legends and text.count(">wbc</span>") == legends
    for words in ("Table 1. Semantic segmentation metrics", "Table 2. Class metrics", "Mean BF Score", "wbc"):
        assert words in text
    assert_tables_show(text, json.loads((run_dir / "metrics.json").read_text()))
    assert "Dice" in text and "Rules: evaluation.semantics=matlab_current" in text
    assert "Full config (.hydra/config.yaml)" in text and "class_weighting: median_frequency" in text
    assert "wandb sync" in text and "wandb leet" in text  # how to view and upload the offline W&B run
    assert "banner" not in page.classes  # it did not fail


@pytest.mark.slow
def test_report_of_a_sweep(sweep, tmp_path):
    out = tmp_path / "sweep.html"
    result = run_tool("bloodseg.report", str(sweep), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    text, page = parse_report(out)
    assert_self_contained(text, page)
    assert SWEEP_SECTIONS <= set(page.sections), page.sections
    assert page.sections[:3] == ["sweep", "comparison", "sweep-curves"]
    for job in ("0", "1"):  # one table row per job, linked to that job's own section
        assert f'<td class="l"><a href="#job-{job}">{job}</a></td>' in text
        assert f"#job-{job}" in page.links and f"job-{job}" in page.sections
    alts = [img["alt"] for img in page.images]
    assert "parallel coordinates" in alts and "dot chart seed" in alts  # one key: dot chart, no heatmap
    assert "curves of every job" in alts and alts.count("per-class curves") == 2  # every job's panel
    assert "Varying: seed." in text and "wandb leet" in text


@pytest.mark.slow
def test_two_swept_keys_get_the_sweep_heatmap_and_failed_jobs_a_banner(sweep, tmp_path):
    """The same sweep with a second key varying between its jobs and one job failed."""
    grid = tmp_path / "grid"
    shutil.copytree(sweep, grid, ignore=shutil.ignore_patterns("*.ckpt", "wandb"))
    for job, lr, weighting in (("0", "0.01", "none"), ("1", "0.001", "median_frequency")):
        path = grid / job / ".hydra" / "overrides.yaml"
        added = [f"optimizer.lr={lr}", f"loss.class_weighting={weighting}"]
        path.write_text(yaml.safe_dump([*yaml.safe_load(path.read_text()), *added]))
    text, page = parse_report(write_report(grid))
    assert_self_contained(text, page)
    assert [img["alt"] for img in page.images].count("sweep heatmap") == 1
    (grid / "1" / "metrics.json").unlink()
    (grid / "1" / "job_status.json").write_text(
        '{"status": "failed", "error": "RuntimeError: diverged <nan>"}'
    )
    text, page = parse_report(write_report(grid))
    assert "banner" in page.classes and "1 of 2 jobs failed, are incomplete or unreadable" in text
    assert "RuntimeError: diverged &lt;nan&gt;" in text and "This job failed" in text


def test_report_of_something_else_fails_cleanly(tmp_path):
    result = run_tool("bloodseg.report", str(tmp_path))
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr


def test_report_of_a_failed_run_shows_the_failure(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "job_status.json").write_text(
        '{"status": "failed", "error": "MisconfigurationException: logged <twice>", "traceback": "line 1"}'
    )
    text, page = parse_report(write_report(run_dir))
    assert "banner" in page.classes  # the failure is the first thing on the page
    assert "This run failed" in text and "MisconfigurationException: logged &lt;twice&gt;" in text
    assert "No metrics.json" not in text


def test_a_loss_spanning_decades_gets_a_log_axis_and_curves_render_without_a_validation_split():
    from bloodseg.viz.curves import per_class_curves_png, spans_decades, summary_curves_png

    assert (
        spans_decades([590.0, 3.1, 1.2]) and not spans_decades([3.1, 1.2]) and not spans_decades([0.0, 5.0])
    )
    series = {
        "train/loss_epoch": [(0.0, 4.0), (1.0, 1.0)],
        "test/loss": [(2.0, 590.0)],  # a diverged test loss
        "train/iou/wbc": [(0.0, 0.1), (1.0, 0.2)],
        "test/iou/wbc": [(2.0, 0.3)],
    }
    assert summary_curves_png(series).startswith(PNG) and per_class_curves_png(series).startswith(PNG)
    assert per_class_curves_png({"train/loss_epoch": [(0.0, 1.0)]}) is None  # no per-class series


def test_seeds_become_error_bars_of_the_other_key(tmp_path):
    """lr x seed: one dot chart over lr with the seeds as error bars, no lr x seed heatmap."""
    from test_aggregate import make_job

    for num, (lr, seed, iou) in enumerate([("0.01", 1, 0.70), ("0.01", 2, 0.74), ("0.001", 1, 0.80)]):
        make_job(tmp_path, num, ["experiment=segnet_vgg16", f"optimizer.lr={lr}", f"seed={seed}"], iou)
    text, page = parse_report(write_report(tmp_path))
    assert_self_contained(text, page)
    alts = [img["alt"] for img in page.images]
    assert "dot chart optimizer.lr" in alts and "sweep heatmap" not in alts and "parallel coordinates" in alts
    for job in ("0", "1", "2"):
        assert f'<a href="#job-{job}">{job}</a>' in text and f"job-{job}" in page.sections


def test_a_sweep_with_damaged_job_files_reports_the_good_jobs_and_names_each_file(tmp_path, capsys):
    """One damaged file of each kind (tests/sweeps/test_unreadable_jobs.py): the page ranks the good jobs,
    names every damaged file in the banner, the table and the job's section; --strict exits 1."""
    from sweeps.test_unreadable_jobs import DAMAGED, damaged_sweep, expected_lines

    from bloodseg.report import main as report

    sweep = damaged_sweep(tmp_path / "sweep")
    assert report([str(sweep)]) == 0
    err = capsys.readouterr().err
    text, page = parse_report(sweep / "report.html")
    assert_self_contained(text, page)  # the unreadable jobs' rows link to their own sections too
    words = "".join(page.text)
    total = 4 + len(DAMAGED)
    assert f"{len(DAMAGED)} of {total} jobs failed, are incomplete or unreadable" in words
    assert f"4 of {total} jobs read; {len(DAMAGED)} unreadable" in words
    for line in expected_lines(sweep):
        number, problem = line.split(": ", 1)
        assert f"{number}: {problem}" in words, line  # the banner
        assert words.count(problem) == 3, line  # the banner, its table row and its section's banner
        assert line in err
    assert f"job-{next(iter(DAMAGED))}" in page.sections
    rows = [row for row in text.split("<tr") if 'href="#job-' in row and "<td>" in row]
    assert 'href="#job-3"' in rows[0] and "<td>0.84000</td>" in rows[0]  # best: the good job, not a 0.99
    assert [r for r in rows if "<td>0.99000</td>" in r] == []  # no damaged job's number is shown
    assert "Traceback" not in err
    assert report([str(sweep), "--strict", f"out={tmp_path / 'strict.html'}"]) == 1
    assert "0.84000" in (tmp_path / "strict.html").read_text()


def test_report_of_a_run_with_a_damaged_metrics_json_names_it(tmp_path, capsys):
    from bloodseg.report import main as report

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(
        '[{"dataset": {}}]'
    )  # a list: used to stop the report with a TypeError
    assert report([str(run_dir)]) == 0
    text, page = parse_report(run_dir / "report.html")
    assert "banner" in page.classes and "This run has a damaged file" in text
    assert f"metrics.json unreadable: {run_dir / 'metrics.json'}: a list, not a JSON object" in "".join(
        page.text
    )
    assert "a list, not a JSON object" in capsys.readouterr().err
    assert report([str(run_dir), "--strict"]) == 1
