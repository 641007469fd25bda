"""The command line: ``python -m fastff.report [SOURCES...] [options]`` (``fastff-report``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from fastff.report.errors import ReportError
from fastff.report.tables import CHOICES

if TYPE_CHECKING:
    import pandas as pd

    from fastff.report.build import Report

DEFAULT_SOURCE = Path("outputs")
DEFAULT_OUTPUT = Path("outputs/report")
WANDB_MODES = ("offline", "online", "disabled")

EXAMPLES = """\
examples:
  fastff-report outputs/sweeps/table1_digits               the runs of a local sweep
  fastff-report outputs/sweeps/table1_mnist5k outputs/bench/<run> --table table1
                                                          Table 1 with the speedup column
  fastff-report docs/results/runs docs/results/bench -o docs/results/report
  fastff-report out/runs.csv out/bench.csv -o rebuilt      the same tables from a report's CSVs
  fastff-report --wandb my-team/fastff --sweep abc123      the runs of a W&B sweep
  fastff-report --wandb-offline outputs/train/runs         offline W&B runs, never synced

sources: folders are searched recursively for runs (metrics.json: run dirs, sweep folders, Hydra
multirun folders) and benchmark results (bench_<mode>.csv); a report's runs.csv and bench.csv are
sources too. Runs that did not finish are counted and listed, never averaged in.

exit status: 0 report written, 2 bad input (a missing source, no runs, a table the runs do not
allow), 130 stopped.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (``error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fastff-report",
        description=(
            "Turn training runs and benchmark results into the paper's tables (markdown and CSV, "
            "mean +- std over seeds beside the paper's numbers) and figures (PNG), with a "
            "report.md that puts them together."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "sources",
        nargs="*",
        type=Path,
        help=f"run folders, benchmark folders, runs.csv or bench.csv (default: {DEFAULT_SOURCE}/)",
    )
    p.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where the report goes (default {DEFAULT_OUTPUT}); its tables/ and figures/ are "
        "rewritten",
    )
    p.add_argument(
        "--table",
        choices=CHOICES,
        default="all",
        help="one table (an error if its runs are missing or mix experiments) or all (default: "
        "every table the runs allow)",
    )
    wandb = p.add_argument_group("Weights & Biases")
    wandb.add_argument(
        "--wandb",
        metavar="ENTITY/PROJECT",
        default=None,
        help="also read the runs of this W&B project (needs `wandb login` and network)",
    )
    wandb.add_argument("--sweep", metavar="ID", default=None, help="only this sweep's runs")
    wandb.add_argument(
        "--wandb-offline",
        metavar="PATH",
        type=Path,
        action="append",
        default=[],
        help="also read the offline W&B runs (run-<id>.wandb) in PATH, without a server "
        "(repeatable)",
    )
    wandb.add_argument(
        "--wandb-mode",
        choices=WANDB_MODES,
        default=None,
        help="log the report as a W&B artifact: offline (default; WANDB_MODE sets the default), "
        "online, or disabled",
    )
    wandb.add_argument(
        "--project",
        default=None,
        help="W&B project of the report's run (default: the --wandb project, else fastff)",
    )
    return p


def wandb_mode(flag: str | None) -> str:
    """The flag's mode, else fastff's default (``WANDB_MODE``, else offline)."""
    if flag is not None:
        return flag
    from fastff.tracking import resolve_wandb_mode

    try:
        return resolve_wandb_mode(None)
    except ValueError as err:
        raise ReportError(f"{err} (or give --wandb-mode)") from None


def _print_summary(console: Console, report: Report, runs: pd.DataFrame) -> None:
    from fastff.report.markdown import status_counts

    table = RichTable(title=f"fastff report: {escape(str(report.markdown))}")
    table.add_column("table")
    table.add_column("configurations", justify="right")
    table.add_column("figures")
    for built in report.tables:
        names = ", ".join(Path(f.path).name for f in report.figures.get(built.name, []))
        table.add_row(escape(f"tables/{built.name}.md"), str(len(built.frame)), escape(names))
    console.print(table)
    console.print(f"Runs: {escape(status_counts(runs)) if len(runs) else 'none'}")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    try:
        mode = wandb_mode(args.wandb_mode)
        if args.sweep and not args.wandb:
            raise ReportError("--sweep needs --wandb ENTITY/PROJECT (the sweep's project)")
        sources = list(args.sources)
        if not sources and not args.wandb and not args.wandb_offline:
            if not DEFAULT_SOURCE.is_dir():
                raise ReportError(
                    f"no sources given and the default {DEFAULT_SOURCE}/ does not exist; give run "
                    "folders, benchmark folders, runs.csv or bench.csv, or --wandb ENTITY/PROJECT"
                )
            sources = [DEFAULT_SOURCE]
        from fastff.report.build import build_report
        from fastff.report.collect import collect

        rows, histories = [], {}
        if args.wandb:
            from fastff.report.wandb_source import collect_wandb

            rows, histories = collect_wandb(args.wandb, args.sweep)
        if args.wandb_offline:
            from fastff.report.wandb_source import collect_wandb_offline

            offline_rows, offline_histories = collect_wandb_offline(args.wandb_offline)
            rows, histories = [*rows, *offline_rows], {**histories, **offline_histories}
        collected = collect(sources, rows, histories=histories)
        shown = [str(s) for s in sources]
        if args.wandb:
            shown.append(f"W&B {args.wandb}" + (f" sweep {args.sweep}" if args.sweep else ""))
        shown.extend(f"W&B offline {path}" for path in args.wandb_offline)
        report = build_report(collected, args.output_dir, args.table, shown)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    _print_summary(console, report, collected.runs)
    if mode != "disabled":
        from fastff.report.artifact import log_report

        entity, _, project = (args.wandb or "").partition("/")
        try:
            run_id = log_report(
                report.files,
                report.output_dir,
                mode=mode,
                project=args.project or project or "fastff",
                entity=entity or None,
                config={"sources": shown, "table": args.table},
            )
            console.print(f"W&B ({mode}): artifact fastff-report in run {run_id}")
        except Exception as err:  # the report is written; W&B is extra
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            print(f"warning: report written, but not logged to W&B: {first}", file=sys.stderr)
    return 0
