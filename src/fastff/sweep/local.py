"""The local runner: a sweep without a W&B server. The ``sweeps`` package proposes trials, each
runs as a subprocess with the W&B agent's command line (plus ``hydra.run.dir``; a ``python -m
fastff.train`` trial runs in a process forked from a warm worker, :mod:`fastff.sweep.worker`,
unless ``warm=False``), its result comes from its ``metrics.json``, and the state is saved after
every change, so the same command resumes a sweep that was stopped or killed."""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

from fastff.sweep.adopt import (
    adopt,
    finished_result,
    keep_aside,
    resumable,
    same_config,
    this_commit,
)
from fastff.sweep.command import local_command
from fastff.sweep.display import progress_bar, status_line, trials_table
from fastff.sweep.search import grid_size, propose
from fastff.sweep.spec import SweepError, SweepSpec
from fastff.sweep.state import SweepState, Trial, now
from fastff.sweep.trust import check_state, run_dir_problem
from fastff.sweep.worker import WarmProcess, WarmTrials

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
"""Set to each trial's share of the CPU threads (torch reads OMP_NUM_THREADS at start)."""
AGENT_VARS = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_RESUME")
"""Removed from a local trial's environment: set, they would send the trial to a W&B server."""
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b")
_PR_SET_PDEATHSIG = 1
_HINTS = ("Set the environment variable HYDRA_FULL_ERROR", "See https://hydra.cc/")
"""Lines Hydra adds after its error message: never the reason a trial failed."""


def sweep_dir_for(spec: SweepSpec, output_dir: Path) -> Path:
    """``<output_dir>/<sweep name>``: the state, a copy of the file and ``trials/<id>/``."""
    return output_dir / spec.name


def thread_share(jobs: int, threads: int | None = None) -> int:
    """CPU threads per trial when ``jobs`` run at once on ``threads`` (default: all cores)."""
    total = threads or os.cpu_count() or 1
    return max(1, total // jobs)


def trial_env(threads: int) -> dict[str, str]:
    """A local trial's environment: this one, pinned to ``threads``, never a W&B agent's."""
    env = {k: v for k, v in os.environ.items() if k not in AGENT_VARS}
    env.update({var: str(threads) for var in THREAD_VARS})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def last_error_line(*logs: Path) -> str | None:
    """The line that says why a trial failed: the last ``error: ...`` line, else the last
    exception line, else the last non-empty line that is not one of Hydra's hints
    (``HYDRA_FULL_ERROR``), searched in ``logs`` in order."""
    for path in logs:
        if not path.is_file():
            continue
        text = _ANSI.sub("", path.read_text(errors="replace"))
        lines = [
            line.strip()
            for line in text.split("\n")
            if line.strip() and not line.strip().startswith(_HINTS)
        ]
        if not lines:
            continue
        for pattern in (re.compile(r"^error:"), _EXCEPTION):
            hits = [line for line in lines if pattern.search(line)]
            if hits:
                return hits[-1][:500]
        return lines[-1][:500]
    return None


def read_metric(run_dir: Path, name: str | None) -> tuple[float | None, str | None]:
    """The trial's ``metrics.json`` value of ``name`` (None if absent) and a note if absent."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None, "no metrics.json"
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None, "unreadable metrics.json"
    if name is None:
        return None, None
    value = results.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None, f"metrics.json has no number {name}"
    return float(value), None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the trial gets SIGKILL when the runner dies (even by SIGKILL), so a resumed runner
    never races a leftover trial for its run dir."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def killed_by(returncode: int) -> str | None:
    """``killed by SIGKILL`` for a trial a signal ended (exit status -9), else None."""
    if returncode >= 0:
        return None
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"


@dataclass
class _Running:
    trial: Trial
    process: subprocess.Popen | WarmProcess
    started: float
    logs: tuple[IO[str], IO[str]]


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One runner per sweep: an exclusive lock the kernel releases when the runner dies.

    Raises:
        SweepError: the output folder cannot be created (one line; nothing was run).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        opened = path.open("w")
    except OSError as err:
        reason = "a file is in the way" if err.errno in (errno.EEXIST, errno.ENOTDIR) else None
        raise SweepError(
            f"-o/--output-dir {path.parent}: cannot create it ({reason or err.strerror or err}); "
            "give a writable folder"
        ) from None
    with opened as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(
                f"another fastff.sweep is running this sweep (lock {path}); wait for it or stop it"
            ) from None
        yield


class _Stop(Exception):
    """SIGTERM or SIGINT: stop the trials, save, exit."""


class LocalRunner:
    """Runs ``spec``'s trials under ``output_dir/<name>/``, ``jobs`` at a time.

    Args:
        spec: the sweep file.
        output_dir: the folder that holds one folder per sweep (``outputs/sweeps``).
        jobs: trials at once (a benchmark sweep always runs one).
        max_trials: at most this many trials in all (random and bayes need it or ``run_cap``).
        threads: CPU threads to share among the jobs (default: every core).
        new: start over; an existing state is moved aside to ``<name>.<time>``.
        retry_failed: run failed trials again.
        warm: run ``python -m fastff.train`` trials in a warm worker (imports once, forks a
            process per trial: :mod:`fastff.sweep.worker`); False: a fresh process each.
    """

    def __init__(
        self,
        spec: SweepSpec,
        output_dir: Path,
        *,
        jobs: int = 1,
        max_trials: int | None = None,
        threads: int | None = None,
        new: bool = False,
        retry_failed: bool = False,
        warm: bool = True,
        console: Console | None = None,
        poll_s: float = 0.2,
    ) -> None:
        if jobs < 1:
            raise SweepError(f"--jobs must be at least 1, got {jobs}")
        if max_trials is not None and max_trials < 1:
            raise SweepError(f"--max-trials must be at least 1, got {max_trials}")
        if spec.config.get("early_terminate"):
            raise SweepError(
                f"{spec.path}: early_terminate needs a W&B server, which stops runs while they "
                "train; the local runner does not stop trials early. Run it with --online, or "
                "remove early_terminate from the file"
            )
        if spec.metric_name is None and spec.method == "bayes":
            raise SweepError(f"{spec.path}: bayes search needs metric.name")
        self.spec = spec
        self.console = console or Console()
        self.jobs = 1 if spec.is_bench else jobs
        if spec.is_bench and jobs > 1:
            self.console.print("[yellow]a benchmark sweep runs one trial at a time[/yellow]")
        self.threads = thread_share(self.jobs, threads)
        self.cap = min((c for c in (spec.run_cap, max_trials) if c), default=None)
        if spec.method != "grid" and self.cap is None:
            raise SweepError(
                f"{spec.path}: a {spec.method} search never ends by itself; give --max-trials N "
                "(or run_cap in the file)"
            )
        self.new = new
        self.retry_failed = retry_failed
        self.poll_s = poll_s
        self.dir = sweep_dir_for(spec, output_dir)
        self.state_path = self.dir / "state.json"
        self.lock_path = output_dir / f".{spec.name}.lock"
        self.state: SweepState | None = None
        self.exhausted = False
        self.warm = WarmTrials(self.dir / "worker.log", self.console) if warm else None

    # -- state ---------------------------------------------------------------------------------
    def open_state(self) -> SweepState:
        """Load the saved state (resume) or make a new one; refuse a changed sweep file."""
        if self.state_path.is_file() and self.new:  # read nothing of it: it may be unreadable
            aside = self.dir.with_name(f"{self.dir.name}.{datetime.now():%Y%m%d-%H%M%S}")
            self.dir.rename(aside)
            self.console.print(f"--new: the previous state is kept in {aside}")
        elif self.state_path.is_file():
            state = SweepState.load(self.state_path)
            if state.fingerprint != self.spec.fingerprint:
                raise SweepError(
                    f"{self.spec.path} changed since the sweep in {self.dir} started (its state "
                    f"was made from {state.sweep_file}, saved as {self.dir / 'sweep.yaml'}). "
                    "Restore the file to resume, or run with --new to start a new sweep (the old "
                    "one is kept beside it)"
                )
            check_state(state, self.dir, self.spec)  # before anything is deleted or run
            return self._resume(state)
        state = SweepState(
            name=self.spec.name,
            sweep_file=str(self.spec.path),
            fingerprint=self.spec.fingerprint,
            method=self.spec.method,
            metric=self.spec.config.get("metric"),
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.spec.path, self.dir / "sweep.yaml")
        state.save(self.state_path)
        return state

    def _resume(self, state: SweepState) -> SweepState:
        adopted = self._adopt_finished(state)
        interrupted = [t for t in state.trials if t.status == "running"]
        for trial in interrupted:
            trial.status, trial.pid = "pending", None
        if self.retry_failed:
            for trial in state.trials:
                if trial.status == "failed":
                    trial.status = "pending"
        self.console.print(
            f"Resuming sweep {state.name}: {state.count('finished')} finished, "
            f"{state.count('failed')} failed, {len(interrupted)} interrupted "
            "(run again, from their last.ckpt where they have one), "
            f"{state.count('pending')} to run"
            + (f"; {adopted} finished result(s) adopted" if adopted else "")
        )
        for trial in state.trials:
            if trial.note and trial.status == "finished":
                self.console.print(f"[yellow]trial {trial.id}: {escape(trial.note)}[/yellow]")
        state.save(self.state_path)
        return state

    def _adopt_finished(self, state: SweepState) -> int:
        """Adopt every unrecorded trial whose run dir holds a complete, finished metrics.json of
        its own config (a trial killed after it finished); returns how many."""
        adopted = 0
        commit: list[str | None] = []
        for trial in state.trials:
            if trial.status not in ("running", "pending"):
                continue
            run_dir = Path(trial.run_dir)
            results = finished_result(run_dir)
            if results is None or not same_config(run_dir, trial):
                continue
            if not commit:
                commit.append(this_commit())
            adopt(trial, results, commit[0])
            trial.metric, trial.error = read_metric(run_dir, self.spec.metric_name)
            adopted += 1
        return adopted

    def save(self) -> None:
        assert self.state is not None
        self.state.save(self.state_path)
        write_results_csv(self.state, self.dir / "results.csv")

    def total(self) -> int | None:
        """How many trials the sweep will have in all (None: not known in advance)."""
        if self.spec.method == "grid":
            size = grid_size(self.spec)
            return min(size, self.cap) if self.cap else size
        return self.cap

    def next_trial(self) -> Trial | None:
        """The next trial to start: a pending one, else a new proposal; None when done."""
        assert self.state is not None
        for trial in self.state.trials:
            if trial.status == "pending":
                return trial
        if self.exhausted or (self.cap is not None and len(self.state.trials) >= self.cap):
            return None
        proposals = propose(self.spec, self.state.trials, 1)
        if not proposals:
            self.exhausted = True
            return None
        trial_id = self.state.next_id()
        trial = Trial(
            id=trial_id, params=proposals[0], run_dir=str(self.dir.resolve() / "trials" / trial_id)
        )
        self.state.trials.append(trial)
        self.save()
        return trial

    # -- trials --------------------------------------------------------------------------------
    def start(self, trial: Trial) -> _Running:
        run_dir = Path(trial.run_dir)
        problem = run_dir_problem(trial, self.dir)
        if problem:  # check_state refused a saved one; this guards every path
            raise SweepError(f"trial {trial.id}: run_dir={trial.run_dir!r}: {problem}; refused")
        if run_dir.exists() and finished_result(run_dir) is not None:  # never delete a result
            aside = keep_aside(run_dir)
            self.console.print(
                f"[yellow]trial {trial.id}: {run_dir} holds a finished run of other settings; "
                f"kept as {aside}[/yellow]"
            )
        # Only a trial that never ended (its runner was stopped) resumes: a failed one, retried,
        # starts clean, so a run dir fastff.train refuses to continue cannot fail it again.
        resuming = trial.exit_code is None and run_dir.exists() and resumable(run_dir, trial)
        if resuming:  # interrupted after an epoch: fastff.train goes on from its last.ckpt
            self.console.print(f"trial {trial.id}: resuming from its checkpoints/last.ckpt")
        elif run_dir.exists():  # interrupted before a checkpoint, or not resumable: start clean
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=resuming)
        trial.command = local_command(self.spec.command, trial.params, run_dir)
        mode = "a" if resuming else "w"  # a resumed trial's logs keep the earlier attempt's
        stdout = (run_dir / "stdout.log").open(mode)
        stderr = (run_dir / "stderr.log").open(mode)
        env = trial_env(self.threads)
        process: subprocess.Popen | WarmProcess | None = None
        if self.warm is not None:  # None: not a command the warm worker runs
            process = self.warm.start(trial.command, run_dir, env)
        if process is None:
            process = subprocess.Popen(
                trial.command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        trial.status, trial.pid, trial.threads = "running", process.pid, self.threads
        trial.attempts += 1
        trial.started_at, trial.finished_at = now(), None
        trial.exit_code = trial.error = trial.metric = trial.wall_time_s = None
        self.save()
        return _Running(trial, process, time.monotonic(), (stdout, stderr))

    def finish(self, running: _Running, returncode: int) -> None:
        trial = running.trial
        for handle in running.logs:
            handle.close()
        run_dir = Path(trial.run_dir)
        trial.wall_time_s = round(time.monotonic() - running.started, 3)
        trial.finished_at, trial.pid = now(), None
        trial.exit_code = returncode
        if returncode == 0:
            trial.status = "finished"
            trial.metric, trial.error = read_metric(run_dir, self.spec.metric_name)
        else:
            trial.status = "failed"
            trial.error = (
                killed_by(returncode)
                or last_error_line(run_dir / "stderr.log", run_dir / "stdout.log")
                or f"exit status {returncode} and no output"
            )
            reason = escape(trial.error or "")
            self.console.print(f"[red]trial {trial.id} failed (exit {returncode}):[/red] {reason}")
        self.save()

    def stop_all(self, running: list[_Running]) -> None:
        """Stop every running trial (SIGTERM, then SIGKILL after 10 s); they run again later."""
        for item in running:
            with contextlib.suppress(ProcessLookupError):
                item.process.terminate()
        deadline = time.monotonic() + 10
        for item in running:
            try:
                item.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                item.process.kill()
                item.process.wait()
            for handle in item.logs:
                handle.close()
            item.trial.status, item.trial.pid = "pending", None
        self.save()

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> SweepState:
        """Run the sweep to its end (or until stopped); return its final state."""
        with _lock(self.lock_path):
            self.state = self.open_state()
            self.console.print(
                f"Sweep {self.spec.name} ({self.spec.method}): {self.dir}; {self.jobs} trial(s) at "
                f"once, {self.threads} CPU thread(s) each"
            )
            running: list[_Running] = []
            previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

            def stop(signum: int, frame: Any) -> None:
                raise _Stop(signal.Signals(signum).name)

            for signum in previous:
                signal.signal(signum, stop)
            try:
                with progress_bar(self.console) as progress:
                    task = progress.add_task(
                        self.spec.name, total=self.total(), status=status_line(self.state)
                    )

                    def refresh() -> None:
                        assert self.state is not None
                        done = self.state.count("finished") + self.state.count("failed")
                        progress.update(
                            task,
                            completed=done,
                            total=self.total() or len(self.state.trials),
                            status=status_line(self.state),
                        )

                    refresh()
                    while True:
                        while len(running) < self.jobs:
                            trial = self.next_trial()
                            if trial is None:
                                break
                            running.append(self.start(trial))
                            refresh()
                        if not running:
                            break
                        time.sleep(self.poll_s)
                        for item in list(running):
                            returncode = item.process.poll()
                            if returncode is not None:
                                running.remove(item)
                                self.finish(item, returncode)
                                refresh()
            except _Stop as stopped:
                self.console.print(f"[yellow]{stopped}: stopping the running trials[/yellow]")
                self.stop_all(running)
                raise KeyboardInterrupt from None
            except BaseException:
                self.stop_all(running)
                raise
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
                if self.warm is not None:
                    self.warm.close()
            self.console.print(trials_table(self.state))
            self.console.print(summary_line(self.state, self.dir))
            return self.state


def summary_line(state: SweepState, sweep_dir: Path) -> str:
    best = state.best()
    metric = (state.metric or {}).get("name", "metric")
    text = (
        f"{state.count('finished')} finished, {state.count('failed')} failed of "
        f"{len(state.trials)} trials; state {sweep_dir / 'state.json'}"
    )
    if best is not None:
        text += f"; best {metric} = {best.metric:.4g} (trial {best.id}: {escape(str(best.params))})"
    return text


def write_results_csv(state: SweepState, path: Path) -> None:
    """Every trial's parameters, status, metric and wall time as CSV (rewritten atomically)."""
    names = list(dict.fromkeys(k for t in state.trials for k in t.params))
    metric = (state.metric or {}).get("name", "metric")
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", *names, "status", metric, "wall_time_s", "exit_code", "error"])
        for t in state.trials:
            writer.writerow(
                [
                    t.id,
                    *(t.params.get(n, "") for n in names),
                    t.status,
                    "" if t.metric is None else t.metric,
                    "" if t.wall_time_s is None else t.wall_time_s,
                    "" if t.exit_code is None else t.exit_code,
                    t.error or "",
                ]
            )
    os.replace(tmp, path)
