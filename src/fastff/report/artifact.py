"""The report as a W&B artifact (type ``report``) of a ``job_type=report`` run, offline by
default: the run lives in ``<output dir>/wandb/`` until ``wandb sync`` uploads it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

ARTIFACT_NAME = "fastff-report"


def log_report(
    files: Sequence[Path],
    output_dir: Path,
    *,
    mode: str,
    project: str,
    entity: str | None = None,
    config: dict[str, Any] | None = None,
) -> str | None:
    """Log ``files`` (under ``output_dir``, kept at their relative paths) as one artifact;
    returns the W&B run's id, or None when ``mode`` is ``disabled``.

    Raises:
        Exception: whatever W&B raises (the caller turns it into a warning: the report itself is
            written already).
    """
    if mode == "disabled":
        return None
    import wandb

    run = wandb.init(
        mode=mode,
        dir=str(output_dir),
        project=project,
        entity=entity,
        job_type="report",
        config=config or {},
        settings=wandb.Settings(silent=True, init_timeout=120),
    )
    try:
        artifact = wandb.Artifact(ARTIFACT_NAME, type="report")
        for path in files:
            artifact.add_file(str(path), name=path.relative_to(output_dir).as_posix())
        run.log_artifact(artifact)
        return run.id
    finally:
        run.finish()
