"""A run's results as a Lightning callback: metrics.json (atomically) and the W&B summary.

The callback writes when the run starts (status ``running``: a run killed outright says so), once
the run's last stage ends (the test, or the fit when there is no test) and whenever anything raises,
from start-up on (:meth:`RunResults.guard`), so a failed or interrupted run keeps the epochs it
finished. Statuses: ``finished``, ``smoke_test`` (``fast_dev_run`` or no training batches: never a
result), ``diverged``, ``failed``, ``interrupted``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L

from fastff.atomic_json import write_json_atomic
from fastff.errors import StopRun, Terminated
from fastff.results_schema import RESULT_KEYS, SCHEMA_VERSION
from fastff.training.protocol import PaperProtocol
from fastff.training.results import percent, run_identity

log = logging.getLogger("fastff.train")


class RunResults(L.Callback):
    """Collects a run's results and writes them to ``path`` (and each W&B run's summary).

    Args:
        path: the metrics.json to write.
        protocol: the run's :class:`PaperProtocol` (M_A, ETT_M, ETT_G, history).
        static: results known before training (dataset, layer sizes, seed, config, ...). With
            a ``config``, the run's identity (:func:`~fastff.training.results.run_identity`:
            experiment, data config, layer kind, hardening, gating) is recorded from it.
        test: whether a test stage follows the fit (it then writes the final results).
        smoke_test: the run only checks the pipeline (``fast_dev_run``, no training batches): it
            ends with status ``smoke_test``, never ``finished``.
    """

    def __init__(
        self,
        path: str | Path,
        protocol: PaperProtocol,
        static: dict[str, Any],
        test: bool,
        smoke_test: bool = False,
    ) -> None:
        self.path = Path(path)
        self.protocol = protocol
        self.test = test
        self.smoke_test = smoke_test
        self.started = time.time()
        config = static.get("config")
        identity = run_identity(config, _hydra_choices()) if isinstance(config, dict) else {}
        self.results: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            **identity,
            **static,
            "M_A": None,
            "G_A": None,
            "ETT_M": None,
            "ETT_G": None,
            "wall_time_s": None,
            "status": "running",
        }
        self.written = False
        self.fallback: Path | None = None
        self.write_error: OSError | None = None

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Write metrics.json (status ``running``) now, and again with the reason if anything in
        the block raises before a trainer hook has recorded it (start-up, W&B, data loading).

        Raises:
            ResultsNotSaved: metrics.json could not be written, now (nothing else is done) or
                when the block ended (the results are in the fallback file a warning names).
        """
        self.write()
        if self.write_error is not None:
            raise self.not_saved()
        try:
            yield
        except BaseException as err:
            if self.results["status"] == "running":
                self.record_exception(err)
                self.finish(None, status_of(err))
            raise
        if self.write_error is not None:
            raise self.not_saved()

    def not_saved(self) -> ResultsNotSaved:
        """The error that ends a run whose metrics.json could not be written."""
        err = self.write_error
        reason = (err.strerror if err is not None else None) or str(err)
        return ResultsNotSaved(
            f"cannot write {self.path} ({reason}); the run's results, status failed, are in "
            f"{self.fallback}; a metrics.json written before is kept as it was"
        )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.test:
            self.finish(trainer, self.done_status)

    @property
    def done_status(self) -> str:
        return "smoke_test" if self.smoke_test else "finished"

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.results["checkpoint"] = trainer.ckpt_path

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.results["G_A"] = percent(_item(metrics.get("test/acc")))
        self.results["test_acc_soft"] = percent(_item(metrics.get("test/acc_soft")))
        self.finish(trainer, self.done_status)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.record_exception(exception)
        self.finish(trainer, status_of(exception))

    def record_exception(self, exception: BaseException) -> None:
        self.results["error"] = f"{type(exception).__name__}: {exception}"
        signum = getattr(exception, "signum", None)
        if signum is not None:
            self.results["signal"] = signal.Signals(signum).name

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
        if not is_rank_zero():
            return self.results  # rank 0 alone writes results
        self.write()
        self.written = True
        if trainer is not None:
            _finish_wandb(trainer.loggers, self.results)
        return self.results

    def write(self) -> Path:
        """Write metrics.json; if that fails, print the results and write them to a fallback
        file in the temporary folder, naming it in one warning line. Only rank 0 writes."""
        if not is_rank_zero():
            return self.path
        try:
            return write_json_atomic(self.path, self.results)
        except OSError as err:
            self.write_error = err
            if self.fallback is None:
                fd, name = tempfile.mkstemp(prefix="fastff-metrics-", suffix=".json")
                os.close(fd)
                self.fallback = Path(name)
            fallback = self.fallback
            saved = {  # the run fails: its results are not where they belong
                **self.results,
                "status": "failed",
                "error": f"cannot write {self.path}: {err.strerror or err}",
            }
            fallback.write_text(json.dumps(saved, indent=2, default=str) + "\n")
            print(json.dumps(_headline(saved), default=str), file=sys.stderr)
            print(
                f"warning: cannot write {self.path} ({err.strerror or err}); the results above "
                f"are also in {fallback}",
                file=sys.stderr,
            )
            return Path(fallback)


class ResultsNotSaved(StopRun):
    """metrics.json could not be written (a full disk, an unwritable folder): the run fails."""


def is_smoke_test(trainer_cfg: Any) -> bool:
    """Whether the trainer settings only check the pipeline: ``fast_dev_run`` or no training
    batches (``limit_train_batches=0``)."""
    return bool(trainer_cfg.get("fast_dev_run")) or trainer_cfg.get("limit_train_batches") == 0


def is_rank_zero() -> bool:
    """Whether this process is the global rank 0 (or the only process)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def status_of(exception: BaseException) -> str:
    """metrics.json's status for a run stopped by ``exception``."""
    if isinstance(exception, StopRun):
        return exception.status
    if isinstance(exception, (Terminated, KeyboardInterrupt, SystemExit)):
        return "interrupted"
    return "failed"


def _hydra_choices() -> dict[str, Any]:
    """Hydra's config-group choices of the running app (group -> config name), or {}."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)


def _headline(results: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in results.items() if k in RESULT_KEYS or k in ("epochs", "error")}


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
