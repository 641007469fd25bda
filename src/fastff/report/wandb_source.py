"""Runs from a W&B project or sweep (``--wandb ENTITY/PROJECT [--sweep ID]``) through the public
API, ``wandb.Api()``, turned into the same rows as local runs.

A training run's W&B config is its resolved Hydra config and its summary holds the result keys
of metrics.json (``fastff.results_schema.RESULT_KEYS``), so :func:`run_metrics` rebuilds a
metrics.json-like dict of both and :func:`fastff.report.rows.row_from_metrics` makes the row.
The per-epoch node entropies come from the run's history (``train/entropy/<layer>/level_<m>``
with ``epoch``, 0-based) for finished FFF runs. The run's id is the W&B run id.

Offline runs (``--wandb-offline PATH``: the ``run-<id>.wandb`` files a run with
``logger.wandb.mode=offline`` writes, never synced) are read without a server by
:func:`fastff.tracking.wandb_offline.read_run` and become rows the same way
(:func:`collect_wandb_offline`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastff.report.errors import ReportError
from fastff.report.rows import FINISHED, row_from_metrics
from fastff.results_schema import RESULT_KEYS

SUMMARY_KEYS = (*RESULT_KEYS, "num_experts", "expert_width", "k", "epochs", "error")
"""Summary keys read: the training's result keys, plus the MoE sizes and a few extras where a
run's summary has them."""
STATES = {
    "finished": "finished",
    "running": "running",
    "crashed": "failed",
    "failed": "failed",
    "killed": "interrupted",
    "preempted": "interrupted",
}
"""W&B run states as metrics.json statuses (for runs whose summary has no status)."""


def _plain(mapping: Any) -> dict[str, Any]:
    """A W&B config or summary as a plain dict (the API's objects are dict-like)."""
    if mapping is None:
        return {}
    raw = getattr(mapping, "_json_dict", None)
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        return dict(mapping.items())
    except (AttributeError, TypeError):
        return {}


def run_metrics(run: Any) -> dict[str, Any]:
    """A metrics.json-like dict of a W&B run: its summary's result keys, ``config``, ``status``
    (the summary's; else from the run's state) and the git commit."""
    config = _plain(getattr(run, "config", None))
    config = {k: v for k, v in config.items() if not str(k).startswith("_wandb")}
    summary = _plain(getattr(run, "summary", None))
    metrics: dict[str, Any] = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    state = str(getattr(run, "state", "") or "")
    status = metrics.get("status")
    if not status or (status == "running" and state in STATES and state != "running"):
        metrics["status"] = STATES.get(state, state or "running")
    if "tags" not in config and getattr(run, "tags", None):
        config["tags"] = list(run.tags)
    metrics["config"] = config
    commit = getattr(run, "commit", None)
    if not commit:
        metadata = getattr(run, "metadata", None) or {}
        commit = (metadata.get("git") or {}).get("commit") if isinstance(metadata, dict) else None
    metrics["provenance"] = {"git": {"commit": commit}}
    return metrics


def run_history(run: Any) -> list[dict[str, Any]]:
    """The per-epoch node entropies of a run (history entries like metrics.json's); empty when
    the history cannot be read."""
    by_epoch: dict[int, dict[str, Any]] = {}
    try:
        rows = run.scan_history()
        for row in rows:
            entropies = {
                k.removeprefix("train/"): v
                for k, v in row.items()
                if str(k).startswith("train/entropy/") and v is not None
            }
            if entropies and row.get("epoch") is not None:
                epoch = int(row["epoch"]) + 1
                by_epoch.setdefault(epoch, {"epoch": epoch}).update(entropies)
    except Exception:  # a history W&B cannot give: the run keeps its row, without curves
        return []
    return [by_epoch[e] for e in sorted(by_epoch)]


def collect_wandb(
    path: str, sweep: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Rows (and histories, by run id) of the runs of W&B project ``path`` (``ENTITY/PROJECT``),
    or of its sweep ``sweep``.

    Raises:
        ReportError: a malformed path, or W&B cannot be reached or has no such project or sweep.
    """
    parts = path.split("/")
    if len(parts) != 2 or not all(parts):
        raise ReportError(f"--wandb {path}: give ENTITY/PROJECT (e.g. my-team/fastff)")
    try:
        import wandb

        api = wandb.Api(timeout=60)
        runs = list(api.sweep(f"{path}/{sweep}").runs if sweep else api.runs(path))
    except Exception as err:  # no login, no network, no such project: one line
        what = f"sweep {sweep} of {path}" if sweep else f"project {path}"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ReportError(
            f"--wandb: cannot read the runs of {what} ({first}); log in with `wandb login` and "
            "check ENTITY/PROJECT (and --sweep ID), or give local run folders"
        ) from None
    return _rows_of(runs)


def _rows_of(
    runs: Iterable[Any],
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Rows of W&B runs (API runs or :class:`OfflineRunView`) and the finished FFF runs'
    histories, by run id."""
    rows, histories = [], {}
    for run in runs:
        run_id = str(getattr(run, "id", "") or getattr(run, "name", ""))
        row = row_from_metrics(run_metrics(run), run_id)
        rows.append(row)
        if row["status"] == FINISHED and row["layer"] == "fff":
            history = run_history(run)
            if history:
                histories[run_id] = history
    return rows, histories


class OfflineRunView:
    """An offline W&B run (:class:`fastff.tracking.wandb_offline.OfflineRun`) seen as the
    public API's run: what :func:`run_metrics` and :func:`run_history` read."""

    def __init__(self, run: Any) -> None:
        self.id = run.run_id or run.path.stem.removeprefix("run-")
        self.config = run.config
        self.summary = run.summary
        # no exit record: still running (or killed); else the exit code says how it ended
        self.state = (
            "running" if run.exit_code is None else "finished" if run.exit_code == 0 else "failed"
        )
        self.tags: list[str] = []
        self.commit = None
        self._history = run.history

    def scan_history(self) -> Iterator[dict[str, Any]]:
        return iter(self._history)


def offline_run_files(paths: Sequence[Path]) -> list[Path]:
    """The ``run-<id>.wandb`` files of ``paths``: files given directly, and every one under a
    folder given (a run dir, its ``wandb/`` folder, a sweep folder).

    Raises:
        ReportError: a path that does not exist, or no offline run anywhere in ``paths``.
    """
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ReportError(f"--wandb-offline {path}: does not exist")
        found = [path] if path.is_file() else sorted(path.rglob("run-*.wandb"))
        if not found:
            raise ReportError(
                f"--wandb-offline {path}: no offline W&B run (wandb/offline-run-*/run-*.wandb) "
                "in it; give a run folder, its wandb/ folder or a .wandb file"
            )
        files.extend(found)
    return files


def collect_wandb_offline(
    paths: Sequence[Path],
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Rows (and histories, by W&B run id) of the offline W&B runs in ``paths`` (see
    :func:`offline_run_files`), read without a server; a run still being written is read up to
    its last complete record.

    Raises:
        ReportError: a missing path, no offline run, or a file that is not a readable W&B run.
    """
    from fastff.tracking.wandb_offline import read_run

    runs = []
    for file in offline_run_files(paths):
        try:
            runs.append(OfflineRunView(read_run(file, allow_truncated_tail=True)))
        except ValueError as err:
            raise ReportError(f"--wandb-offline: {err}") from None
    return _rows_of(runs)
