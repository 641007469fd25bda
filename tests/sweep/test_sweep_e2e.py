"""The local runner end to end with real trials (python -m fastff.train, 1 epoch on digits): it is
SIGKILLed after its first trial and resumes without repeating it, goes on past a failing trial,
and runs two trials at once with --jobs 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).resolve().parent / "data" / "tiny.yaml"  # widths 16, 32 and 48 (refused)


def _sweep(*args: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "fastff.sweep", str(TINY), "-o", str(out), *args]


def _state(out: Path) -> dict:
    path = out / "tiny" / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"trials": []}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "zombie" in status.read_text())


def test_sigkill_after_the_first_trial_then_resume(tmp_path):
    out = tmp_path / "sweeps"
    runner = subprocess.Popen(
        _sweep(out=out), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        trials = _state(out)["trials"]
        if trials and trials[0]["status"] == "finished":
            break
        assert runner.poll() is None, "the runner ended before its first trial finished"
        time.sleep(0.1)
    else:
        pytest.fail("the first trial did not finish in time")
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    killed = _state(out)["trials"]
    first = killed[0]
    assert first["status"] == "finished" and first["metric"] is not None
    time.sleep(1)  # the orphaned trial gets SIGKILL from the kernel (PR_SET_PDEATHSIG)
    for trial in killed[1:]:
        if trial["pid"]:
            assert not _alive(trial["pid"]), "a trial outlived its runner"

    resumed = subprocess.run(_sweep(out=out), cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 1, resumed.stderr  # one trial failed
    assert "Resuming sweep tiny: 1 finished" in resumed.stdout
    trials = _state(out)["trials"]
    assert [t["params"]["layer.width"] for t in trials] == [16, 32, 48]
    assert trials[0] == first  # not repeated
    assert trials[1]["status"] == "finished" and trials[1]["metric"] > 0
    # the kill can land after the second trial was queued (attempts 0) or after it started (1)
    assert trials[1]["attempts"] == (killed[1]["attempts"] + 1 if len(killed) > 1 else 1)
    failed = trials[2]
    assert failed["status"] == "failed" and failed["exit_code"] == 2
    assert failed["error"].startswith("error: layer.width=48")
    for trial in trials[:2]:
        run_dir = Path(trial["run_dir"])
        assert run_dir.parent == out.resolve() / "tiny" / "trials"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["G_A"] == trial["metric"]
        assert metrics["width"] == trial["params"]["layer.width"]
    assert "failed" in resumed.stdout and "G_A" in resumed.stdout  # the final table


def test_two_jobs_run_two_real_trials_at_once(tmp_path):
    out = tmp_path / "sweeps"
    done = subprocess.run(
        _sweep("--jobs", "2", "--threads", "2", "--max-trials", "2", out=out),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    trials = _state(out)["trials"]
    assert len(trials) == 2 and all(t["status"] == "finished" for t in trials)
    assert [t["threads"] for t in trials] == [1, 1]
    a, b = sorted(trials, key=lambda t: t["started_at"])
    assert b["started_at"] < a["finished_at"], "the second trial waited for the first"


def test_a_trial_killed_after_a_checkpoint_resumes_from_it(tmp_path):
    """The runner is SIGKILLed once its trial has written last.ckpt; rerun, the trial goes on from
    that checkpoint (not from scratch) and ends with the history of an uninterrupted run."""
    spec = Path(__file__).resolve().parent / "data" / "resume.yaml"
    out = tmp_path / "sweeps"
    command = [sys.executable, "-m", "fastff.sweep", str(spec), "-o", str(out)]
    runner = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    trial_dir = out.resolve() / "resume" / "trials" / "0001"
    deadline = time.monotonic() + 240
    while not (trial_dir / "checkpoints" / "last.ckpt").is_file():
        assert runner.poll() is None, "the runner ended before the trial's first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    time.sleep(1)  # the trial gets SIGKILL from the kernel (PR_SET_PDEATHSIG)
    killed = json.loads((trial_dir / "metrics.json").read_text())
    assert killed["status"] == "running", "the trial ended before the kill: nothing to resume"

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial 0001: resuming from its checkpoints/last.ckpt" in resumed.stdout
    assert "Restored all states from the checkpoint" in (trial_dir / "train.log").read_text()
    result = json.loads((trial_dir / "metrics.json").read_text())
    assert result["status"] == "finished"

    # the same trial uninterrupted, straight through fastff.train
    overrides = [f"{k}={v}" for k, v in _state_of(out, "resume")["trials"][0]["params"].items()]
    reference_dir = tmp_path / "reference"
    straight = subprocess.run(
        [sys.executable, "-m", "fastff.train", *overrides, f"hydra.run.dir={reference_dir}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "OMP_NUM_THREADS": str(_state_of(out, "resume")["trials"][0]["threads"]),
        },
    )
    assert straight.returncode == 0, straight.stderr
    reference = json.loads((reference_dir / "metrics.json").read_text())
    assert len(result["history"]) == len(reference["history"]) > 1
    for got, want in zip(result["history"], reference["history"], strict=True):
        assert got["epoch"] == want["epoch"]
        assert got["train_acc"] == pytest.approx(want["train_acc"], abs=1e-6)
        assert got["val_acc"] == pytest.approx(want["val_acc"], abs=1e-6)
    assert result["G_A"] == pytest.approx(reference["G_A"], abs=1e-6)


def _state_of(out: Path, name: str) -> dict:
    return json.loads((out / name / "state.json").read_text())
