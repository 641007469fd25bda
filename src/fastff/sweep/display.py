"""What a person sees: a rich progress bar while trials run, a table of every trial at the end."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fastff.sweep.state import SweepState, Trial


def progress_bar(console: Console) -> Progress:
    """Trials done of the total, then running / failed counts and the best metric so far."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )


def format_metric(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def status_line(state: SweepState) -> str:
    best = state.best()
    metric = (state.metric or {}).get("name", "metric")
    text = f"running {state.count('running')} · failed {state.count('failed')}"
    if best is not None:
        text += f" · best {metric} {format_metric(best.metric)} ({best.id})"
    return text


def _short(value: Any) -> str:
    """A parameter value for a table cell (escaped: ``[a,b]`` is not rich markup)."""
    text = str(value)
    return escape(text if len(text) <= 24 else text[:21] + "...")


def trials_table(
    state: SweepState, trials: Sequence[Trial] | None = None, title: str | None = None
) -> Table:
    """A table of ``trials`` (default: all): parameters that vary, status, metric, time, error."""
    trials = state.trials if trials is None else trials
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    varying = [n for n in names if len({repr(t.params.get(n)) for t in trials}) > 1] or names
    metric = (state.metric or {}).get("name", "metric")
    table = Table(title=title or f"sweep {state.name}", show_lines=False)
    table.add_column("trial")
    for name in varying:
        table.add_column(name)
    table.add_column("status")
    table.add_column(metric, justify="right")
    table.add_column("time s", justify="right")
    table.add_column("note")
    colours = {"finished": "green", "failed": "red", "running": "yellow", "pending": "dim"}
    for trial in trials:
        note = ""
        if trial.status == "failed":
            note = escape(f"exit {trial.exit_code}: {trial.error or ''}")
        table.add_row(
            trial.id,
            *(_short(trial.params.get(n, "")) for n in varying),
            f"[{colours.get(trial.status, 'white')}]{trial.status}[/]",
            format_metric(trial.metric),
            "-" if trial.wall_time_s is None else f"{trial.wall_time_s:.1f}",
            note,
        )
    return table
