"""A run dir belongs to one run: refuse to reuse a finished one, resume an unfinished one.

``ckpt_path=last`` resumes from the run dir's ``checkpoints/last.ckpt``; rerunning a killed or
failed run's command into the same run dir (the same ``hydra.run.dir``, as a requeued SLURM job or
the sweep runner does) resumes it from there without asking.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastff.errors import ConfigError

log = logging.getLogger("fastff.train")

RESUMABLE = ("running", "interrupted", "failed")
"""metrics.json statuses of a run that the same command continues from its last.ckpt."""

IGNORED_KEYS = ("ckpt_path",)
"""Config keys that may differ between a run and the command resuming it."""


def resume_checkpoint(config: dict[str, Any], output_dir: Path) -> str | None:
    """The checkpoint the run in ``output_dir`` with the resolved ``config`` starts from.

    Raises:
        ConfigError: the dir holds a finished (or diverged, or smoke-test) run, another
            configuration's run, or ``ckpt_path=last`` finds no checkpoint.
    """
    requested = config.get("ckpt_path")
    if requested not in (None, "last"):
        _check_readable(requested)
    last = output_dir / "checkpoints" / "last.ckpt"
    previous = _read_metrics(output_dir / "metrics.json")
    if previous is None:
        if requested == "last":
            raise ConfigError(f"ckpt_path=last: no checkpoint at {last}")
        if (output_dir / "checkpoints").exists():
            raise ConfigError(
                f"paths.output_dir: {output_dir} holds checkpoints of a run without metrics.json; "
                "use a new hydra.run.dir"
            )
        return requested
    status = previous.get("status")
    if status not in RESUMABLE:
        raise ConfigError(
            f"paths.output_dir: {output_dir} holds a run with status {status!r} "
            f"(metrics.json); use a new hydra.run.dir or delete that folder"
        )
    if _comparable(previous.get("config") or {}) != _comparable(config):
        raise ConfigError(
            f"paths.output_dir: {output_dir} holds an unfinished run of another configuration; "
            "rerun its own command to resume it, or use a new hydra.run.dir"
        )
    if requested not in (None, "last"):
        return requested
    if not last.is_file():
        if requested == "last":
            raise ConfigError(f"ckpt_path=last: no checkpoint at {last}")
        log.info("restarting the unfinished run in %s (it saved no checkpoint)", output_dir)
        return None
    log.info("resuming the %s run in %s from %s", status, output_dir, last)
    return str(last)


def _check_readable(path: str) -> None:
    """A checkpoint to resume from must be a fastff checkpoint whose recorded config passes the
    allow-list (:func:`fastff.registry.check_recorded_config`), like one fastff.eval loads."""
    from fastff.training.checkpoint import read_checkpoint, run_config

    try:
        run_config(read_checkpoint(path))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None


def _read_metrics(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError(
            f"paths.output_dir: {path} is unreadable; use a new hydra.run.dir"
        ) from None


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}
