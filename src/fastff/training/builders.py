"""Build models, callbacks and loggers from the composed Hydra config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fastff.models import build_layer
from fastff.tracking import resolve_wandb_mode


def build_model(
    model_cfg: Mapping[str, Any],
    layer_cfg: Mapping[str, Any],
    input_shape: Sequence[int],
    num_classes: int,
) -> nn.Module:
    """Instantiate the backbone of ``model_cfg`` hosting layers built from ``layer_cfg``."""
    layer_cfg = _plain(layer_cfg)
    return instantiate(
        _plain(model_cfg),
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        layer_factory=partial(build_layer, layer_cfg),
    )


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Every callback under ``cfg.callbacks`` (entries set to null are skipped)."""
    entries = cfg.get("callbacks") or {}
    return [instantiate(entry) for entry in entries.values() if entry is not None]


def build_loggers(cfg: DictConfig) -> list:
    """Every logger under ``cfg.logger``; the W&B mode comes from ``resolve_wandb_mode``."""
    entries = cfg.get("logger") or {}
    loggers = []
    for name, entry in entries.items():
        if entry is None:
            continue
        if name == "wandb":
            mode = resolve_wandb_mode(entry.get("mode"))
            if mode == "disabled":
                continue
            loggers.append(instantiate(entry, mode=mode))
        else:
            loggers.append(instantiate(entry))
    return loggers


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)
