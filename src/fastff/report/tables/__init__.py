"""The paper's tables from our runs: mean +- std over seeds, the paper's value beside ours.

Every table is built from the finished runs of one experiment (``table`` column of the runs) on
one dataset, as a frame (the CSV file) and a markdown text in the paper's layout followed by a
table per configuration with the paper's numbers and the differences. Unfinished runs are never
averaged in (the report lists them). One module per table: :mod:`.table1`, :mod:`.table2`,
:mod:`.table3`, :mod:`.fig2` (Figure 2's numbers) and :mod:`.speed` (Figures 3-4's ratios);
finished runs of no paper table get :mod:`.by_width` (accuracy vs width, grouped by what varies);
:mod:`.common` holds what they share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from fastff.report.errors import ReportError
from fastff.report.format import DASH
from fastff.report.rows import FINISHED, TABLES
from fastff.report.tables import by_width, fig2, speed, table1, table2, table3
from fastff.report.tables.common import TITLES, Table, aggregate

__all__ = ["CHOICES", "TITLES", "Built", "Table", "aggregate", "build_tables"]

CHOICES = (*TABLES, "speed", "runs", "all")
"""Values of ``--table`` (``runs``: the finished runs that belong to no paper table, by width)."""
LAYERS = {"table1": ("ff", "fff"), "table2": ("ff", "moe", "fff"), "fig2": ("ff", "fff")}
"""The layers each table compares (Table 3: every run)."""


@dataclass
class Built:
    """The tables built, and notes for report.md (tables skipped and why)."""

    tables: list[Table]
    notes: list[str]


BUILDERS: dict[str, Callable[[pd.DataFrame, pd.DataFrame, str], Table]] = {
    "table1": table1.build,
    "table2": table2.build,
    "table3": table3.build,
    "fig2": fig2.build,
}


def experiments(runs: pd.DataFrame) -> list[tuple[str, int]]:
    """The distinct experiments among ``runs`` (task name, model, training protocol), each as a
    description and its number of runs."""
    counts = runs.groupby(["task_name", "model", "protocol"], sort=True).size()
    return [
        (f"task_name {t or DASH!r}, model {m or DASH}, {p or 'protocol unknown'}", int(n))
        for (t, m, p), n in counts.items()
    ]


def mixed(table: str, dataset: str, runs: pd.DataFrame) -> str | None:
    """A sentence naming the experiments when ``runs`` (one table, one dataset) mix several;
    None when they are one experiment."""
    found = experiments(runs)
    if len(found) <= 1:
        return None
    listed = "; ".join(f"{desc} ({n} runs)" for desc, n in found)
    return f"{table} on {dataset} mixes {len(found)} experiments ({listed})"


def build_tables(runs: pd.DataFrame, bench: pd.DataFrame, which: str = "all") -> Built:
    """Every table ``which`` asks for (``all``: every table the runs allow).

    Raises:
        ReportError: ``which`` names one table and its runs are missing or mix experiments
            (with ``all`` such a table is skipped with a note instead).
    """
    if which not in CHOICES:
        raise ReportError(f"--table {which}: choose one of {', '.join(CHOICES)}")
    finished = runs[runs["status"] == FINISHED]
    tables: list[Table] = []
    notes: list[str] = []
    wanted = TABLES if which == "all" else tuple(t for t in TABLES if t == which)
    for table in wanted:
        sub = finished[finished["table"] == table]
        if table in LAYERS:
            sub = sub[sub["layer"].isin(LAYERS[table])]
        if sub.empty:
            if which == table:
                found = sorted({t for t in finished["table"] if t}) or ["none"]
                raise ReportError(
                    f"--table {table}: no finished runs of {table} in the sources (a run belongs "
                    f"to a table by a tag or task_name starting with {table}; tables found: "
                    f"{', '.join(found)})"
                )
            continue
        for dataset in sorted(set(sub["dataset"])):
            part = sub[sub["dataset"] == dataset]
            problem = mixed(table, dataset, part)
            if problem and which == table:
                raise ReportError(
                    f"--table {table}: {problem}; a table averages the runs of one experiment: "
                    "give one experiment's run folders (e.g. one sweep's folder) as sources"
                )
            if problem:
                notes.append(f"Skipped: {problem}. Report them one experiment at a time.")
                continue
            tables.append(BUILDERS[table](part, bench, dataset))
    if which in ("runs", "all"):
        loose = finished[finished["table"] == ""]
        if loose.empty and which == "runs":
            raise ReportError(
                "--table runs: every finished run belongs to a paper table (or there are none); "
                "use --table all"
            )
        for dataset in sorted(set(loose["dataset"])):
            tables.append(by_width.build(loose[loose["dataset"] == dataset], dataset))
    if which in ("speed", "all"):
        built = speed.build(bench)
        if built is not None:
            tables.append(built)
        elif which == "speed":
            raise ReportError(
                "--table speed needs benchmark rows of mode paper_fig3 (bench_paper_fig3.csv, "
                "from python -m fastff.bench mode=paper_fig3); the sources have none"
            )
    return Built(tables, notes)
