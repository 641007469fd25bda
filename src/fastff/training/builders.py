"""Build the model, the LightningModule, callbacks and loggers from the composed Hydra config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fastff.instantiate import instantiate_or_config_error
from fastff.tracking import resolve_wandb_mode
from fastff.training.module import ClassifierModule

MODEL_OPTIONS = ("compile",)
"""Keys of a model config that are training options, not backbone arguments: ``compile``
(:class:`ClassifierModule`'s ``compile_model``)."""


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
    backbone = {k: v for k, v in _plain(model_cfg).items() if k not in MODEL_OPTIONS}
    return instantiate_or_config_error(
        backbone,
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
        compile_model=cfg.model.get("compile") or False,
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

    logger = _without_anonymous(instantiate(entry, mode=mode, _convert_="all"))
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
        logger = _without_anonymous(instantiate(entry, mode="offline", _convert_="all"))
    return logger


def _without_anonymous(logger: Any) -> Any:
    """Lightning's WandbLogger passes ``anonymous=None`` to ``wandb.init``, which W&B >= 0.19
    answers with a "The anonymous setting has no effect" warning on every run; the setting does
    nothing, so it is left out."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous", False) is None:
        del init["anonymous"]
    return logger


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def resolve_unused_parameters(trainer_cfg: DictConfig, model: nn.Module) -> None:
    """Resolve a DDP strategy's ``find_unused_parameters: auto`` (``conf/trainer/ddp*.yaml``) in
    place: true when ``model`` holds a layer whose kind leaves parameters without a gradient in a
    step (:attr:`~fastff.models.kinds.LayerKind.unused_parameters`: an MoE's unchosen experts),
    else false (DDP would warn on every rank that it found no unused parameters, and the flag
    costs a graph traversal per step). true / false are left as given."""
    from omegaconf import open_dict

    from fastff.models.kinds import kind_of
    from fastff.models.sizes import hosted_layers

    strategy = trainer_cfg.get("strategy")
    if isinstance(strategy, DictConfig) and strategy.get("find_unused_parameters") == "auto":
        with open_dict(strategy):
            strategy.find_unused_parameters = any(
                kind_of(layer).unused_parameters for _, layer in hosted_layers(model)
            )


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
