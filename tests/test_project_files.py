"""The setup files agree with each other: conda users get what pip users get."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import yaml
from make_recipes import make_commands

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


def test_ci_installs_lints_and_runs_the_suite(tmp_path):
    """``.ci/run`` runs (with a ``make`` that only records its targets) and asks for install,
    lint and test; ``make test`` and ``make train`` run the suite and the default training.
    (tests/readme runs the README's own ``make train`` / ``make test`` lines.)"""
    log = tmp_path / "make.log"
    stub = tmp_path / "bin" / "make"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "$@" >> "$MAKE_LOG"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run")],
        env={**env, "MAKE_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["install", "lint", "test"]
    assert make_commands("test") == [[".venv/bin/python", "-m", "pytest"]]
    assert make_commands("train", ARGS="seed=3")[-1] == [
        ".venv/bin/python", "-m", "fastff.train", "seed=3"
    ]  # fmt: skip


def test_make_help_lists_the_targets():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    for target in ("install", "train", "eval", "bench", "data", "test", "lint", "format", "clean"):
        assert f"make {target} " in out, target


def test_make_install_adds_the_sweeps_engine_without_its_numpy_pin():
    """`sweeps` declares numpy<2; fastff installs it with --no-deps (pinned to the tested
    release) and lists its real runtime dependencies itself, in pyproject and environment.yml."""
    from fastff.sweep import SWEEPS_VERSION

    installs = [
        c for c in make_commands("install", install=True) if c[1:4] == ["-m", "pip", "install"]
    ]
    assert installs[0][-1] == ".[dev]" and "-e" in installs[0]
    assert installs[1][4:] == ["--quiet", "--no-deps", f"sweeps=={SWEEPS_VERSION}"]
    environment = (ROOT / "environment.yml").read_text()
    assert f"pip install --no-deps sweeps=={SWEEPS_VERSION}" in environment
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    assert {"jsonschema", "jsonref", "pydantic", "pyyaml", "scipy", "scikit-learn"} <= names
    assert "sweeps" not in names
    assert project["scripts"]["fastff-sweep"] == "fastff.sweep.cli:main"
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "make sweep " in out
