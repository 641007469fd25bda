"""Build the model, the LightningModule, callbacks and loggers from the composed Hydra config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fastff.hydra_app import instantiate_or_config_error
from fastff.tracking import resolve_wandb_mode
from fastff.training.module import ClassifierModule


def build_model(
    model_cfg: Mapping[str, Any],
    layer_cfg: Mapping[str, Any],
    input_shape: Sequence[int],
    num_classes: int,
) -> nn.Module:
    """Instantiate the backbone of ``model_cfg`` hosting layers built from ``layer_cfg`` (a Hydra
    partial: the backbone passes in_features and out_features).

    Raises:
        ConfigError: a model or layer setting the backbone or layer refuses (naming the key).
    """
    return instantiate_or_config_error(
        _plain(model_cfg),
        key="model",
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        layer_factory=instantiate(_plain(layer_cfg)),
    )


def build_module(cfg: DictConfig, model: nn.Module, data: Any) -> ClassifierModule:
    """The LightningModule training ``model`` with ``cfg``'s optimizer and LR schedule."""
    return ClassifierModule(
        model,
        optimizer=instantiate(cfg.optimizer),
        num_classes=data.num_classes,
        lr_schedule=instantiate(cfg.scheduler, _convert_="all") if cfg.get("scheduler") else None,
        log_soft_accuracy=cfg.log_soft_accuracy,
        config={
            "run": OmegaConf.to_container(cfg, resolve=True),
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
        },
    )


def build_callbacks(cfg: DictConfig, loggers: Sequence[Any] = ()) -> list[L.Callback]:
    """Every callback under ``cfg.callbacks`` (entries set to null are skipped), plus a learning
    rate monitor when there is a logger to record it."""
    entries = cfg.get("callbacks") or {}
    callbacks = [instantiate(entry) for entry in entries.values() if entry is not None]
    if loggers:
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    return callbacks


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
            loggers.append(wandb_logger(entry, mode))
        else:
            loggers.append(instantiate(entry))
    return loggers


def wandb_logger(entry: DictConfig, mode: str) -> Any:
    """A WandbLogger in ``mode``. Online, the W&B run starts now, within ``init_timeout`` seconds
    (``logger.wandb.settings.init_timeout``); without a key, a network or a server it falls back to
    offline with one warning line (``wandb sync`` uploads it later)."""
    import sys

    logger = instantiate(entry, mode=mode, _convert_="all")
    if mode != "online":
        return logger
    try:
        logger.experiment  # noqa: B018 - starts the W&B run (rank 0 only)
    except Exception as err:  # no key, no network, no server: W&B raises its own errors
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(
            f"warning: W&B online is unavailable ({reason}); recording offline instead",
            file=sys.stderr,
        )
        logger = instantiate(entry, mode="offline", _convert_="all")
    return logger


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def cluster_plugins(trainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Trainer keyword arguments for the cluster this process runs in.

    Under SLURM (e.g. ``hydra/launcher=slurm``) requeueing is submitit's: on its signal it requeues
    the job, and the rerun resumes the run dir's ``last.ckpt`` (``fastff.training.run_dir``).
    Lightning's own SLURM auto-requeue (SIGUSR1, ``hpc_ckpt_*.ckpt`` that it would load in
    preference to ``last.ckpt``) is switched off, so exactly one mechanism requeues.
    """
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    if trainer_cfg.get("plugins") is not None or not SLURMEnvironment.detect():
        return {}
    return {"plugins": [SLURMEnvironment(auto_requeue=False)]}
