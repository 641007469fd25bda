"""Fixtures for model tests: compose the real Hydra configs (as the pipeline tests do)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from pipeline_utils import compose_config


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    runs = iter(range(1_000))

    def make(*overrides: str, name: str = "train") -> DictConfig:
        return compose_config(name, overrides, tmp_path / f"run{next(runs)}")

    return make
