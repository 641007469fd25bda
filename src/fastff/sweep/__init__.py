"""Run a W&B sweep file: ``python -m fastff.sweep sweeps/table1.yaml`` (console script
``fastff-sweep``, ``make sweep SWEEP=...``).

Offline (the default) W&B's own search engine, the ``sweeps`` package, proposes trials and each
trial runs as a subprocess with the command line the W&B agent would build from the file; the
sweep's state is saved after every trial, so running the command again resumes. With a W&B server
(``--online``) the sweep is created or joined there and ``wandb agent`` runs it.

Modules, one concept each: :mod:`~fastff.sweep.spec` (load and check a sweep file),
:mod:`~fastff.sweep.command` (a trial's command line), :mod:`~fastff.sweep.search` (the
``sweeps`` package), :mod:`~fastff.sweep.state` (the saved state), :mod:`~fastff.sweep.local`
(the local runner), :mod:`~fastff.sweep.display` (progress and tables),
:mod:`~fastff.sweep.estimate` (``--dry-run``), :mod:`~fastff.sweep.online` (a W&B server),
:mod:`~fastff.sweep.cli` (the command line).
"""

from __future__ import annotations

from fastff.sweep.spec import SweepError, SweepSpec, load_spec

SWEEPS_VERSION = "0.3.0"
"""The ``sweeps`` release fastff is tested with (installed without its numpy<2 pin)."""

__all__ = ["SWEEPS_VERSION", "SweepError", "SweepSpec", "load_spec"]
