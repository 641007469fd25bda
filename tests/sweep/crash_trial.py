"""Callbacks that end a real ``fastff.train`` trial badly at its first epoch end, for the warm
worker's isolation tests (``callbacks.routing_stats._target_=crash_trial.<name>``; the
``fake_trials`` fixture puts this folder on PYTHONPATH)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback


class ExitAtEpochEnd(Callback):
    """``os._exit(3)``: no cleanup, no metrics.json update, as a segfault or OOM would end it."""

    def __init__(self, **ignored: Any) -> None:
        super().__init__()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        os.write(2, b"crash_trial: os._exit(3) at epoch end\n")
        os._exit(3)


class RaiseAtEpochEnd(ExitAtEpochEnd):
    """An uncaught exception (exit status 1, its traceback in stderr.log)."""

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        raise RuntimeError("crash_trial: boom at epoch end")


class SleepAtEpochEnd(ExitAtEpochEnd):
    """Writes ``sleeping.pid`` (its pid) into the working folder and sleeps: for a test to kill
    or interrupt it."""

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        Path("sleeping.pid").write_text(str(os.getpid()))
        print("crash_trial: sleeping", file=sys.stderr, flush=True)
        time.sleep(600)
