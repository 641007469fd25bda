"""Check a composed run config before any work starts: one clear message naming the key."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from fastff.models.layer_factory import LayerConfigError, layer_sizes
from fastff.tracking import resolve_wandb_mode
from fastff.training.module import MONITORABLE

PRECISIONS = ("32", "32-true", "64", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


class ConfigError(ValueError):
    """An invalid setting; the message names the config key and what is allowed."""


def _number(cfg: DictConfig, key: str, *, minimum: float, strict: bool, integer: bool) -> Any:
    value = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, DictConfig) else None
    if value is None:
        return None
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    bound = f"> {minimum}" if strict else f">= {minimum}"
    if isinstance(value, bool) or not ok_type or (value <= minimum if strict else value < minimum):
        raise ConfigError(f"{key} must be {kind} {bound}, got {value!r}")
    return value


def _choice(value: Any, key: str, allowed: tuple) -> None:
    if value is not None and str(value) not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")


def check_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first invalid setting of a training config."""
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise ConfigError(f"seed must be an integer, got {cfg.get('seed')!r}")
    _number(cfg, "optimizer.lr", minimum=0, strict=True, integer=False)
    _number(cfg, "optimizer.weight_decay", minimum=0, strict=False, integer=False)
    _number(cfg, "optimizer.momentum", minimum=0, strict=False, integer=False)
    _number(cfg, "data.batch_size", minimum=1, strict=False, integer=True)
    _number(cfg, "trainer.min_epochs", minimum=0, strict=False, integer=True)
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs != -1:
        _number(cfg, "trainer.max_epochs", minimum=1, strict=False, integer=True)
    _choice(cfg.trainer.get("precision"), "trainer.precision", PRECISIONS)
    _choice(cfg.trainer.get("accelerator"), "trainer.accelerator", ACCELERATORS)
    if cfg.get("callbacks"):
        _number(cfg, "callbacks.early_stopping.patience", minimum=1, strict=False, integer=True)
        for name, entry in cfg.callbacks.items():
            if entry is not None and entry.get("monitor") is not None:
                _choice(entry.monitor, f"callbacks.{name}.monitor", MONITORABLE)
    if cfg.get("scheduler"):
        _number(cfg, "scheduler.patience", minimum=0, strict=False, integer=True)
        factor = cfg.scheduler.get("factor")
        if factor is not None and not 0 < factor < 1:
            raise ConfigError(f"scheduler.factor must be in (0, 1), got {factor!r}")
        _choice(cfg.scheduler.get("monitor"), "scheduler.monitor", MONITORABLE)
    if cfg.get("logger") and cfg.logger.get("wandb"):
        try:
            resolve_wandb_mode(cfg.logger.wandb.get("mode"))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    try:
        layer_sizes(cfg.layer)
    except LayerConfigError as err:
        raise ConfigError(str(err)) from None
