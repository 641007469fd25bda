"""``report.md``: a generated summary (runs by status, seeds, where ours and the paper's differ by
more than the seed spread), every table with its figures, the unfinished runs and notes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from fastff.report.format import DASH, integer, md_table, mean_std, number, signed
from fastff.report.rows import FINISHED, STATUSES
from fastff.report.tables import TITLES, Table

MAX_LISTED = 5
"""Largest differences named per table in the summary."""
MAX_ERROR = 120
"""Characters of a run's error shown in the list of unfinished runs."""


@dataclass
class FigureRef:
    """A figure of the report: its caption and its path relative to the output folder."""

    caption: str
    path: str


def status_counts(runs: pd.DataFrame) -> str:
    """``14: finished 10, failed 1, missing 2`` (known statuses first, in ``STATUSES`` order)."""
    counts = runs["status"].value_counts()
    order = [s for s in STATUSES if s in counts] + sorted(set(counts.index) - set(STATUSES))
    return f"{len(runs)}: " + ", ".join(f"{s} {int(counts[s])}" for s in order)


def _table_heading(table: Table) -> str:
    name = TITLES[table.kind].split(":")[0]
    return f"{name} ({table.dataset})" if table.dataset else name


def differences(table: Table) -> str | None:
    """One summary line: how many of the table's values differ from the paper's by more than the
    seed spread (|ours - paper| > std over seeds, judged where there are 2+ seeds), the largest
    ones named; None when the table has no paper column."""
    frame = table.frame
    if not table.paper_label or "n_runs" not in frame:
        return None
    judged, beyond, single = 0, [], 0
    for metric in ("M_A", "G_A"):
        if f"paper_{metric}" not in frame:
            continue
        for i, row in frame.iterrows():
            mean, std, theirs = row[f"{metric}_mean"], row[f"{metric}_std"], row[f"paper_{metric}"]
            if pd.isna(mean) or pd.isna(theirs):
                continue
            if row["n_runs"] < 2 or pd.isna(std):
                single += 1
                continue
            judged += 1
            diff = float(mean) - float(theirs)
            if abs(diff) > float(std):
                text = (
                    f"{metric} {table.labels[i]}: {mean_std(mean, std)} vs {number(theirs, 1)} "
                    f"(Δ {signed(diff)})"
                )
                beyond.append((abs(diff), text))
    if not judged and not single:
        return None
    line = f"{_table_heading(table)} vs {table.paper_label}: "
    if judged:
        line += f"{len(beyond)} of {judged} values differ by more than the seed spread"
    if beyond:
        largest = [text for _, text in sorted(beyond, key=lambda b: -b[0])[:MAX_LISTED]]
        line += " (largest: " + "; ".join(largest) + ")"
    if single:
        line += "; " if judged else ""
        line += f"{single} value(s) from one seed (spread unknown) not judged"
    if not table.same_data:
        line += "; a different data set, so only the trends compare"
    return line + "."


def _seeds_line(table: Table) -> str | None:
    frame = table.frame
    if "n_runs" not in frame:
        return None
    seeds = sorted({s for text in frame["seeds"] for s in str(text).split(",") if s}, key=int)
    counts = sorted(set(frame["n_runs"]))
    per = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    return (
        f"{_table_heading(table)}: {len(frame)} configurations, {per} finished run(s) each, "
        f"seeds {', '.join(seeds) or DASH}."
    )


def _unfinished(runs: pd.DataFrame) -> str:
    rows = runs[runs["status"] != FINISHED]
    cells = []
    for r in rows.itertuples():
        error = r.error if len(r.error) <= MAX_ERROR else r.error[: MAX_ERROR - 3] + "..."
        cells.append(
            [
                r.run_id,
                r.status,
                r.table or DASH,
                r.dataset or DASH,
                r.layer or DASH,
                integer(r.training_width if not pd.isna(r.training_width) else r.width),
                integer(r.leaf_width),
                integer(r.seed),
                error or DASH,
            ]
        )
    headers = ["run", "status", "table", "dataset", "layer", "w", "l", "seed", "error"]
    return md_table(headers, cells)


def report_markdown(
    runs: pd.DataFrame,
    tables: Sequence[Table],
    figures: dict[str, list[FigureRef]],
    notes: Sequence[str],
    sources: Sequence[str],
) -> str:
    """The text of report.md.

    Args:
        runs: every run found (``runs.csv``'s rows).
        tables: the tables built, in order.
        figures: each table's figures, by table name.
        notes: what the reader should know (tables or figures skipped and why).
        sources: the sources as given on the command line.
    """
    finished = runs[runs["status"] == FINISHED]
    lines = [
        "# fastff report",
        "",
        "Built by `python -m fastff.report` from: "
        + ", ".join(f"`{s}`" for s in sources)
        + ". Files beside this one: `tables/` (markdown and CSV), `figures/` (PNG), `runs.csv` "
        "(one row per run) and `bench.csv` (the benchmark rows used). M_A: memorization "
        "accuracy (training data), G_A: generalization accuracy (test data, best-validation "
        "model), in %; ETT: epochs to reach them; speedup: FF time / FFF time at inference.",
        "",
        "## Summary",
        "",
    ]
    summary = [f"Runs found: {status_counts(runs)}." if len(runs) else "Runs found: none."]
    unfinished = len(runs) - len(finished)
    if unfinished:
        summary.append(
            f"{unfinished} run(s) not finished: counted and listed below, never averaged in."
        )
    loose = finished[finished["table"] == ""]
    if len(loose):
        names = ", ".join(sorted({t or DASH for t in loose["task_name"]}))
        summary.append(
            f"{len(loose)} finished run(s) belong to no paper table (task_name {names}; a run "
            "belongs to a table by a tag or task_name starting with table1, table2, table3 or "
            "fig2): tabulated by training width in 'Runs by training width'."
        )
    summary += [line for t in tables if (line := _seeds_line(t))]
    summary += [line for t in tables if (line := differences(t))]
    lines += [f"- {item}" for item in summary]
    for table in tables:
        lines += ["", table.markdown.rstrip("\n"), ""]
        for figure in figures.get(table.name, []):
            lines += [f"![{figure.caption}]({figure.path})", "", f"*{figure.caption}*", ""]
    if unfinished:
        lines += ["", "## Runs not finished", "", _unfinished(runs).rstrip("\n"), ""]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
