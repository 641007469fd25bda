"""The warm trial worker (fastff.sweep.worker): which commands it runs; real fastff.train trials
in it give the same metrics.json, logs and thread count as fresh processes; a trial that calls
os._exit, raises or is SIGKILLed fails alone with its reason and the sweep goes on; Ctrl-C stops
the trials and the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastff.sweep.cli import parser
from fastff.sweep.worker import warm_module

DATA = Path(__file__).resolve().parent / "data"
TINY = DATA / "tiny.yaml"  # widths 16, 32 (and 48, refused)
CRASH = DATA / "crash.yaml"


def test_only_the_standard_fastff_train_command_runs_warm():
    tail = ["data=digits", "hydra.run.dir=/x"]
    assert warm_module(["/usr/bin/env", sys.executable, "-m", "fastff.train", *tail]) == (
        "fastff.train"
    )
    assert warm_module([sys.executable, "-m", "fastff.train"]) == "fastff.train"
    for other in (
        ["/usr/bin/env", "/other/python", "-m", "fastff.train", *tail],  # another interpreter
        ["/usr/bin/env", sys.executable, "-X", "importtime", "-m", "fastff.train"],  # options
        ["/usr/bin/env", sys.executable, "-m", "fastff.bench", *tail],  # timings: fresh
        ["/usr/bin/env", sys.executable, "-m", "fake_trial", *tail],
        ["/usr/bin/env", sys.executable, "train.py", *tail],
        ["bash", "-c", "python -m fastff.train"],
        [],
    ):
        assert warm_module(other) is None, other
    assert parser().parse_args(["s.yaml", "--fresh-processes"]).fresh_processes
    assert not parser().parse_args(["s.yaml"]).fresh_processes


def _sweep(spec: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fastff.sweep", str(spec), "-o", str(out), *args]


def _state(out: Path, name: str) -> dict:
    path = out / name / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"trials": []}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "zombie" in status.read_text())


@pytest.mark.slow
def test_warm_trials_match_fresh_processes(tmp_path):
    """Same seeds, same metrics.json (M_A, G_A, history), argv, Hydra files, logs in the trial
    folder; --threads 1 on one job gives torch 1 thread in both (not torch's default here)."""
    runs = {}
    for mode, extra in (("warm", []), ("fresh", ["--fresh-processes"])):
        out = tmp_path / mode
        done = subprocess.run(
            _sweep(TINY, out, "--max-trials", "2", "--threads", "1", *extra),
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert ("warm worker" in done.stdout) == (mode == "warm"), done.stdout
        runs[mode] = _state(out, "tiny")["trials"]
    assert len(runs["warm"]) == len(runs["fresh"]) == 2
    for warm, fresh in zip(runs["warm"], runs["fresh"], strict=True):
        assert warm["status"] == fresh["status"] == "finished"
        assert warm["metric"] == fresh["metric"] and warm["threads"] == 1
        dirs = {mode: Path(t["run_dir"]) for mode, t in (("warm", warm), ("fresh", fresh))}
        metrics = {m: json.loads((d / "metrics.json").read_text()) for m, d in dirs.items()}
        for key in ("status", "M_A", "G_A", "epochs", "history", "width", "params"):
            assert metrics["warm"].get(key) == metrics["fresh"].get(key), key
        assert metrics["warm"]["history"], "no history recorded"
        for mode, result in metrics.items():
            assert result["provenance"]["device"]["torch_threads"] == 1, mode
            argv = result["provenance"]["argv"]
            assert argv[0].endswith(os.path.join("fastff", "train.py")), argv
            assert argv[-1] == f"hydra.run.dir={dirs[mode]}"
            assert result["output_dir"] == str(dirs[mode])
        strip = {m: str(d) for m, d in dirs.items()}
        assert (
            metrics["warm"]["provenance"]["argv"][:-1]
            == (metrics["fresh"]["provenance"]["argv"][:-1])
        )
        for name in (".hydra/hydra.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml"):
            texts = {m: (d / name).read_text().replace(strip[m], "DIR") for m, d in dirs.items()}
            assert texts["warm"] == texts["fresh"], name
        for mode, run_dir in dirs.items():
            log = (run_dir / "train.log").read_text()
            assert "Tip: For seamless cloud logging" in log, mode  # Lightning's chatter: the file
            stdout = (run_dir / "stdout.log").read_text()
            assert "G_A" in stdout, mode  # fastff's summary went to the trial's stdout.log
            assert (run_dir / "stderr.log").is_file()
    worker_log = tmp_path / "warm" / "tiny" / "worker.log"
    assert worker_log.is_file() and not (tmp_path / "fresh" / "tiny" / "worker.log").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("fake_trials")  # crash_trial.py on PYTHONPATH
def test_crashing_and_killed_trials_fail_alone_with_their_reason(tmp_path):
    out = tmp_path / "sweeps"
    runner = subprocess.Popen(
        _sweep(CRASH, out),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = tmp_path / "sleeping.pid"
    deadline = time.monotonic() + 300
    while not marker.is_file() or not marker.read_text():
        assert runner.poll() is None, runner.communicate()
        assert time.monotonic() < deadline, "the sleeping trial never started"
        time.sleep(0.1)
    pid = int(marker.read_text())
    sleeper = _state(out, "crash")["trials"][2]
    assert sleeper["status"] == "running" and sleeper["pid"] == pid  # the forked child's pid
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = runner.communicate(timeout=300)
    assert runner.returncode == 1, stderr  # some trials failed
    assert stdout.count("trials run in a warm worker") == 1, stdout  # one worker throughout
    trials = _state(out, "crash")["trials"]
    assert [t["status"] for t in trials] == ["failed", "failed", "failed", "finished"]
    exited, raised, killed, finished = trials
    assert exited["exit_code"] == 3
    assert exited["error"] == "crash_trial: os._exit(3) at epoch end"
    assert raised["exit_code"] == 1
    assert raised["error"] == "RuntimeError: crash_trial: boom at epoch end"
    assert "Traceback" in (Path(raised["run_dir"]) / "stderr.log").read_text()
    assert killed["exit_code"] == -signal.SIGKILL and killed["error"] == "killed by SIGKILL"
    assert finished["metric"] is not None and finished["metric"] > 0
    metrics = json.loads((Path(finished["run_dir"]) / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["G_A"] == finished["metric"]
    raised_metrics = json.loads((Path(raised["run_dir"]) / "metrics.json").read_text())
    assert raised_metrics["status"] != "finished"  # the trial recorded its own failure


@pytest.mark.slow
@pytest.mark.usefixtures("fake_trials")
def test_ctrl_c_stops_warm_trials_and_the_worker(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it: the worker ignores
    it, the trial stops as a fresh process would (through fastff's signal handling), the runner
    exits 130 and leaves no process behind; the trial is pending for the next run."""
    out = tmp_path / "sweeps"
    runner = subprocess.Popen(
        _sweep(CRASH, out, "--max-trials", "3"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    marker = tmp_path / "sleeping.pid"
    deadline = time.monotonic() + 300
    while not marker.is_file() or not marker.read_text():
        assert runner.poll() is None, runner.communicate()
        assert time.monotonic() < deadline, "the sleeping trial never started"
        time.sleep(0.1)
    pid = int(marker.read_text())
    children = Path(f"/proc/{runner.pid}/task/{runner.pid}/children").read_text().split()
    assert len(children) == 1, children  # the worker (the trial is its child)
    worker = int(children[0])
    os.killpg(runner.pid, signal.SIGINT)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130, stderr
    time.sleep(0.5)
    assert not _alive(pid) and not _alive(worker)
    trials = _state(out, "crash")["trials"]
    assert [t["status"] for t in trials] == ["failed", "failed", "pending"]
    # stopped through fastff's signal handling (the runner's SIGTERM), not killed
    assert "fastff: stopped by SIG" in (Path(trials[2]["run_dir"]) / "stderr.log").read_text()
