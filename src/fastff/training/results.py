"""A run's results: metrics.json in the run dir (written atomically), with provenance."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from fastff.results_schema import config_name, experiment_of

PACKAGES = (
    "fastff",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "hydra-core",
    "wandb",
    "timm",
    "numpy",
)


def percent(fraction: float | None) -> float | None:
    """An accuracy fraction as percent rounded to 4 decimals, as the paper reports; None or NaN
    gives None."""
    return None if fraction is None or math.isnan(fraction) else round(100.0 * fraction, 4)


def git_info(cwd: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit hash and dirty flag of the checkout ``cwd`` is in (None outside git)."""

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance() -> dict[str, Any]:
    """Where a result came from: git commit, package versions, device, command line."""
    return {
        "git": git_info(Path(__file__).parent),
        "versions": package_versions(),
        "device": device_info(),
        "argv": list(sys.argv),
    }


def run_identity(config: Mapping[str, Any], choices: Mapping[str, Any]) -> dict[str, Any]:
    """What a run is (:data:`fastff.results_schema.IDENTITY_KEYS` and the layer kind), from its
    resolved config and Hydra's config-group choices (empty outside a Hydra app): metrics.json
    records it when the run starts, so even a run that fails before its data or model exist says
    which experiment, data config and layer it was.

    Args:
        config: the run's resolved config (a plain container).
        choices: ``HydraConfig.get().runtime.choices`` (group -> config name), or {}.
    """
    layer = config.get("layer")
    layer = layer if isinstance(layer, Mapping) else {}
    gating = layer.get("noisy_gating")
    return {
        "experiment": experiment_of(config.get("task_name"), config.get("tags")) or None,
        "data_config": choices.get("data") or config_name("data", config.get("data")),
        "layer": choices.get("layer") or config_name("layer", layer),
        "hardening": _number(layer.get("hardening")),
        "frozen_tree": bool(layer["frozen_tree"]) if "frozen_tree" in layer else None,
        "gating": None if "noisy_gating" not in layer else "noisy" if gating else "noiseless",
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
