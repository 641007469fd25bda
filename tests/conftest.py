"""Shared test fixtures: W&B never writes outside a temporary folder and never goes online."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from pipeline_utils import compose_config

REPO_ROOT = Path(__file__).resolve().parents[1]

# Triton decides when a kernel is defined whether its interpreter runs it; without CUDA the
# `triton` tests run fastff's Triton kernels on CPU tensors that way, so set it before anything
# imports them (fastff imports them only on first use).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point every W&B folder at a temporary directory and force offline mode by default."""
    base = tmp_path_factory.mktemp("wandb_env")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        folder = base / var.lower()
        folder.mkdir()
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    yield


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/<name>.yaml`` (default ``train``) with overrides; each call gets its own
    output dir under ``tmp_path``."""
    runs = iter(range(1_000))

    def make(*overrides: str, name: str = "train") -> DictConfig:
        return compose_config(name, overrides, tmp_path / f"run{next(runs)}")

    return make
