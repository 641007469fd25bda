"""Finished results the runner did not record: a trial killed (or its runner killed) after its
``metrics.json`` said ``finished``. The runner adopts such a result instead of running the trial
again, and never deletes a finished result."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from fastff.sweep.command import hydra_overrides
from fastff.sweep.state import Trial


def _metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run dir's metrics.json if it is readable JSON of a mapping, else None."""
    try:
        results = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def finished_result(run_dir: Path) -> dict[str, Any] | None:
    """The run dir's metrics.json if it is complete and says ``finished``, else None."""
    results = _metrics(run_dir)
    return results if results is not None and results.get("status") == "finished" else None


def same_config(run_dir: Path, trial: Trial) -> bool:
    """Whether the run in ``run_dir`` was started with exactly ``trial``'s overrides (Hydra's
    ``.hydra/overrides.yaml``)."""
    try:
        recorded = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return recorded == hydra_overrides(trial.params)


def resumable(run_dir: Path, trial: Trial) -> bool:
    """Whether ``run_dir`` holds an unfinished run of exactly ``trial``'s overrides that its own
    command continues from ``checkpoints/last.ckpt`` (``fastff.train`` resumes such a run dir by
    itself), so the runner keeps it instead of starting the trial clean."""
    from fastff.training.run_dir import RESUMABLE

    results = _metrics(run_dir)
    return (
        results is not None
        and results.get("status") in RESUMABLE
        and (run_dir / "checkpoints" / "last.ckpt").is_file()
        and same_config(run_dir, trial)
    )


def commit_note(results: dict[str, Any], this_commit: str | None) -> str | None:
    """A note when the result was made at another git commit than ``this_commit``."""
    git = (results.get("provenance") or {}).get("git") or {}
    theirs = git.get("commit") if isinstance(git, dict) else None
    if not isinstance(theirs, str) or this_commit is None or theirs == this_commit:
        return None
    return f"made at git commit {theirs[:12]}, this checkout is at {this_commit[:12]}"


def adopt(trial: Trial, results: dict[str, Any], this_commit: str | None) -> None:
    """Record ``results`` (a finished metrics.json of this trial's config) as the trial's end."""
    trial.status, trial.pid = "finished", None
    trial.exit_code, trial.error = 0, None
    trial.note = commit_note(results, this_commit)
    wall = results.get("wall_time_s")
    trial.wall_time_s = float(wall) if isinstance(wall, (int, float)) else None


def keep_aside(run_dir: Path) -> Path:
    """Move ``run_dir`` to ``<run_dir>.kept-<time>`` beside it (never delete a finished result);
    returns the new path."""
    aside = run_dir.with_name(f"{run_dir.name}.kept-{datetime.now():%Y%m%d-%H%M%S-%f}")
    run_dir.rename(aside)
    return aside


def this_commit() -> str | None:
    """The git commit of this fastff checkout (what a trial's provenance records), or None."""
    import fastff
    from fastff.training.results import git_info

    return git_info(Path(fastff.__file__).parent)["commit"]
