"""The command line: ``python -m fastff.sweep SWEEP_FILE [options]`` (``fastff-sweep``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from fastff.sweep.spec import SweepError, load_spec

EXAMPLES = """\
examples:
  fastff-sweep sweeps/table1_digits.yaml --jobs 2     run (or resume) locally, 2 trials at once
  fastff-sweep sweeps/table1_digits.yaml --dry-run    list the trials and their cost
  fastff-sweep sweeps/table1.yaml --online            create it on a W&B server, run an agent
  fastff-sweep sweeps/table1.yaml --sweep-id ENTITY/PROJECT/ID   join it from another machine

exit status: 0 all trials finished, 1 some trials failed (--dry-run: some would fail), 2 a bad
sweep file, option or state, 130 stopped (run the same command again to resume).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastff-sweep",
        description=(
            "Run a W&B sweep file. Offline (default): W&B's search engine (the sweeps package) "
            "proposes trials and each runs as a subprocess with the command the W&B agent would "
            "run; the state under OUTPUT_DIR/<sweep name>/ is saved after every trial and the "
            "same command resumes. --online: create or join the sweep on a W&B server and run "
            "`wandb agent`."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sweep_file", type=Path, help="a W&B sweep YAML file (see sweeps/)")
    local = p.add_argument_group("local runner (no W&B server)")
    local.add_argument("-j", "--jobs", type=int, default=1, help="trials at once (default 1)")
    local.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads shared among the jobs (default: all cores; each job gets threads/jobs)",
    )
    local.add_argument(
        "-n", "--max-trials", type=int, default=None, help="at most N trials (random/bayes need it)"
    )
    local.add_argument(
        "--dry-run", action="store_true", help="list the trials and their cost; run nothing"
    )
    local.add_argument(
        "--new", action="store_true", help="start over; an existing state is moved aside"
    )
    local.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    local.add_argument(
        "--fresh-processes",
        action="store_true",
        help="start every fastff.train trial as a new process (default: a warm worker imports "
        "once and forks one process per trial)",
    )
    local.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=Path("outputs/sweeps"),
        help="where sweep folders live (default outputs/sweeps)",
    )
    online = p.add_argument_group("W&B server")
    online.add_argument(
        "--online",
        action="store_true",
        help="create (or join) the sweep on a W&B server, run wandb agent (or WANDB_MODE=online)",
    )
    online.add_argument("--sweep-id", default=None, help="join this sweep instead of creating one")
    online.add_argument(
        "--project", default=None, help="W&B project (default: the file's, or fastff)"
    )
    online.add_argument("--entity", default=None, help="W&B entity (default: your default entity)")
    return p


def option_problem(args: argparse.Namespace) -> str | None:
    """Why the counts among ``args`` (``--jobs``, ``--threads``, ``--max-trials``) cannot be
    used, or None; checked before anything runs, for --dry-run too."""
    for flag, value in (
        ("--jobs", args.jobs),
        ("--threads", args.threads),
        ("--max-trials", args.max_trials),
    ):
        if value is not None and value < 1:
            return f"{flag} must be at least 1, got {value}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parser().parse_args(argv)
    problem = option_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    online = args.online or args.sweep_id is not None or os.environ.get("WANDB_MODE") == "online"
    try:
        spec = load_spec(args.sweep_file)
        if online:
            from fastff.sweep.online import run_online

            return run_online(
                spec,
                sweep_id=args.sweep_id,
                entity=args.entity,
                project=args.project,
                count=args.max_trials,
                console=console,
            )
        if args.dry_run:
            from fastff.sweep.estimate import dry_run

            _, failures = dry_run(
                spec,
                args.output_dir,
                jobs=args.jobs,
                max_trials=args.max_trials,
                threads=args.threads,
                console=console,
            )
            return 1 if failures else 0
        from fastff.sweep.local import LocalRunner

        state = LocalRunner(
            spec,
            args.output_dir,
            jobs=args.jobs,
            max_trials=args.max_trials,
            threads=args.threads,
            new=args.new,
            retry_failed=args.retry_failed,
            warm=not args.fresh_processes,
            console=console,
        ).run()
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped; run the same command again to resume", file=sys.stderr)
        return 130
    return 1 if state.count("failed") else 0
