"""User-error types every floor may raise: the bottom of the import graph.

This module imports nothing but the standard library, so the layers-free floors (``models``,
``data``, ``training``, ``tracking``) and the entry points (``fastff.hydra_app`` and the CLIs) all
import their errors from here; the entry points turn them into one ``error:`` line and an exit
status, and no floor below them needs to import an entry point for that.
"""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """An invalid setting; the message names the config key and what is allowed (exit status 2)."""


class LayerConfigError(ValueError):
    """A layer setting is invalid; the message names the ``layer.*`` key (exit status 2)."""


class StopRun(Exception):
    """A run that stopped for a reason one line explains (exit status 1); ``status`` is what its
    metrics.json says."""

    status = "failed"
    exit_status = 1


class Terminated(BaseException):
    """SIGTERM or SIGINT arrived (``timeout``, ``docker stop``, SLURM, Ctrl-C).

    A BaseException, so no ``except Exception`` swallows it; entry points exit with 128 + signal
    number (143 for SIGTERM, 130 for SIGINT) once the run's results are written.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")
