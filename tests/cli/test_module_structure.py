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


# The package's layers, bottom first: a module may import its own package and the layers below it,
# never a layer above nor another package of its own layer (data, models and metrics are independent).
LAYERS = [
    {"errors", "constants", "termination"},
    {"files"},
    {"config", "extras", "cli"},
    {"data", "models", "metrics"},
    {"tracking"},
    {"viz"},
    {"evaluation"},
    {"sweeps"},
    {"training"},
    {"inference"},
    {"html_report"},
]


def room(module: str) -> str:
    """The package (or top-level plumbing module) a bloodseg module belongs to."""
    return module.split(".")[1] if module.count(".") >= 1 else module


def layer_of(module: str) -> int | None:
    return next((i for i, names in enumerate(LAYERS) if room(module) in names), None)


def library_modules() -> dict[str, Path]:
    tools = entry_points()
    return {
        module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if module_name(path) not in tools and module_name(path) != "bloodseg"
    }


def bloodseg_imports(path: Path, known: set[str]) -> set[str]:
    """The bloodseg modules (not names inside them) that a file imports."""
    return {name for name in imported_modules(path) if name in known}


def test_every_library_module_has_a_layer():
    assert not [m for m in library_modules() if layer_of(m) is None]


def test_layers_only_import_downwards():
    modules = library_modules()
    known = set(modules) | entry_points()
    offenders = []
    for module, path in modules.items():
        own = layer_of(module)
        for target in sorted(bloodseg_imports(path, known)):
            other = layer_of(target)
            same_room = room(target) == room(module)
            if not same_room and (other is None or other >= own):
                offenders.append(f"{module} imports {target}")
    assert not offenders, "imports against the layer order:\n" + "\n".join(offenders)


def test_models_and_metrics_import_neither_data_nor_training():
    modules = library_modules()
    offenders = [
        f"{module} imports {target}"
        for module, path in modules.items()
        if room(module) in {"models", "metrics"}
        for target in bloodseg_imports(path, set(modules))
        if room(target) in {"data", "training"}
    ]
    assert not offenders


def test_no_import_cycles():
    modules = library_modules()
    graph = {m: bloodseg_imports(p, set(modules)) - {m} for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_subpackage_says_what_lives_there_and_what_it_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc.lower(), f"{init.relative_to(ROOT)}: the docstring must say what it may import"


def test_entry_points_are_thin():
    """A command is its parser and one library call: no classes, a few short functions."""
    fat = []
    for tool in sorted(entry_points() - {"bloodseg.bench"}):  # bench is a measurement script on purpose
        path = ROOT / (tool.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        lines = len(path.read_text().splitlines())
        if classes or lines > 80:
            fat.append(f"{tool}: {lines} lines, classes {classes}")
    assert not fat, "\n".join(fat)


def test_importing_the_package_leaves_matplotlib_alone(tmp_path):
    """Importing every module leaves the user's matplotlib backend as it was (nothing calls matplotlib.use)."""
    import os
    import subprocess
    import sys

    modules = sorted(library_modules()) + sorted(entry_points())
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "import matplotlib; print(matplotlib.get_backend())\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}  # a backend no bloodseg code would choose
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].lower() == "svg"
