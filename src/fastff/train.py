"""Hydra entry point: check -> build (:mod:`fastff.training.assembly`) -> fit -> test -> results
(metrics.json and W&B).

python -m fastff.train                                   # FFF on digits (offline)
python -m fastff.train experiment=table1 data=mnist layer=fff layer.leaf_width=8
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fastff.config_checks import ConfigError, check_accelerator, check_train_config
from fastff.data.errors import DatasetError
from fastff.data.protocol import ProtocolDataModule
from fastff.hydra_app import hydra_entry, run_entry_point
from fastff.models.sizes import model_sizes
from fastff.training.assembly import build_run, build_trainer
from fastff.training.averaging import averaged_weights_for_testing, evaluated_weights
from fastff.training.guards import DivergenceGuard, EpochSeeding
from fastff.training.protocol import PaperProtocol
from fastff.training.results import provenance
from fastff.training.run_dir import resume_checkpoint
from fastff.training.run_results import RunResults, is_rank_zero, is_smoke_test
from fastff.training.summary import print_summary


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one configuration; return the results written to metrics.json."""
    check_train_config(cfg)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    check_accelerator(cfg.trainer, choices.get("trainer"))
    run = OmegaConf.to_container(cfg, resolve=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_checkpoint(run, output_dir)
    protocol = PaperProtocol()
    results = RunResults(
        output_dir / "metrics.json",
        protocol,
        static={"seed": cfg.seed, "output_dir": str(output_dir), "config": run},
        test=cfg.test,
        smoke_test=is_smoke_test(cfg.trainer),
    )
    with results.guard():  # from here on metrics.json says how the run ended
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        data, model, module = build_run(cfg, ckpt_path)
        results.results |= {"dataset": data.name, "model": cfg.model.get("name")}
        results.results |= {**model_sizes(model), "provenance": provenance()}

        guards = [DivergenceGuard(), EpochSeeding(cfg.seed)]
        trainer = build_trainer(cfg, model, [protocol, results, *guards])
        results.results |= evaluated_weights(trainer.callbacks, cfg.get("callbacks"))
        for logger in trainer.loggers:
            logger.log_hyperparams(run)

        datamodule = ProtocolDataModule(data)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if cfg.test:
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
            averaged_weights_for_testing(trainer)
            trainer.test(module, datamodule=data, ckpt_path=best, verbose=False, weights_only=True)
    if is_rank_zero():  # DDP: every rank runs train(); one summary
        print_summary(results.results)
    return results.results


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    """Console script ``fastff-train``; returns G_A for Hydra sweepers."""
    if HydraConfig.initialized():
        torch.set_float32_matmul_precision("high")
    results = run_entry_point(lambda: train(cfg), (ConfigError, DatasetError))
    return (results or {}).get("G_A")


if __name__ == "__main__":
    main()
