"""What a run is built from, before it fits: config -> datamodule, model, module, trainer.

``fastff.train`` builds its run with these two functions (recording the run's sizes between
them) and the config tests build every config with them, so the two cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import lightning as L
from omegaconf import DictConfig
from torch import nn

from fastff.instantiate import instantiate_or_config_error
from fastff.training.builders import (
    build_callbacks,
    build_loggers,
    build_model,
    build_module,
    cluster_plugins,
    resolve_unused_parameters,
)
from fastff.training.checkpoint import check_checkpoint_fits
from fastff.training.module import ClassifierModule
from fastff.training.precision import check_precision_on_device, check_precision_packages


class RunParts(NamedTuple):
    """The datamodule (``data.input_shape``, ``data.num_classes``), the backbone and the
    LightningModule training it."""

    data: Any
    model: nn.Module
    module: ClassifierModule


def build_run(cfg: DictConfig, ckpt_path: str | os.PathLike | None = None) -> RunParts:
    """The datamodule, model and module of the composed run config ``cfg`` (already checked by
    ``check_train_config``); with ``ckpt_path`` (a checkpoint to resume), its tensors must fit.

    Raises:
        ConfigError: a setting the datamodule, backbone or layer refuses, or a checkpoint whose
            tensors do not fit the module (one line naming the key or tensor).
    """
    data = instantiate_or_config_error(cfg.data)
    model = build_model(cfg.model, cfg.layer, data.input_shape, data.num_classes)
    module = build_module(cfg, model, data)
    if ckpt_path is not None:  # one line naming a mismatched tensor, not Lightning's
        check_checkpoint_fits(ckpt_path, module)
    return RunParts(data, model, module)


def build_trainer(
    cfg: DictConfig, model: nn.Module, callbacks: Sequence[L.Callback] = ()
) -> L.Trainer:
    """The Lightning Trainer of ``cfg.trainer`` for ``model``: ``callbacks`` first, then the
    config's callbacks and loggers, cluster plugins, DDP's unused-parameter setting; precision
    checked against the installed packages and the device.

    Raises:
        ConfigError: a trainer setting Lightning refuses, or a precision the device lacks.
    """
    loggers = build_loggers(cfg)
    check_precision_packages(cfg.trainer)
    resolve_unused_parameters(cfg.trainer, model)
    trainer: L.Trainer = instantiate_or_config_error(
        cfg.trainer,
        key="trainer",
        callbacks=[*callbacks, *build_callbacks(cfg, loggers)],
        logger=loggers or False,
        **cluster_plugins(cfg.trainer),
    )
    check_precision_on_device(trainer)
    return trainer
