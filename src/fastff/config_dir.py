"""Where fastff's Hydra configs (``conf/``) are: one function every floor may import."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> str:
    """Absolute path of the Hydra configs: $FASTFF_CONFIG_DIR, else conf/ of this checkout."""
    env = os.environ.get("FASTFF_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    return str(Path(__file__).resolve().parents[2] / "conf")
