"""What ``make <target>`` runs, read from make itself (``make -n``), so a test checks the
commands a target really runs rather than the Makefile's text."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAMP = ".venv/.installed"
"""The Makefile's install stamp (``$(STAMP)``): taken as up to date unless ``install=True``."""


def make_commands(*targets: str, install: bool = False, **variables: str) -> list[list[str]]:
    """The commands ``make <targets> KEY=value ...`` would run, one word list per command
    (backslash-continued lines joined), without running any of them.

    With ``install=False`` the install stamp counts as up to date, so nothing is (re)installed;
    with ``install=True`` the stamp counts as out of date (pyproject.toml just changed), so the
    install recipe is listed too.
    """
    stamp = ["-W", "pyproject.toml"] if install else ["-o", STAMP]
    dry = subprocess.run(
        ["make", "-n", "-s", "--no-print-directory", *stamp, "-C", str(ROOT), *targets]
        + [f"{key}={value}" for key, value in variables.items()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [shlex.split(line) for line in dry.stdout.replace("\\\n", " ").splitlines() if line]


def run_make(*targets: str, python: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run ``make <targets>`` for real with ``python``'s folder as the Makefile's ``$(BIN)`` and
    the install stamp taken as up to date (nothing is installed)."""
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-o", STAMP, "-C", str(ROOT), *targets]
        + [f"BIN={Path(python).parent}"]
        + [f"{key}={value}" for key, value in variables.items()],
        capture_output=True,
        text=True,
        timeout=300,
    )
