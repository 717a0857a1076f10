"""Package structure: no bloodseg module imports an entry-point module (a ``python -m bloodseg.X`` tool)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "bloodseg"


# library modules that also offer a command (bloodseg-download, bloodseg-weights): imported on purpose
LIBRARIES_WITH_A_COMMAND = {"bloodseg.data.download", "bloodseg.models.weights"}


def entry_points() -> set[str]:
    """The tools (``python -m bloodseg.X``): console scripts of pyproject.toml and modules with a __main__
    block, less the library modules that merely offer a command too."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    found = {target.split(":")[0] for target in scripts.values()}
    for path in PACKAGE.rglob("*.py"):
        if '__name__ == "__main__"' in path.read_text():
            found.add(module_name(path))
    return found - LIBRARIES_WITH_A_COMMAND


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement of the file names (top level and inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def test_the_entry_points_are_found():
    assert {
        "bloodseg.train",
        "bloodseg.report",
        "bloodseg.sweep_report",
        "bloodseg.aggregate",
    } <= entry_points()


def test_no_module_imports_an_entry_point():
    tools = entry_points()
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = module_name(path)
        for name in sorted(imported_modules(path) & tools - {own}):
            offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "entry points used as libraries (move the shared code into a library module):\n" + (
        "\n".join(offenders)
    )
