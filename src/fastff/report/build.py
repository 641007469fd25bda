"""The whole report from collected results: tables, figures, runs.csv, bench.csv, report.md.

Output folder layout::

    report.md
    tables/<name>.md, tables/<name>.csv     (table1_<dataset>, table2_..., table3_..., fig2_...,
                                             speed)
    figures/<name>.png                      (table1_<dataset>, fig2_<dataset>, speed_<device>_
                                             <dtype>, entropy_<table>_<dataset>)
    runs.csv, bench.csv

``tables/`` and ``figures/`` belong to the report: their old .md, .csv and .png files are removed
first, so a folder never mixes two reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fastff.report import entropy, figures, paper
from fastff.report.collect import ALLOWED, Collected, write_runs_csv
from fastff.report.errors import ReportError
from fastff.report.markdown import FigureRef, report_markdown
from fastff.report.rows import TABLES
from fastff.report.tables import Built, Table, build_tables


@dataclass
class Report:
    """What was written.

    Attributes:
        output_dir: the output folder.
        markdown: report.md.
        tables: the tables built.
        figures: the figures written, by table name.
        notes: notes in report.md.
        files: every file written.
    """

    output_dir: Path
    markdown: Path
    tables: list[Table]
    figures: dict[str, list[FigureRef]]
    notes: list[str]
    files: list[Path] = field(default_factory=list)


def _clear(folder: Path, suffixes: Sequence[str]) -> None:
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and path.suffix in suffixes:
                path.unlink()


def _prepare(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ReportError(
            f"-o/--output-dir {output_dir} is a file; give a folder (new or a report)"
        )
    try:
        for sub in ("tables", "figures"):
            (output_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(
            f"-o/--output-dir {output_dir}: cannot create it ({err.strerror or err}); give a "
            "writable folder"
        ) from None
    _clear(output_dir / "tables", (".md", ".csv"))
    _clear(output_dir / "figures", (".png",))


def write_tables(built: Built, output_dir: Path) -> list[Path]:
    """``tables/<name>.md`` and ``.csv`` of every table."""
    paths = []
    for table in built.tables:
        md = output_dir / "tables" / f"{table.name}.md"
        md.write_text(table.markdown.rstrip("\n") + "\n")
        csv = output_dir / "tables" / f"{table.name}.csv"
        table.frame.to_csv(csv, index=False)
        paths += [md, csv]
    return paths


def _entropy_figures(
    collected: Collected, tables: Sequence[Table], output_dir: Path
) -> tuple[dict[str, list[FigureRef]], list[str]]:
    out: dict[str, list[FigureRef]] = {}
    shown = [t for t in tables if t.kind in TABLES]
    if not shown:
        return out, []
    if not collected.histories:
        why = (
            "runs.csv holds no per-epoch histories"
            if collected.from_csv
            else "no run has a per-epoch history"
        )
        return out, [
            f"Node entropy figures (Figures 5-6) skipped: {why}; give the run folders "
            "(metrics.json) to draw them."
        ]
    all_curves = entropy.curves(collected.runs, collected.histories)
    for table in shown:
        part = all_curves[
            (all_curves["table"] == table.kind) & (all_curves["dataset"] == table.dataset)
        ]
        if part.empty:
            continue
        title = f"{table.kind} on {table.dataset}"
        path = output_dir / "figures" / f"entropy_{table.name}.png"
        figures.save(figures.entropy_figure(part, title), path)
        caption = (
            f"Mean node entropy per tree level over epochs, {title} (Figures 5-6; mean over "
            "hosted layers and seeds, up to the last epoch all of a configuration's runs reached)"
        )
        out.setdefault(table.name, []).append(FigureRef(caption, f"figures/{path.name}"))
    notes = []
    if collected.from_csv:
        notes.append(
            "Runs read from runs.csv have no history: the entropy figures show only runs read "
            "from metrics.json or W&B."
        )
    return out, notes


def _table_figures(
    tables: Sequence[Table], bench: pd.DataFrame, output_dir: Path
) -> dict[str, list[FigureRef]]:
    out: dict[str, list[FigureRef]] = {}
    for table in tables:
        figure, caption = None, ""
        if table.kind == "table1":
            figure = figures.table1_figure(table.frame, table.paper_label)
            caption = (
                f"Table 1 on {table.dataset}: M_A and G_A vs training width per leaf width l, "
                "FF in black (error bars: std over seeds)"
            )
        elif table.kind == "fig2":
            figure = figures.fig2_figure(table.frame)
            caption = f"Figure 2 on {table.dataset}: FFF vs FF at equal inference size"
        elif table.kind == "runs":
            figure = figures.runs_figure(table.frame)
            caption = (
                f"Runs of no paper table on {table.dataset}: M_A and G_A vs training width, one "
                "line per combination of the settings that vary (error bars: std over seeds)"
            )
        if figure is not None:
            path = figures.save(figure, output_dir / "figures" / f"{table.name}.png")
            out.setdefault(table.name, []).append(FigureRef(caption, f"figures/{path.name}"))
        if table.kind == "speed":
            claims = paper.load("speed").set_index("ratio")["value"].to_dict()
            rows = bench[bench["mode"] == "paper_fig3"]
            for (device, dtype), group in rows.groupby(["device", "dtype"], sort=True):
                name = f"speed_{device}_{dtype}.png"
                figures.save(figures.speed_figure(group, claims), output_dir / "figures" / name)
                caption = (
                    f"Figures 3-4: inference time of FF, MoE and FFF vs training width "
                    f"({device}, {dtype})"
                )
                out.setdefault(table.name, []).append(FigureRef(caption, f"figures/{name}"))
    return out


def build_report(
    collected: Collected,
    output_dir: Path,
    which: str = "all",
    sources: Sequence[str] = (),
) -> Report:
    """Write the report of ``collected`` into ``output_dir``.

    Raises:
        ReportError: no runs or benchmark rows at all; a table asked for that the runs do not
            allow (see :func:`fastff.report.tables.build_tables`); an unusable output folder.
    """
    if collected.runs.empty and collected.bench.empty:
        where = ", ".join(sources) or "the sources"
        raise ReportError(f"no runs or benchmark results found in {where}; {ALLOWED}")
    built = build_tables(collected.runs, collected.bench, which)
    _prepare(output_dir)
    files = write_tables(built, output_dir)
    notes = list(collected.notes) + list(built.notes)
    figure_refs = _table_figures(built.tables, collected.bench, output_dir)
    entropy_refs, entropy_notes = _entropy_figures(collected, built.tables, output_dir)
    for name, refs in entropy_refs.items():
        figure_refs.setdefault(name, []).extend(refs)
    notes += entropy_notes
    if which in ("all", "speed") and not any(t.kind == "speed" for t in built.tables):
        notes.append(
            "Figures 3-4 (inference speed): no bench_paper_fig3.csv in the sources "
            "(python -m fastff.bench mode=paper_fig3)."
        )
    files.append(write_runs_csv(collected.runs, output_dir / "runs.csv"))
    bench_csv = output_dir / "bench.csv"
    if collected.bench.empty:
        bench_csv.unlink(missing_ok=True)  # an earlier report's
    else:
        collected.bench.to_csv(bench_csv, index=False)
        files.append(bench_csv)
    markdown = output_dir / "report.md"
    markdown.write_text(
        report_markdown(collected.runs, built.tables, figure_refs, notes, list(sources))
    )
    files.append(markdown)
    files += [output_dir / ref.path for refs in figure_refs.values() for ref in refs]
    return Report(output_dir, markdown, built.tables, figure_refs, notes, files)
