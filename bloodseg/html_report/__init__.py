"""The self-contained HTML report of a run or a sweep: view objects read from the run folders, rendered
through one Jinja2 template (templates/report.html.j2).

May import: every library package; never an entry point.
"""
