"""A saved sweep state is data, checked before the runner acts on it.

``state.json`` may have been received, edited or corrupted; the runner deletes an interrupted
trial's ``run_dir`` and runs each trial's ``params`` as Hydra overrides, so before it does either:

- every ``run_dir`` must resolve (symbolic links followed) to a folder inside
  ``<sweep>/trials/``;
- every trial's parameters must be ones the sweep file names, and every ``_target_`` they reach
  Hydra with (``layer._target_=...``, or inside a dict value ``{_target_: ...}``) must be
  fastff's own (:func:`fastff.registry.conf_targets`) or one the sweep file itself gives.

The sweep file's own ``command`` runs a program by design (it is the user's code, as with
``wandb agent``); the state cannot change it (its fingerprint is checked against the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastff.registry import (
    ForeignTargetError,
    check_override_targets,
    conf_targets,
    override_targets,
)
from fastff.sweep.command import hydra_overrides
from fastff.sweep.spec import SweepError, SweepSpec
from fastff.sweep.state import SweepState, Trial


def trials_dir(sweep_dir: Path) -> Path:
    """``<sweep>/trials``, resolved: the only place a trial's run dir may be."""
    return (sweep_dir / "trials").resolve()


def run_dir_problem(trial: Trial, sweep_dir: Path) -> str | None:
    """Why ``trial.run_dir`` is not a folder inside ``<sweep>/trials/``, or None."""
    inside = trials_dir(sweep_dir)
    if not trial.run_dir:
        return "it is empty"
    resolved = Path(trial.run_dir).resolve()
    if resolved == inside or not resolved.is_relative_to(inside):
        return f"it resolves to {str(resolved)!r}, outside {str(inside)!r}"
    return None


def _file_values(spec: SweepSpec, name: str) -> list[Any]:
    parameter = spec.parameters.get(name) or {}
    values = list(parameter.get("values", []))
    if "value" in parameter:
        values.append(parameter["value"])
    return values


def params_problem(trial: Trial, spec: SweepSpec) -> str | None:
    """Why ``trial.params`` name a parameter the sweep file does not have, or None."""
    for name in trial.params:
        if name not in spec.parameters:
            return f"parameter {name!r} is not one of the sweep file's {sorted(spec.parameters)}"
    return None


def _file_targets(spec: SweepSpec) -> set[str]:
    """``_target_`` values the sweep file itself names (trusted as its command is)."""
    found = set()
    for name in spec.parameters:
        for value in _file_values(spec, name):
            found.update(str(t) for _, t in override_targets(hydra_overrides({name: value})))
    return found


def check_state(state: SweepState, sweep_dir: Path, spec: SweepSpec) -> None:
    """Refuse a state whose trials point outside the sweep or carry foreign parameters.

    Raises:
        SweepError: one line naming the trial, the key and the value; nothing was deleted or run.
    """
    state_path = sweep_dir / "state.json"
    allowed = conf_targets() | _file_targets(spec)
    for trial in state.trials:
        problem = run_dir_problem(trial, sweep_dir)
        if problem:
            raise SweepError(
                f"{state_path}: trial {trial.id} has run_dir={trial.run_dir!r}: {problem}; "
                "refused, nothing was deleted (a trial's run dir is always <sweep>/trials/<id>)"
            )
        problem = params_problem(trial, spec)
        if problem:
            raise SweepError(f"{state_path}: trial {trial.id}: {problem}; refused, nothing was run")
        try:
            check_override_targets(
                hydra_overrides(trial.params), allowed, f"{state_path}: trial {trial.id}"
            )
        except ForeignTargetError as err:
            raise SweepError(str(err)) from None
