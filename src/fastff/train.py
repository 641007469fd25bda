"""Hydra entry point: compose -> fit -> test -> results (metrics.json and W&B).

python -m fastff.train                                   # FFF on digits (offline)
python -m fastff.train experiment=table1 data=mnist layer=fff layer.leaf_width=8
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fastff.config_checks import ConfigError, check_train_config
from fastff.data.errors import DatasetError
from fastff.hydra_app import config_dir, exit_on_user_error, instantiate_or_config_error
from fastff.models.layer_factory import layer_sizes
from fastff.training.builders import build_callbacks, build_loggers, build_model
from fastff.training.data import ProtocolDataModule
from fastff.training.module import ClassifierModule
from fastff.training.protocol import ProtocolTracker
from fastff.training.results import RESULT_KEYS, percent, provenance, write_json_atomic
from fastff.training.summary import print_summary

log = logging.getLogger("fastff.train")


def _protocol_results(tracker: ProtocolTracker) -> dict[str, Any]:
    """M_A, ETT_M, ETT_G and the per-epoch history so far (G_A comes from the test)."""
    return {
        "M_A": percent(tracker.memorization_accuracy),
        "ETT_M": tracker.ett_m,
        "ETT_G": tracker.ett_g,
        "best_val_acc": percent(tracker.best_val) if tracker.ett_g else None,
        "epochs": len(tracker.history),
        "history": tracker.history,
    }


def _finish_wandb(loggers: list, results: dict[str, Any]) -> None:
    """Put the results in each W&B run's summary and close it (a W&B failure is only logged)."""
    from lightning.pytorch.loggers import WandbLogger

    summary = {k: v for k, v in results.items() if k in RESULT_KEYS or k == "test_acc_soft"}
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.summary.update(summary)
                logger.experiment.finish()
            except Exception as err:  # metrics.json already holds the results
                log.warning("could not write the W&B summary: %s", err)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one configuration; return the results written to metrics.json."""
    check_train_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    started = time.time()

    data = instantiate_or_config_error(cfg.data)
    plain_cfg = OmegaConf.to_container(cfg, resolve=True)
    model = build_model(cfg.model, cfg.layer, data.input_shape, data.num_classes)
    scheduler_cfg = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.scheduler else None
    monitor = scheduler_cfg.pop("monitor", "val/acc") if scheduler_cfg else "val/acc"
    module = ClassifierModule(
        model,
        optimizer=instantiate(cfg.optimizer),
        num_classes=data.num_classes,
        scheduler=instantiate(scheduler_cfg) if scheduler_cfg else None,
        scheduler_monitor=monitor,
        log_soft_accuracy=cfg.log_soft_accuracy,
        config={
            "run": plain_cfg,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
        },
    )
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg)
    if loggers:
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(plain_cfg)

    results: dict[str, Any] = {
        "dataset": data.name,
        "model": cfg.model.get("name"),
        "layer": cfg.layer.name,
        **layer_sizes(cfg.layer),
        "seed": cfg.seed,
        "n_params": sum(p.numel() for p in model.parameters()),
        "M_A": None,
        "G_A": None,
        "ETT_M": None,
        "ETT_G": None,
        "wall_time_s": None,
        "status": "failed",
    }
    metrics_path = output_dir / "metrics.json"
    try:
        trainer.fit(module, datamodule=ProtocolDataModule(data), ckpt_path=cfg.get("ckpt_path"))
        if not trainer.interrupted and cfg.test:
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
            results["checkpoint"] = best
            tested = trainer.test(module, datamodule=data, ckpt_path=best, verbose=False)[0]
            results["G_A"] = percent(tested.get("test/acc"))
            results["test_acc_soft"] = percent(tested.get("test/acc_soft"))
        results["status"] = "interrupted" if trainer.interrupted else "finished"
    except BaseException as err:
        # Lightning turns Ctrl+C into a graceful shutdown followed by SystemExit.
        stopped = isinstance(err, (KeyboardInterrupt, SystemExit))
        results["status"] = "interrupted" if stopped else "failed"
        results["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        results.update(_protocol_results(module.tracker))
        results["wall_time_s"] = round(time.time() - started, 3)
        results["output_dir"] = str(output_dir)
        results["config"] = plain_cfg
        results["provenance"] = provenance()
        write_json_atomic(metrics_path, results)
        _finish_wandb(loggers, results)
    print_summary(results)
    log.info("results written to %s", metrics_path)
    return results


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console script ``fastff-train``; returns G_A for Hydra sweepers."""
    if HydraConfig.initialized():
        torch.set_float32_matmul_precision("high")
    results = exit_on_user_error(lambda: train(cfg), (ConfigError, DatasetError))
    return results.get("G_A")


if __name__ == "__main__":
    main()
