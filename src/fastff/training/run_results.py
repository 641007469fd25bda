"""A run's results as a Lightning callback: metrics.json (atomically) and the W&B summary.

The callback writes once the run's last stage ends (the test, or the fit when there is no test)
and whenever a stage raises, so a failed or interrupted run keeps the epochs it finished.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L

from fastff.training.protocol import PaperProtocol
from fastff.training.results import RESULT_KEYS, SCHEMA_VERSION, percent, write_json_atomic

log = logging.getLogger("fastff.train")


class RunResults(L.Callback):
    """Collects a run's results and writes them to ``path`` (and each W&B run's summary).

    Args:
        path: the metrics.json to write.
        protocol: the run's :class:`PaperProtocol` (M_A, ETT_M, ETT_G, history).
        static: results known before training (dataset, layer sizes, seed, config, ...).
        test: whether a test stage follows the fit (it then writes the final results).
    """

    def __init__(
        self, path: str | Path, protocol: PaperProtocol, static: dict[str, Any], test: bool
    ) -> None:
        self.path = Path(path)
        self.protocol = protocol
        self.test = test
        self.started = time.time()
        self.results: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            **static,
            "M_A": None,
            "G_A": None,
            "ETT_M": None,
            "ETT_G": None,
            "wall_time_s": None,
            "status": "running",
        }
        self.written = False

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.test:
            self.finish(trainer, "finished")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.results["checkpoint"] = trainer.ckpt_path

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.results["G_A"] = percent(_item(metrics.get("test/acc")))
        self.results["test_acc_soft"] = percent(_item(metrics.get("test/acc_soft")))
        self.finish(trainer, "finished")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        stopped = isinstance(exception, (KeyboardInterrupt, SystemExit))
        self.results["error"] = f"{type(exception).__name__}: {exception}"
        self.finish(trainer, "interrupted" if stopped else "failed")

    def finish(self, trainer: L.Trainer | None, status: str) -> dict[str, Any]:
        """Record ``status`` and the protocol's results, write metrics.json and the W&B summary."""
        protocol = self.protocol.results()
        self.results |= {
            "M_A": percent(protocol.pop("M_A")),
            "best_val_acc": percent(protocol.pop("best_val_acc")),
            **protocol,
            "wall_time_s": round(time.time() - self.started, 3),
            "status": status,
        }
        write_json_atomic(self.path, self.results)
        self.written = True
        if trainer is not None:
            _finish_wandb(trainer.loggers, self.results)
        return self.results


def _item(value: Any) -> float | None:
    return None if value is None else float(value)


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
