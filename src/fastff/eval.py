"""Hydra entry point: evaluate a saved checkpoint on its dataset's test split (hard inference).

python -m fastff.eval ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from fastff.atomic_json import write_json_atomic
from fastff.config_checks import ConfigError
from fastff.data.errors import DatasetError
from fastff.hydra_app import exit_on_user_error, hydra_entry, instantiate_or_config_error
from fastff.models.sizes import model_sizes
from fastff.quantization import quantize, quantize_option
from fastff.training.checkpoint import load_model, read_checkpoint, run_config
from fastff.training.module import ClassifierModule
from fastff.training.results import percent, provenance
from fastff.training.summary import print_summary

log = logging.getLogger("fastff.eval")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint ``cfg.ckpt_path``; return and write ``eval.json`` in the run dir."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError(
            "ckpt_path is required: the checkpoint to evaluate, e.g. "
            "ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt"
        )
    try:  # the recorded config is checked against the allow-list before anything is built
        compact = quantize_option(cfg.get("quantize"))
        run = run_config(read_checkpoint(cfg.ckpt_path))
        model = load_model(cfg.ckpt_path)
        if compact is not None:  # hard inference only: a quantized FFF has no soft path
            model = quantize(model, compact)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    data_cfg = OmegaConf.create(run["data"])
    if cfg.data_dir is not None:
        data_cfg.data_dir = cfg.data_dir
    data = instantiate_or_config_error(data_cfg)
    log_soft = cfg.log_soft_accuracy and compact is None
    module = ClassifierModule(
        model, optimizer=None, num_classes=data.num_classes, log_soft_accuracy=log_soft
    )
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=cfg.paths.output_dir,
    )
    tested = trainer.test(module, datamodule=data, verbose=False)[0]
    results = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "dataset": data.name,
        "layer": model_sizes(model)["layer"],
        "quantize": compact,
        "test_acc": percent(tested["test/acc"]),
        "test_acc_soft": percent(tested.get("test/acc_soft")),
        "provenance": provenance(),
    }
    written = Path(cfg.paths.output_dir) / "eval.json"
    write_json_atomic(written, results)
    print_summary(
        {
            "dataset": results["dataset"],
            "layer": results["layer"],
            "G_A": results["test_acc"],
            "test_acc_soft": results["test_acc_soft"],
        }
    )
    print(f"results in {written.resolve()}")
    return results


@hydra_entry("eval")
def main(cfg: DictConfig) -> None:
    """Console script ``fastff-eval``."""
    exit_on_user_error(lambda: evaluate(cfg), (ConfigError, DatasetError))


if __name__ == "__main__":
    main()
