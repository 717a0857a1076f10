"""The HTML report of a run or a sweep: gathers what the run directories hold and renders
``templates/report.html.j2`` (Jinja2, shipped with the package).

A run's report: a failure banner when it failed, training curves (summary and per class, every split,
from csv/metrics.csv), Tables 1 and 2 and the per-image metrics, the paper's Figures 4 to 7, the full
config, and where the files and the W&B run are. A sweep's report: one table of jobs (the varying
overrides, every dataset metric, a link to each job's section), parallel coordinates of the swept keys
against the score, the heatmap (two swept keys) or a sorted dot chart with error bars (one key), small
multiples of every job's curves, then each job's own section. Every figure is an embedded PNG and the
style sheet is inline: the file opens in any browser without a network. A damaged job file is named in
the page (see sweep_section / run_section) and returned by render_checked; the page is written all or
nothing (bloodseg.files).
"""

import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from bloodseg.files import write_text_atomically
from bloodseg.html_report.run_section import run_context
from bloodseg.html_report.sweep_section import sweep_context
from bloodseg.sweeps.results import is_multirun_dir

TEMPLATES = Path(__file__).parent / "templates"


def no_url(value: Any) -> Markup:
    """Every value written by the template: HTML-escaped, "://" as character references (no URL in the file)."""
    return Markup(str(escape("" if value is None else value)).replace("://", ":&#47;&#47;"))


def environment() -> Environment:
    """The Jinja2 environment of the report templates (autoescaped)."""
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html", "j2"]),
        finalize=no_url,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# ---- the document -------------------------------------------------------------------------------------
def render_checked(path: Path) -> tuple[str, list[str], int | None]:
    """The report of a run directory or multirun directory as one HTML document, with one line per
    unreadable job (or the run's damaged files) and how many jobs there are (None for a run). Raises
    FileNotFoundError for something else and NoReadableJob for a sweep of which no job could be read."""
    path = Path(path)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    template = environment().get_template("report.html.j2")
    if is_multirun_dir(path):
        sweep = sweep_context(path)
        document = template.render(
            kind="sweep", path=str(path.resolve()), name=path.name, stamp=stamp, sweep=sweep, run=None
        )
        return document, sweep["unreadable"], sweep["counts"]["jobs"]
    if not any((path / name).exists() for name in ("metrics.json", "csv", ".hydra")):
        raise FileNotFoundError(f"{path} is neither a bloodseg run directory nor a multirun directory")
    run = run_context(path, "run", path.name)
    document = template.render(
        kind="run", path=str(path.resolve()), name=path.name, stamp=stamp, sweep=None, run=run
    )
    return document, [f"run {path.name}: {'; '.join(run['unreadable'])}"] if run["unreadable"] else [], None


def render(path: Path) -> str:
    """The report of a run directory or multirun directory, as one HTML document."""
    return render_checked(path)[0]


def write_report_checked(path: Path, out: Path | None = None) -> tuple[Path, list[str], int | None]:
    """Write report.html (default: inside ``path``) all or nothing; return its path, the unreadable lines
    and the number of jobs (render_checked)."""
    out = Path(out) if out else Path(path) / "report.html"
    document, unreadable, total = render_checked(Path(path))
    write_text_atomically(out, document)
    return out, unreadable, total


def write_report(path: Path, out: Path | None = None) -> Path:
    """Write report.html (default: inside ``path``) and return its path."""
    return write_report_checked(path, out)[0]
