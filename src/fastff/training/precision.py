"""``trainer.precision`` settings Lightning accepts but this machine cannot run: one line each.

Lightning itself refuses an unknown precision in one line (``instantiate_or_config_error``);
these checks cover the rest: a precision whose package is missing (checked before the Trainer is
built) and a bfloat16 precision on a GPU without bfloat16 (checked once the Trainer knows its
device). On the CPU Lightning turns ``16-mixed`` into ``bf16-mixed`` itself, with a warning.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

import lightning as L
import torch

from fastff.errors import ConfigError

INSTEAD = "use trainer.precision=bf16-mixed or 16-mixed (or 32)"


def check_precision_packages(trainer_cfg: Any) -> None:
    """Raise ConfigError when ``trainer.precision`` needs a package that is not installed."""
    precision = str(trainer_cfg.get("precision"))
    if precision.startswith("transformer-engine") and find_spec("transformer_engine") is None:
        raise ConfigError(
            f"trainer.precision={precision} needs NVIDIA's transformer_engine package, which "
            f"is not installed: {INSTEAD}"
        )


def check_precision_on_device(trainer: L.Trainer) -> None:
    """Raise ConfigError when the Trainer's precision cannot run on its device: bfloat16 on a
    CUDA GPU without native bfloat16 (before Ampere)."""
    precision = str(getattr(trainer.precision_plugin, "precision", ""))
    device = trainer.strategy.root_device
    if (
        precision.startswith("bf16")
        and device.type == "cuda"
        and not torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        raise ConfigError(
            f"trainer.precision={precision} needs a GPU with bfloat16, and "
            f"{torch.cuda.get_device_name(device)} has none: use trainer.precision=16-mixed"
        )
