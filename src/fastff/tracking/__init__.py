"""Experiment tracking (Weights & Biases): the run mode every entry point shares; the offline run
reader lives in :mod:`fastff.tracking.wandb_offline`."""

from __future__ import annotations

import os

WANDB_MODES = ("offline", "online", "disabled")


def in_wandb_sweep() -> bool:
    """True when a W&B agent started this process for a sweep (it sets ``WANDB_SWEEP_ID``)."""
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def resolve_wandb_mode(configured: str | None) -> str:
    """Return the W&B mode to use: ``WANDB_MODE`` if set; else ``online`` when a W&B agent runs
    this process for a sweep (``WANDB_SWEEP_ID`` set: the sweep's server must see the run's
    metric); else the configured one (default offline).

    A stored ``wandb login`` never switches a run online by itself: the mode is always passed
    explicitly to ``wandb.init``. fastff's local sweep runner removes ``WANDB_SWEEP_ID`` from its
    trials' environment, so they keep the configured mode.

    Raises:
        ValueError: if the resulting mode is not one of ``WANDB_MODES``.
    """
    env = os.environ.get("WANDB_MODE")
    if env:
        mode = env.lower()
    elif in_wandb_sweep():
        mode = "online"
    else:
        mode = (configured or "offline").lower()
    if mode == "dryrun":
        mode = "offline"
    if mode not in WANDB_MODES:
        source = "WANDB_MODE" if env else "logger.wandb.mode"
        raise ValueError(f"{source} must be one of {list(WANDB_MODES)}, got {mode!r}")
    return mode
