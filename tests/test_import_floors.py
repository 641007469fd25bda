"""The floors below the entry points never import an entry point.

``fastff.hydra_app`` and the command-line modules sit on top: they import the floors
(``models``, ``data``, ``training``, ``tracking``) and turn their errors (:mod:`fastff.errors`)
into one line and an exit status. A floor importing them, even inside a function, makes it depend
on the floor above it. The imports are read from the source (the AST of every module), so an
import that only runs on some path is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "fastff"

FLOORS = ("models", "data", "training", "tracking")
"""The packages below the entry points."""

ENTRY_POINTS = (
    "fastff.hydra_app",
    "fastff.config_checks",
    "fastff.train",
    "fastff.eval",
    "fastff.export",
    "fastff.bench.__main__",
    "fastff.sweep.cli",
    "fastff.report.cli",
)
"""Modules on top of the floors: the Hydra plumbing, the run-config checks and the CLIs."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name ``source`` (the text of ``module``) imports, anywhere in it (top level,
    functions, ``if`` branches): ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a``
    and ``a.b`` (``b`` may be a submodule); relative imports are resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                origin = f"{prefix}.{node.module}" if node.module else prefix
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def _imports_of(name: str, path: Path) -> set[str]:
    return imported_modules(path.read_text(), name, is_package=path.name == "__init__.py")


def _entry_point(imported: str) -> str | None:
    for entry in ENTRY_POINTS:
        if imported == entry or imported.startswith(f"{entry}."):
            return entry
    return None


def _floor_modules() -> dict[str, Path]:
    return {
        name: path
        for name, path in _all_modules().items()
        if name.split(".")[1:2] and name.split(".")[1] in FLOORS
    }


def test_every_floor_has_modules():
    names = _floor_modules()
    for floor in FLOORS:
        assert any(name.startswith(f"fastff.{floor}.") for name in names), floor
    assert "fastff.training.run_results" in names


def test_no_floor_module_imports_an_entry_point():
    offenders = sorted(
        f"{name} imports {imported}"
        for name, path in _floor_modules().items()
        for imported in _imports_of(name, path)
        if _entry_point(imported)
    )
    assert not offenders, "\n".join(offenders)


def test_no_floor_module_reaches_an_entry_point_through_another_module():
    """The same through any chain of fastff modules (a floor importing ``fastff.registry``,
    which imported ``fastff.hydra_app`` for the config folder, reached it too). Importing
    ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` as well."""
    modules = _all_modules()

    def edges(name: str) -> set[str]:
        out = set()
        for imported in _imports_of(name, modules[name]):
            parts = imported.split(".")
            out.update(
                ".".join(parts[:n])
                for n in range(1, len(parts) + 1)
                if ".".join(parts[:n]) in modules
            )
        return out

    graph = {name: edges(name) for name in modules}
    offenders = []
    for start in _floor_modules():
        seen, path_to = {start}, {start: [start]}
        stack = [start]
        while stack:
            current = stack.pop()
            for nxt in sorted(graph[current] - seen):
                seen.add(nxt)
                path_to[nxt] = [*path_to[current], nxt]
                if _entry_point(nxt):
                    offenders.append(" -> ".join(path_to[nxt]))
                else:
                    stack.append(nxt)
    assert not offenders, "\n".join(sorted(offenders))


@pytest.mark.parametrize(
    "source",
    [
        "from fastff.hydra_app import StopRun",
        "import fastff.hydra_app",
        "import fastff.hydra_app as app",
        "from fastff import hydra_app",
        "from .. import hydra_app",
        "from ..hydra_app import Terminated",
        "def status(err):\n    if err:\n        from fastff.hydra_app import StopRun\n    return 1",
        "class A:\n    def f(self):\n        import fastff.train\n",
    ],
)
def test_the_check_finds_every_form_of_import(source):
    imported = imported_modules(source, "fastff.training.run_results")
    assert any(_entry_point(name) for name in imported), imported


def test_the_check_passes_what_floors_may_import():
    source = (
        "from fastff.errors import StopRun\nfrom fastff import errors\n"
        "from . import guards\nimport fastff.hydra_apps_elsewhere\nfrom fastff.trainer import x"
    )
    imported = imported_modules(source, "fastff.training.run_results")
    assert "fastff.training.guards" in imported and "fastff.errors" in imported
    assert not any(_entry_point(name) for name in imported), imported
