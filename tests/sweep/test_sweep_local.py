"""The local runner with stand-in trials (fast): the agent's command line, failing trials, a
changed file, random and bayes search, early_terminate, --dry-run, the lock, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from fastff.sweep import SweepError, load_spec
from fastff.sweep.cli import main
from fastff.sweep.command import agent_command, local_command
from fastff.sweep.estimate import dry_run
from fastff.sweep.local import LocalRunner, last_error_line, thread_share, trial_env
from fastff.sweep.state import SweepState

pytestmark = pytest.mark.usefixtures("fake_trials")


def _run(path: Path, out: Path, **kwargs) -> SweepState:
    return LocalRunner(load_spec(path), out, console=Console(quiet=True), **kwargs).run()


def test_trial_command_is_the_agents_with_this_interpreter(tmp_path):
    params = {"data": "digits", "layer.width": 64, "tags": "[a,b]", "flag": True}
    command = ["${env}", "${interpreter}", "-m", "fastff.train", "${args_no_hyphens}"]
    agent = agent_command(command, params)
    assert agent == [
        "/usr/bin/env",
        "python",
        "-m",
        "fastff.train",
        "data=digits",
        "layer.width=64",
        "tags=[a,b]",
        "flag=True",
    ]
    local = local_command(command, params, tmp_path / "trials" / "0001")
    assert local[:2] == ["/usr/bin/env", sys.executable]
    assert local[2:-1] == agent[2:]
    assert local[-1] == f"hydra.run.dir={tmp_path / 'trials' / '0001'}"
    assert local_command(command, {}, "/a b/c")[-1] == "hydra.run.dir='/a b/c'"


def test_grid_runs_every_point_records_failures_and_goes_on(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1, 3]}, "fail": {"values": [False, True]}})
    state = _run(path, tmp_path / "out")
    assert [t.status for t in state.trials].count("finished") == 2
    failed = [t for t in state.trials if t.status == "failed"]
    assert len(failed) == 2
    assert all(t.exit_code == 2 and t.error == "error: told to fail" for t in failed)
    best = state.best()
    assert best is not None and best.params["x"] == 3 and best.metric == 0.0
    saved = json.loads((tmp_path / "out" / "fake" / "state.json").read_text())
    assert len(saved["trials"]) == 4 and saved["fingerprint"] == load_spec(path).fingerprint
    csv = (tmp_path / "out" / "fake" / "results.csv").read_text().splitlines()
    assert csv[0].startswith("trial,") and len(csv) == 5
    # the trial's run dir is inside the sweep's folder and holds its logs
    run_dir = Path(state.trials[0].run_dir)
    assert run_dir.parent == (tmp_path / "out" / "fake" / "trials").resolve()
    assert (run_dir / "metrics.json").is_file() and (run_dir / "stdout.log").is_file()


def test_rerun_resumes_without_repeating_and_retry_failed(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1, 2]}, "fail": {"values": [False, True]}})
    first = _run(path, tmp_path)
    again = _run(path, tmp_path)
    assert [t.attempts for t in again.trials] == [1, 1, 1, 1]
    assert [t.finished_at for t in again.trials] == [t.finished_at for t in first.trials]
    retried = _run(path, tmp_path, retry_failed=True)
    assert sorted(t.attempts for t in retried.trials) == [1, 1, 2, 2]


def test_a_running_trial_of_a_killed_sweep_runs_again(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1, 2]}})
    state = _run(path, tmp_path)
    state.trials[1].status = "running"  # as a SIGKILLed runner leaves it
    state.save(tmp_path / "fake" / "state.json")
    resumed = _run(path, tmp_path)
    assert [t.attempts for t in resumed.trials] == [1, 2]
    assert all(t.status == "finished" for t in resumed.trials)


def test_a_changed_sweep_file_is_refused_or_started_anew(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1, 2]}})
    _run(path, tmp_path / "out")
    path = write_sweep({"x": {"values": [1, 2, 3]}})
    with pytest.raises(SweepError, match="changed since the sweep"):
        _run(path, tmp_path / "out")
    state = _run(path, tmp_path / "out", new=True)
    assert len(state.trials) == 3 and all(t.attempts == 1 for t in state.trials)
    kept = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("fake.")]
    assert len(kept) == 1 and (kept[0] / "state.json").is_file()


def test_jobs_run_trials_at_once_each_with_its_thread_share(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1, 2]}, "sleep": {"value": 2}})
    state = _run(path, tmp_path, jobs=2, threads=4)
    assert [t.threads for t in state.trials] == [2, 2]
    runs = [json.loads((Path(t.run_dir) / "metrics.json").read_text()) for t in state.trials]
    assert all(r["threads"] == "2" for r in runs)
    assert runs[0]["started"] < runs[1]["ended"] and runs[1]["started"] < runs[0]["ended"]
    assert thread_share(2, 2) == 1 and thread_share(3, 2) == 1 and thread_share(1, 8) == 8


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_random_and_bayes_search_propose_trials_up_to_the_cap(write_sweep, tmp_path, method):
    path = write_sweep({"x": {"min": 0.0, "max": 6.0}, "k": {"values": [1, 2]}}, method=method)
    with pytest.raises(SweepError, match="--max-trials"):
        _run(path, tmp_path)
    state = _run(path, tmp_path, max_trials=5)
    assert len(state.trials) == 5 and all(t.status == "finished" for t in state.trials)
    for trial in state.trials:  # plain Python values, not numpy scalars
        assert type(trial.params["x"]) is float and 0.0 <= trial.params["x"] <= 6.0
        assert type(trial.params["k"]) is int
        assert trial.metric == pytest.approx(-((trial.params["x"] - 3.0) ** 2))


def test_early_terminate_is_refused_with_a_reason(write_sweep, tmp_path):
    path = write_sweep(
        {"x": {"values": [1, 2]}}, early_terminate={"type": "hyperband", "min_iter": 3}
    )
    with pytest.raises(SweepError, match="early_terminate needs a W&B server"):
        _run(path, tmp_path)


def test_dry_run_lists_trials_and_runs_nothing(write_sweep, tmp_path):
    path = write_sweep({"x": {"values": [1, 2, 3]}, "tags": {"values": ["[a,b]", "[c]"]}})
    console = Console(record=True, width=200)
    trials, failures = dry_run(load_spec(path), tmp_path, console=console)
    assert len(trials) == 6 and not failures and not (tmp_path / "fake").exists()
    text = console.export_text()
    assert "6 trials, 6 to run" in text
    assert "[a,b]" in text  # parameter values are shown as they are, not read as rich markup
    _run(path, tmp_path)
    console = Console(record=True, width=200)
    dry_run(load_spec(path), tmp_path, console=console)
    assert "6 trials, 0 to run (6 done)" in console.export_text()


def test_one_runner_per_sweep(write_sweep, tmp_path):
    import fcntl

    path = write_sweep({"x": {"values": [1]}})
    lock = tmp_path / ".fake.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(SweepError, match=r"another fastff\.sweep"):
            _run(path, tmp_path)


def test_local_trials_never_see_a_sweep_id(monkeypatch):
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc")
    monkeypatch.setenv("WANDB_RUN_ID", "xyz")
    env = trial_env(3)
    assert "WANDB_SWEEP_ID" not in env and "WANDB_RUN_ID" not in env
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "3"


def test_last_error_line_prefers_error_lines_then_exceptions(tmp_path):
    log = tmp_path / "stderr.log"
    log.write_text("Traceback (most recent call last):\n  File x\nValueError: bad\n\n")
    assert last_error_line(log) == "ValueError: bad"
    log.write_text("\x1b[31merror: layer.width=48 ...\x1b[0m\nsome warning\n")
    assert last_error_line(log) == "error: layer.width=48 ..."
    assert last_error_line(tmp_path / "missing.log") is None
    log.write_text(
        "mismatched input '(' expecting <EOF>\nSee https://hydra.cc/docs/1.2/advanced/override"
        "_grammar/basic for details\n\nSet the environment variable HYDRA_FULL_ERROR=1 for a "
        "complete stack trace.\n"
    )
    assert last_error_line(log) == "mismatched input '(' expecting <EOF>"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "sideways"}, "sideways"),
        ({"parameters": {"layer.depth": {"values": [None, 2]}}}, "string 'None'"),
        ({"parameters": {"layer": {"value": {"width": 2}}}}, "dict literal"),
        ({"command": ["${env}", "python", "-m", "fastff.train"]}, r"\$\{args_no_hyphens\}"),
        ({"name": "a b"}, "folder name"),
    ],
)
def test_bad_sweep_files_are_refused_with_the_reason(write_sweep, change, message):
    path = write_sweep({"x": {"values": [1]}})
    config = yaml.safe_load(path.read_text())
    config.update(change)
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SweepError, match=message):
        load_spec(path)


def test_cli_exit_status_and_error_line(write_sweep, tmp_path, capsys):
    good = write_sweep({"x": {"values": [1, 3]}})
    assert main([str(good), "-o", str(tmp_path / "out"), "--dry-run"]) == 0
    assert main([str(good), "-o", str(tmp_path / "out")]) == 0
    failing = write_sweep({"fail": {"value": True}}, name="failing")
    assert main([str(failing), "-o", str(tmp_path / "out")]) == 1
    capsys.readouterr()
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0


def _unfinished_with_checkpoint(trial_dir: Path) -> Path:
    """Make ``trial_dir`` look like a fastff run stopped after an epoch; returns a marker file."""
    (trial_dir / "metrics.json").write_text(json.dumps({"status": "running"}))
    (trial_dir / "checkpoints").mkdir(exist_ok=True)
    (trial_dir / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    marker = trial_dir / "kept.txt"
    marker.write_text("from the interrupted attempt")
    return marker


def test_an_interrupted_trial_with_a_checkpoint_keeps_its_folder_a_failed_one_starts_clean(
    write_sweep, tmp_path
):
    path = write_sweep({"x": {"values": [1, 2]}, "hydra": {"value": True}})
    state = _run(path, tmp_path)
    trial_dir = Path(state.trials[1].run_dir)
    marker = _unfinished_with_checkpoint(trial_dir)
    state.trials[1].status, state.trials[1].exit_code = "running", None  # a SIGKILLed runner
    state.save(tmp_path / "fake" / "state.json")
    (trial_dir / "stdout.log").write_text("earlier attempt\n")
    resumed = _run(path, tmp_path)
    assert resumed.trials[1].status == "finished" and resumed.trials[1].attempts == 2
    assert marker.is_file(), "the interrupted trial's folder was deleted instead of resumed"
    assert (trial_dir / "stdout.log").read_text().startswith("earlier attempt\n")

    marker = _unfinished_with_checkpoint(trial_dir)
    resumed.trials[1].status, resumed.trials[1].exit_code = "failed", 1
    resumed.save(tmp_path / "fake" / "state.json")
    retried = _run(path, tmp_path, retry_failed=True)
    assert retried.trials[1].status == "finished" and retried.trials[1].attempts == 3
    assert not marker.exists(), "a failed trial, retried, must start in a clean folder"
