"""Helpers for pipeline tests: compose the real Hydra configs, run the real command line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from fastff.hydra_app import config_dir

CONF = Path(config_dir())


def compose_config(name: str, overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with overrides like the entry point; outputs in a tmp dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        del cfg["hydra"]
    return cfg


def run_cli(
    module: str, *args: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> <args>`` like a user would; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
