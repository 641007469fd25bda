"""Find the runs and benchmark rows in the report's sources.

A source is one of:

- a folder, searched recursively: every ``metrics.json`` of a training run (a run dir, a local
  sweep's ``trials/<id>/``, a Hydra multirun dir), every ``bench_<mode>.csv`` of a benchmark run
  (its summary metrics.json, ``"task": "bench"``, is not a training run), and every local sweep's
  ``state.json`` (a trial that left no metrics.json is a ``missing`` run);
- a ``metrics.json`` file (one run);
- the report's own ``runs.csv`` (runs, without their histories) or ``bench.csv``, or a
  ``bench_<mode>.csv``.

A run's id is its folder relative to the source (the source folder's name for the source itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fastff.report.bench import normalize_bench
from fastff.report.errors import ReportError
from fastff.report.rows import RUN_COLUMNS, normalize_runs, row_from_metrics, row_from_trial

OTHER_COMMIT = "other_commit"
"""The flag of a sweep trial whose result the runner adopted from another git commit."""
SKIPPED_DIRS = frozenset({"wandb", "checkpoints", ".hydra", "__pycache__", ".git"})
"""Folders never searched: W&B's and Lightning's own files, Hydra's config copies."""
ALLOWED = (
    "give run folders (metrics.json inside, searched recursively), benchmark folders "
    "(bench_<mode>.csv), a report's runs.csv or bench.csv, or --wandb ENTITY/PROJECT"
)


@dataclass
class Collected:
    """What the sources hold.

    Attributes:
        runs: one row per run (``RUN_COLUMNS``), sorted by run id.
        bench: benchmark rows (the columns of ``bench_<mode>.csv`` plus ``bench_source``).
        histories: per-epoch history of each run that has one, by run id.
        from_csv: whether some runs came from a ``runs.csv`` (they have no history).
        notes: things the report should mention (files skipped and why).
    """

    runs: pd.DataFrame
    bench: pd.DataFrame
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    from_csv: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class _Found:
    rows: list[dict[str, Any]] = field(default_factory=list)
    bench: list[pd.DataFrame] = field(default_factory=list)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    from_csv: bool = False
    notes: list[str] = field(default_factory=list)


def collect(
    sources: list[Path],
    extra_runs: list[dict[str, Any]] | None = None,
    histories: dict[str, list[dict[str, Any]]] | None = None,
) -> Collected:
    """Read every source (see the module docstring).

    Args:
        sources: folders and files.
        extra_runs: rows already made (W&B runs), added to the sources' runs.
        histories: per-epoch histories of the extra runs, by run id.

    Raises:
        ReportError: a source that does not exist or is no kind of source.
    """
    found = _Found(rows=list(extra_runs or []), histories=dict(histories or {}))
    for source in sources:
        if not source.exists():
            raise ReportError(f"source {source} does not exist; {ALLOWED}")
        if source.is_dir():
            _scan_folder(source, found)
        else:
            _read_file(source, found)
    bench = pd.concat(found.bench, ignore_index=True) if found.bench else pd.DataFrame()
    return Collected(
        runs=normalize_runs(_unique_ids(found.rows)),
        bench=normalize_bench(bench),
        histories=found.histories,
        from_csv=found.from_csv,
        notes=found.notes,
    )


def _read_file(path: Path, found: _Found) -> None:
    if path.name == "metrics.json":
        _read_metrics(path, path.parent.name, found)
    elif path.suffix == ".csv":
        frame = read_csv_text(path)
        if "run_id" in frame.columns:
            found.rows.extend(frame.to_dict("records"))
            found.from_csv = True
        elif "mode" in frame.columns and "FF/FFF" in frame.columns:
            if "bench_source" not in frame.columns:
                frame.insert(0, "bench_source", path.name)
            found.bench.append(frame)
        else:
            raise ReportError(
                f"{path} is neither a runs.csv (column run_id) nor a benchmark CSV (columns mode "
                f"and FF/FFF); {ALLOWED}"
            )
    else:
        raise ReportError(f"{path} is not a folder, metrics.json or CSV file; {ALLOWED}")


def read_csv_text(path: Path) -> pd.DataFrame:
    """A CSV with every cell as text ("" for empty): numbers are converted by the caller, so a
    value reads back exactly as it was written."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise ReportError(f"cannot read {path}: {err}; {ALLOWED}") from None


def _searched(root: Path, pattern: str) -> list[Path]:
    return sorted(
        p
        for p in root.rglob(pattern)
        if p.is_file() and not SKIPPED_DIRS.intersection(p.relative_to(root).parts[:-1])
    )


def _run_id(root: Path, folder: Path) -> str:
    relative = folder.relative_to(root).as_posix()
    return root.resolve().name if relative == "." else relative


def _scan_folder(root: Path, found: _Found) -> None:
    for path in _searched(root, "metrics.json"):
        _read_metrics(path, _run_id(root, path.parent), found)
    for path in _searched(root, "bench_*.csv"):
        frame = read_csv_text(path)
        if "mode" not in frame.columns:
            frame.insert(0, "mode", path.stem.removeprefix("bench_"))
        frame.insert(0, "bench_source", _run_id(root, path.parent) + "/" + path.name)
        found.bench.append(frame)
    seen = {row["run_id"] for row in found.rows}
    for path in _searched(root, "state.json"):
        _read_sweep_state(root, path, seen, found)


def _read_metrics(path: Path, run_id: str, found: _Found) -> None:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        found.rows.append({"run_id": run_id, "status": "unreadable", "error": str(err)})
        return
    if not isinstance(metrics, dict):
        found.notes.append(f"{path}: not a run's metrics.json (skipped)")
        return
    if metrics.get("task") == "bench":
        return  # a benchmark's summary: its rows are in bench_<mode>.csv beside it
    if "status" not in metrics and "schema_version" not in metrics:
        found.notes.append(f"{path}: no status or schema_version, not a fastff run (skipped)")
        return
    found.rows.append(row_from_metrics(metrics, run_id))
    history = metrics.get("history")
    if isinstance(history, list) and history:
        found.histories[run_id] = history


def _read_sweep_state(root: Path, path: Path, seen: set[str], found: _Found) -> None:
    """Trials of a local sweep (``fastff.sweep``) that left no metrics.json: ``missing`` runs.
    A trial the runner flagged (a ``note``: e.g. a result adopted from another git commit)
    gets the flag ``other_commit`` and the note among the report's notes."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(state, dict) or "fingerprint" not in state:
        return  # not a fastff sweep's state
    rows = {row.get("run_id"): row for row in found.rows}
    for trial in state.get("trials") or []:
        if not isinstance(trial, dict):
            continue
        folder = path.parent / "trials" / str(trial.get("id"))
        run_id = _run_id(root, folder)
        note = trial.get("note")
        if isinstance(note, str) and note and run_id in rows:
            row = rows[run_id]
            row["flags"] = ";".join(f for f in (row.get("flags") or "", OTHER_COMMIT) if f)
            found.notes.append(f"{run_id}: {note} (adopted by fastff.sweep; flagged)")
        if run_id in seen or (folder / "metrics.json").is_file():
            continue
        row = row_from_trial(trial.get("params") or {}, run_id, "missing")
        row["error"] = str(trial.get("error") or f"sweep trial {trial.get('status')}")
        found.rows.append(row)


def _unique_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose ids repeat (the same relative folder in two sources) get ``#2``, ``#3``."""
    counts: dict[str, int] = {}
    out = []
    for row in rows:
        run_id = str(row.get("run_id"))
        counts[run_id] = counts.get(run_id, 0) + 1
        if counts[run_id] > 1:
            row = {**row, "run_id": f"{run_id}#{counts[run_id]}"}
        out.append(row)
    return out


def write_runs_csv(runs: pd.DataFrame, path: Path) -> Path:
    """``runs.csv``: one row per run, ``RUN_COLUMNS``."""
    runs.loc[:, list(RUN_COLUMNS)].to_csv(path, index=False)
    return path
