"""Check a composed run config before any work starts: one clear message naming the key.

Only what would otherwise fail late or from deep inside a library is checked here; settings that
Lightning validates itself when the Trainer is built (precision, accelerator, ...) are left to it
(``instantiate_or_config_error`` turns its complaint into the same one line).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from fastff.errors import ConfigError, LayerConfigError
from fastff.layers import validation
from fastff.models.kinds import kind_of_builder
from fastff.models.layer_builders import check_config_keys
from fastff.setting_names import unknown_setting_hint
from fastff.tracking import resolve_wandb_mode
from fastff.training.module import EPOCH_METRICS
from fastff.training.protocol import IMPROVEMENTS

MONITORABLE = (*EPOCH_METRICS, IMPROVEMENTS)
"""Metrics a checkpoint, early stopping or LR scheduler may monitor."""


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _positive_number(cfg: DictConfig, key: str, *, allow_zero: bool = False) -> None:
    value = _get(cfg, key)
    if value is not None:
        validation.check_number(key, value, 0, math.inf, open_low=not allow_zero, open_high=True)


def _integer(cfg: DictConfig, key: str, minimum: int) -> None:
    value = _get(cfg, key)
    if value is not None:
        validation.check_int(key, value, minimum)


def _monitor(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if value is not None:
        validation.check_choice(key, value, MONITORABLE)


SEED_MAX = 2**32 - 1
"""The largest seed numpy (and so Lightning's seed_everything) accepts."""


def check_seed(seed: Any, key: str = "seed") -> int:
    """Raise ConfigError unless ``seed`` is an integer numpy accepts (0 .. 2**32 - 1)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(
            f"{key} must be an integer from 0 to {SEED_MAX} (2**32 - 1), got {seed!r}"
        )
    return seed


def check_layer_config(layer_cfg: DictConfig) -> None:
    """Build the configured layer on the meta device (nothing allocated): unknown keys and values
    the layer's constructor rejects raise ConfigError naming ``layer.<key>``. A layer without a
    width of its own (the ViT gives it one) is built when the model is."""
    target = layer_cfg.get("_target_")
    try:
        builder = get_method(target)
    except Exception:
        raise ConfigError(f"layer._target_: cannot import {target!r}") from None
    try:
        kind = kind_of_builder(builder)
        if kind is not None:
            check_config_keys(kind, layer_cfg)
        if layer_cfg.get("width") is not None or layer_cfg.get("depth") is not None:
            factory = instantiate(OmegaConf.to_container(layer_cfg, resolve=True))
            factory(1, 1, device="meta")
    except LayerConfigError as err:
        raise ConfigError(str(err)) from None


def check_target_keys(cfg: DictConfig, key: str) -> None:
    """Raise ConfigError when the config node at ``key`` (one with a ``_target_``, e.g.
    ``optimizer``) holds a setting its target's constructor does not take (usually a typo added
    with ``+key=value``), naming the closest valid one. Targets that take ``**kwargs`` pass."""
    node = _get(cfg, key)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    try:
        parameters = list(inspect.signature(get_method(node._target_)).parameters.values())
        forwarded = FORWARDS_KWARGS.get(node._target_)
        if forwarded is not None:  # **kwargs go on to a function with a fixed signature
            parameters = [p for p in parameters if p.kind is not p.VAR_KEYWORD]
            parameters += inspect.signature(get_method(forwarded)).parameters.values()
    except Exception:  # not importable or no signature: instantiation reports it
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    accepted = [p.name for p in parameters if p.kind is not p.VAR_POSITIONAL]
    for name in node:
        if not str(name).startswith("_") and name not in accepted:
            hint = unknown_setting_hint(str(name), accepted)
            raise ConfigError(f"{key}.{name}: unknown setting for {node._target_}{hint}")


FORWARDS_KWARGS = {"lightning.pytorch.loggers.WandbLogger": "wandb.init"}
"""Targets whose ``**kwargs`` are passed on to another function (checked against that one)."""

TARGET_GROUPS = ("data", "optimizer", "scheduler.scheduler", "trainer")
"""Config nodes whose keys are checked against their ``_target_`` (plus every callback and
logger entry)."""


def check_accelerator(trainer_cfg: DictConfig, choice: str | None = None) -> None:
    """Raise ConfigError when the trainer asks for a GPU this machine does not have, saying what
    to use instead (``choice``: the ``trainer=`` option, for the message).

    Checked when the run starts, not with the other settings: a SLURM multirun is composed and
    checked on a login node that may have no GPU.
    """
    import torch

    accelerator = str(trainer_cfg.get("accelerator") or "auto").lower()
    if accelerator not in ("gpu", "cuda", "mps"):
        return
    mps = accelerator != "cuda" and torch.backends.mps.is_available()
    if (accelerator != "mps" and torch.cuda.is_available()) or mps:
        return
    strategy = trainer_cfg.get("strategy")
    ddp = (
        "ddp"
        in str(
            strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy
        ).lower()
    )
    named = choice not in (None, "default", "cpu")
    what = f"trainer={choice}" if named else f"trainer.accelerator={accelerator}"
    instead = "trainer=ddp_cpu (DDP with CPU processes) or trainer=cpu" if ddp else "trainer=cpu"
    device = "an Apple GPU (MPS)" if accelerator == "mps" else "a CUDA GPU"
    raise ConfigError(
        f"{what} needs {device}, and this machine has none "
        f"(torch.cuda.is_available() is False): use {instead}"
    )


def check_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first invalid setting of a training config."""
    try:
        _check_train_config(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_train_config(cfg: DictConfig) -> None:
    check_seed(cfg.get("seed"))
    _positive_number(cfg, "optimizer.lr")
    _positive_number(cfg, "optimizer.weight_decay", allow_zero=True)
    _positive_number(cfg, "optimizer.momentum", allow_zero=True)
    _integer(cfg, "data.batch_size", 1)
    _integer(cfg, "trainer.min_epochs", 0)
    if _get(cfg, "trainer.max_epochs") != -1:
        _integer(cfg, "trainer.max_epochs", 1)
    for name, entry in (cfg.get("callbacks") or {}).items():
        if entry is not None:
            _monitor(cfg, f"callbacks.{name}.monitor")
    _integer(cfg, "callbacks.early_stopping.patience", 1)
    if cfg.get("scheduler"):
        _monitor(cfg, "scheduler.monitor")
        _integer(cfg, "scheduler.scheduler.patience", 0)
        factor = _get(cfg, "scheduler.scheduler.factor")
        if factor is not None:
            validation.check_number(
                "scheduler.scheduler.factor", factor, 0, 1, open_low=True, open_high=True
            )
    if cfg.get("logger") and cfg.logger.get("wandb"):
        resolve_wandb_mode(cfg.logger.wandb.get("mode"))
    groups = (
        *TARGET_GROUPS,
        *(f"{g}.{name}" for g in ("callbacks", "logger") for name in cfg.get(g) or {}),
    )
    for key in groups:
        check_target_keys(cfg, key)
    check_layer_config(cfg.layer)
