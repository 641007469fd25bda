"""``--dry-run``: the trials a sweep would run, each composed with Hydra and checked as its entry
point would check it (so a bad parameter shows before any work, with the trial's one-line error),
and what they cost: epochs at most, and time from the trials already run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from fastff.sweep.compose import composer
from fastff.sweep.display import trials_table
from fastff.sweep.local import sweep_dir_for, thread_share
from fastff.sweep.search import grid_size, propose
from fastff.sweep.spec import SweepError, SweepSpec
from fastff.sweep.state import SweepState, Trial
from fastff.sweep.trust import check_state


def planned_trials(spec: SweepSpec, state: SweepState | None, cap: int | None) -> list[Trial]:
    """The saved trials (if any) followed by the proposals still to come (a bayes search's later
    proposals depend on results: the ones listed are its first guesses)."""
    trials = list(state.trials) if state else []
    total = grid_size(spec) if spec.method == "grid" else cap
    if cap is not None and total is not None:
        total = min(total, cap)
    missing = max(0, (total or 0) - len(trials))
    proposals = propose(spec, trials, missing) if missing else []
    start = len(trials)
    return trials + [
        Trial(id=f"{start + i + 1:04d}", params=p, run_dir="") for i, p in enumerate(proposals)
    ]


def dry_run(
    spec: SweepSpec,
    output_dir: Path,
    *,
    jobs: int = 1,
    max_trials: int | None = None,
    threads: int | None = None,
    console: Console | None = None,
) -> tuple[list[Trial], dict[str, str]]:
    """Print the trials, those that would fail with their one-line errors, and the cost
    estimate; start nothing. Returns the trials listed and ``{trial id: error line}`` of the
    ones whose settings their entry point refuses."""
    console = console or Console()
    sweep_dir = sweep_dir_for(spec, output_dir)
    state_path = sweep_dir / "state.json"
    state = SweepState.load(state_path) if state_path.is_file() else None
    if state is not None and state.fingerprint != spec.fingerprint:
        console.print(f"[yellow]{state_path} is from another version of the file: ignored[/yellow]")
        state = None
    if state is not None:
        check_state(state, sweep_dir, spec)
    cap = min((c for c in (spec.run_cap, max_trials) if c), default=None)
    if spec.method != "grid" and cap is None:
        raise SweepError(f"a {spec.method} search needs --max-trials N (or run_cap in the file)")
    trials = planned_trials(spec, state, cap)
    to_run = [t for t in trials if t.status in ("pending", "running")]
    shown = state or SweepState(spec.name, str(spec.path), spec.fingerprint, spec.method, None)
    shown.metric = spec.config.get("metric")
    epochs, failures = _compose_all(spec, to_run)
    for trial in to_run:
        if trial.id in failures:
            trial.status, trial.error, trial.exit_code = "failed", failures[trial.id], 2
    console.print(trials_table(shown, trials, title=f"sweep {spec.name}: planned trials"))

    jobs = 1 if spec.is_bench else jobs
    lines = [
        f"{len(trials)} trials, {len(to_run)} to run"
        + (f" ({len(trials) - len(to_run)} done)" if state else ""),
        f"{jobs} at once with {thread_share(jobs, threads)} CPU thread(s) each",
    ]
    if epochs is not None:
        lines.append(f"at most {epochs:,} training epochs in all (trainer.max_epochs per trial)")
    timed = [t.wall_time_s for t in trials if t.status == "finished" and t.wall_time_s]
    if timed:
        mean = sum(timed) / len(timed)
        lines.append(
            f"about {mean * len(to_run) / jobs / 60:.1f} min left at the {mean:.1f} s per trial "
            f"measured so far ({len(timed)} trials)"
        )
    else:
        lines.append("no trial has finished yet to time; run a few and --dry-run again")
    console.print("Estimate: " + "; ".join(lines))
    if failures:
        console.print(
            f"[red]{len(failures)} of the {len(to_run)} trials to run would fail:[/red]",
            highlight=False,
        )
        for trial_id, line in failures.items():
            console.print(f"  trial {trial_id}: {escape(line)}", highlight=False)
    return trials, failures


def check_composed(config_name: str, cfg: DictConfig) -> None:
    """Check a composed trial config as its entry point does before any work.

    Raises:
        ValueError: the entry point's one-line error (ConfigError for a training config).
    """
    if config_name == "train":
        from fastff.config_checks import check_train_config

        check_train_config(cfg)
    elif config_name == "bench":
        from fastff.bench.runner import validate

        validate(cfg)


def _compose_all(spec: SweepSpec, trials: list[Trial]) -> tuple[int | None, dict[str, str]]:
    """Compose and check every trial: (the sum of their trainer.max_epochs, or None when a
    trial has none; ``{trial id: error line}`` of those that would fail)."""
    if spec.hydra_config is None or not trials:
        return None, {}
    total: int | None = 0
    failures: dict[str, str] = {}
    with composer(spec.hydra_config) as compose:
        for trial in trials:
            try:
                cfg = compose(trial.params)
                check_composed(spec.hydra_config, cfg)
            except Exception as err:  # Hydra's and the checks' errors name the setting
                failures[trial.id] = "error: " + " ".join(str(err).split())
                continue
            epochs = OmegaConf.select(cfg, "trainer.max_epochs")
            if epochs is None or total is None:
                total = None
            else:
                total += int(epochs)
    return total, failures
