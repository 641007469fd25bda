"""The report: results of training runs and benchmarks as the paper's tables and figures.

``python -m fastff.report [SOURCES...]`` (console script ``fastff-report``, ``make report``)
collects runs (run folders with ``metrics.json``, local sweeps, Hydra multirun folders, W&B
projects or sweeps) and benchmark results (``bench_<mode>.csv``), and writes ``report.md`` with
the paper's Tables 1-3 and Figure 2's numbers (mean +- std over seeds, the paper's value beside
ours), the figures as PNG, ``runs.csv`` (one row per run) and ``bench.csv``; both CSVs are sources
too, and rebuild the same tables byte for byte.

Modules, one concept each: :mod:`~fastff.report.rows` (a run as one row of settings and results),
:mod:`~fastff.report.collect` (find runs and benchmark rows in folders and CSVs),
:mod:`~fastff.report.wandb_source` (runs from the W&B API), :mod:`~fastff.report.paper` (the
paper's numbers, data files under ``paper/``), :mod:`~fastff.report.bench` (which benchmark rows
give a speedup), :mod:`~fastff.report.tables` (one module per table),
:mod:`~fastff.report.entropy` (node entropy per tree level from the runs' histories),
:mod:`~fastff.report.figures` (the plots), :mod:`~fastff.report.format` (cells and markdown
tables), :mod:`~fastff.report.markdown` (``report.md``), :mod:`~fastff.report.artifact` (the W&B
artifact), :mod:`~fastff.report.build` (the whole report from collected results),
:mod:`~fastff.report.cli` (the command line). Importing the package loads neither torch nor
matplotlib.
"""

from __future__ import annotations

from fastff.report.errors import ReportError

__all__ = ["ReportError"]
