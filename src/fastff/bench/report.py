"""Benchmark outputs: the printed table, the CSV, the plots and the W&B run."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastff.bench import compact
from fastff.bench.cases import COLUMN, compared_kinds, speedup_column

TIME_COLUMNS = [f"t_{label}_ms" for label in COLUMN.values()]
SPEEDUP_COLUMNS = [*(speedup_column(kind) for kind in compared_kinds()), "ref/FFF", "FF/FFF onnx"]
IDEAL_COLUMNS = [f"ideal {speedup_column(kind)}" for kind in compared_kinds()]
SHOWN = [
    "device",
    "dtype",
    "part",
    "batch",
    "depth",
    "leaf_width",
    "training_width",
    *TIME_COLUMNS,
    *SPEEDUP_COLUMNS,
    "ideal FF/FFF",
    "fff_strategy",
    "check",
    *compact.SPEEDUP_COLUMNS,
    *compact.ERROR_COLUMNS,
    "compact_strategy",
    "check compact",
]


TABLE_WIDTH = 100
"""The printed table's largest width in characters: wider tables are split into several, each
repeating the columns that tell the rows apart (the CSV has every column)."""

KEY_COLUMNS = ["device", "dtype", "part", "batch", "depth", "leaf_width", "training_width"]
"""Columns that tell a row apart; one value shared by every row goes to the title instead."""

HEADERS = {
    "training_width": "width",
    "leaf_width": "leaf",
    "ideal FF/FFF": "ideal",
    "fff_strategy": "strategy",
    "compact_strategy": "compact strategy",
}
"""Short printed headers (the CSV keeps the full names)."""

CHECK_CELL = 12
"""Longer ``check`` texts (a failed check's reason) are printed under the table."""


def _format(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def header(column: str) -> str:
    """The printed header of a CSV column: ``t_FF_onnx_ms`` -> ``FF onnx ms``, ``training_width``
    -> ``width``; others unchanged."""
    if column in HEADERS:
        return HEADERS[column]
    if column.startswith("t_") and column.endswith("_ms"):
        return column[2:-3].replace("_", " ") + " ms"
    return column


def _check_cell(value: Any) -> str:
    text = _format(value)
    return text if len(text) <= CHECK_CELL else "failed (below)"


def _where(row: pd.Series) -> str:
    return f"{row['device']} batch {row['batch']} depth {row['depth']}, leaf {row['leaf_width']}"


def _table(frame: pd.DataFrame, columns: list[str], title: str | None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left")
    for column in columns:
        justify = "left" if column.startswith("check") else "right"
        table.add_column(escape(header(column)), justify=justify, no_wrap=True)
    for _, row in frame.iterrows():
        cells = [
            escape(_check_cell(row[c]) if c.startswith("check") else _format(row[c]))
            for c in columns
        ]
        style = None if row.get("check", "ok") in ("ok", "not checked") else "red"
        table.add_row(*cells, style=style)
    return table


def print_table(frame: pd.DataFrame, title: str, console: Console | None = None) -> None:
    """Print the main columns as rich tables at most :data:`TABLE_WIDTH` (or the terminal's
    width) wide, then every failed check's reason and every skip and error note."""
    console = console or Console()
    width = min(console.width, TABLE_WIDTH)
    columns = [c for c in SHOWN if c in frame.columns and frame[c].notna().any()]
    columns += [c for c in frame.columns if c.startswith("t_FFF[")]
    shared = [c for c in KEY_COLUMNS if c in columns and len(frame) and frame[c].nunique() == 1]
    named = [c for c in shared if c != "dtype"]  # the title names the dtype
    if named:
        title += ": " + ", ".join(f"{header(c)} {_format(frame[c].iloc[0])}" for c in named)
    keys = [c for c in KEY_COLUMNS if c in columns and c not in shared]
    values = [c for c in columns if c not in KEY_COLUMNS]
    groups: list[list[str]] = [[]]
    for column in values:  # greedy: as many value columns per table as fit the width
        candidate = _table(frame, keys + groups[-1] + [column], None)
        if groups[-1] and console.measure(candidate).maximum > width:
            groups.append([])
        groups[-1].append(column)
    console.print(title, style="bold", soft_wrap=True)
    for group in groups:
        console.print(_table(frame, keys + group, None), width=width)
    for _, row in frame.iterrows():
        for column in (c for c in columns if c.startswith("check")):
            if len(_format(row[column])) > CHECK_CELL:
                reason = escape(_format(row[column]))
                console.print(f"[red]{_where(row)}: {column} {reason}[/red]", width=width)
        if isinstance(row.get("notes"), str) and row["notes"]:
            note = escape(row["notes"])
            console.print(f"[yellow]{_where(row)}:[/yellow] {note}", width=width)


def write_csv(frame: pd.DataFrame, run_dir: Path, mode: str) -> Path:
    """Write ``bench_<mode>.csv`` into the run dir atomically (a reader or an interruption never
    sees half a file); returns its path. The runner rewrites it after every case."""
    path = run_dir / f"bench_{mode}.csv"
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def _x_column(frame: pd.DataFrame) -> str:
    """The plots' x axis: the training width, or the leaf width where every row shares one
    training width (the vit mode)."""
    if "training_width" in frame and frame["training_width"].nunique() > 1:
        return "training_width"
    return "leaf_width"


def _groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One curve group per (device, dtype, batch, leaf width) (per part instead of leaf width
    where the x axis is the leaf width), sorted along the x axis."""
    x = _x_column(frame)
    keys = ["device", "dtype", "batch", "part" if "part" in frame else "leaf_width"]
    if x == "leaf_width":
        keys = [key for key in keys if key != "leaf_width"]
    groups = []
    for values, group in frame.groupby(keys, sort=True):
        label = ", ".join(f"{k} {v}" for k, v in zip(keys, values, strict=True))
        groups.append((label, group.sort_values(x)))
    return groups


def write_plots(frame: pd.DataFrame, run_dir: Path, mode: str) -> list[Path]:
    """Time and speedups vs training width (log-log; vs leaf width in the vit mode), one panel per
    group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(frame)
    if not groups:
        return []
    x = _x_column(frame)
    paths = []
    for kind, columns in (("times", TIME_COLUMNS), ("speedups", SPEEDUP_COLUMNS)):
        columns = [c for c in columns if c in frame.columns] + (
            [c for c in frame.columns if c.startswith("t_FFF[")] if kind == "times" else []
        )
        figure, axes = plt.subplots(
            1, len(groups), figsize=(5 * len(groups), 4), squeeze=False, constrained_layout=True
        )
        for axis, (label, group) in zip(axes[0], groups, strict=True):
            for column in columns:
                values = group[column].astype(float)
                if values.notna().any():
                    axis.plot(group[x], values, marker="o", label=column)
            if kind == "speedups":
                for column in IDEAL_COLUMNS:
                    if column in group and group[column].notna().any():
                        axis.plot(group[x], group[column], linestyle="--", label=column)
                axis.axhline(1.0, color="grey", linewidth=0.8)
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel(x.replace("_", " "))
            axis.set_ylabel("median time per call (ms)" if kind == "times" else "speedup (x)")
            axis.set_title(label, fontsize=9)
            axis.grid(True, which="both", alpha=0.3)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=7)
        path = run_dir / f"bench_{mode}_{kind}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


def log_wandb(
    frame: pd.DataFrame,
    plots: list[Path],
    *,
    mode: str,
    project: str,
    run_dir: Path,
    config: dict,
    summary: dict | None = None,
) -> None:
    """One W&B run (job_type bench): the results table, the plots as images and ``summary`` (the
    headline speedups, so a W&B sweep sees its metric)."""
    import wandb

    run = wandb.init(
        mode=mode,
        dir=str(run_dir),
        project=project,
        config=config,
        job_type="bench",
        settings=wandb.Settings(silent=True),  # no banner or summary lines on the terminal
    )
    try:
        payload: dict[str, Any] = {"results": wandb.Table(dataframe=frame)}
        payload.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
        run.log(payload)
        if summary:
            run.summary.update(summary)
    finally:
        run.finish()
