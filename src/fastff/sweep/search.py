"""Trial proposals from W&B's own search engine, the ``sweeps`` package (grid, random, bayes)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from fastff.sweep.spec import SweepError, SweepSpec

INSTALL_HINT = "run `make install`, or `pip install --no-deps sweeps==0.3.0`"
STATES = {"pending": "pending", "running": "running", "finished": "finished", "failed": "failed"}


def import_sweeps() -> ModuleType:
    """The ``sweeps`` package (import warnings about its pydantic v1-style config silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module("sweeps")
        except ImportError as err:
            raise SweepError(f"the sweeps package is missing ({err}): {INSTALL_HINT}") from None


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays (which ``sweeps`` may return) as Python values."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):
        return value.tolist() if getattr(value, "ndim", 0) else value.item()
    return value


def flat_params(run_config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"value": 1}}`` (a W&B run config) -> ``{"a": 1}``."""
    return {name: plain(entry["value"]) for name, entry in run_config.items()}


def as_run_config(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"a": 1}`` -> ``{"a": {"value": 1}}``, the form W&B hands to an agent."""
    return {name: {"value": value} for name, value in params.items()}


def _sweep_run(sweeps: ModuleType, trial: Any, metric: str | None) -> Any:
    summary = {}
    if metric and trial.metric is not None:
        summary[metric] = trial.metric
    return sweeps.SweepRun(
        name=trial.id,
        state=STATES[trial.status],
        config=as_run_config(trial.params),
        summary_metrics=summary,
    )


def propose(spec: SweepSpec, trials: Sequence[Any], n: int = 1) -> list[dict[str, Any]]:
    """Up to ``n`` new trials' parameters, given the sweep's ``trials`` so far (each with
    ``id``, ``params``, ``status`` and ``metric``); fewer when a grid is exhausted."""
    sweeps = import_sweeps()
    runs = [_sweep_run(sweeps, t, spec.metric_name) for t in trials]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            proposals = sweeps.next_runs(spec.config, runs, validate=True, n=n)
        except Exception as err:  # the engine's own errors name the bad setting
            raise SweepError(f"{spec.path}: the sweeps engine refused it: {err}") from None
    return [flat_params(run.config) for run in proposals if run is not None]


def grid_size(spec: SweepSpec) -> int:
    """The number of points of a grid sweep."""
    size = 1
    for parameter in spec.parameters.values():
        if "values" in parameter:
            size *= len(parameter["values"])
        elif "min" in parameter and "max" in parameter and "value" not in parameter:
            size *= int(parameter["max"]) - int(parameter["min"]) + 1
    return size
