"""The setup files agree with each other: conda users get what pip users get."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_has_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_names = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip_names = {_name(r) for r in pip_section if not r.startswith("-e")}
    for requirement in project["dependencies"]:
        assert _name(requirement) in pip_names | conda_names, requirement
    assert any(r.startswith("-e .[dev]") for r in pip_section)


def test_readme_names_the_two_commands_and_ci_runs_the_tests():
    readme = (ROOT / "README.md").read_text()
    assert "make train" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_help_lists_the_targets():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    for target in ("install", "train", "eval", "bench", "data", "test", "lint", "format", "clean"):
        assert f"make {target} " in out, target


def test_make_install_adds_the_sweeps_engine_without_its_numpy_pin():
    """`sweeps` declares numpy<2; fastff installs it with --no-deps (pinned to the tested
    release) and lists its real runtime dependencies itself, in pyproject and environment.yml."""
    from fastff.sweep import SWEEPS_VERSION

    makefile = (ROOT / "Makefile").read_text()
    assert f"SWEEPS_PIN := sweeps=={SWEEPS_VERSION}" in makefile
    assert '--no-deps "$(SWEEPS_PIN)"' in makefile
    environment = (ROOT / "environment.yml").read_text()
    assert f"pip install --no-deps sweeps=={SWEEPS_VERSION}" in environment
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    assert {"jsonschema", "jsonref", "pydantic", "pyyaml", "scipy", "scikit-learn"} <= names
    assert "sweeps" not in names
    assert project["scripts"]["fastff-sweep"] == "fastff.sweep.cli:main"
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "make sweep " in out
