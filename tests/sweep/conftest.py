"""Fixtures for the sweep tests: sweep files written into a temporary folder, the fake trial."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
FAKE_COMMAND = ["${env}", "${interpreter}", "-m", "fake_trial", "${args_no_hyphens}"]


@pytest.fixture
def fake_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let trial subprocesses import tests/sweep/fake_trial.py."""
    import os

    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{HERE}{os.pathsep}{path}" if path else str(HERE))


@pytest.fixture
def write_sweep(tmp_path: Path) -> Callable[..., Path]:
    """Write a sweep file (default: fake trials, grid over ``parameters``) and return its path."""

    def write(parameters: dict[str, Any], name: str = "fake", **extra: Any) -> Path:
        config = {
            "name": name,
            "method": "grid",
            "metric": {"name": "score", "goal": "maximize"},
            "parameters": parameters,
            "command": FAKE_COMMAND,
            **extra,
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write
