"""Fixtures for the report's tests: hand-made runs (report_helpers.HANDMADE, plus an unreadable
metrics.json and a sweep trial that left none), a hand-made benchmark folder, and one real tiny
sweep on digits shared by the slow tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from report_helpers import HANDMADE, TINY_SWEEP, bench_rows, write_run


@pytest.fixture
def handmade(tmp_path: Path) -> Path:
    """A folder of hand-made runs (``HANDMADE``), an unreadable metrics.json and a local sweep's
    state.json with a trial that left no metrics.json."""
    root = tmp_path / "runs"
    for folder, fields in HANDMADE:
        write_run(root / folder, **fields)
    (root / "t1" / "broken").mkdir()
    (root / "t1" / "broken" / "metrics.json").write_text("{not json")
    sweep = root / "sweep_t1"
    state = {
        "name": "sweep_t1",
        "fingerprint": "x",
        "trials": [
            {
                "id": "0001",
                "params": {
                    "data": "usps",
                    "variant": "fff_l2",
                    "layer.width": 16,
                    "seed": 0,
                    "tags": "[table1,sweep_t1]",
                },
                "run_dir": "/elsewhere/sweep_t1/trials/0001",
                "status": "failed",
                "error": "error: out of memory",
            }
        ],
    }
    sweep.mkdir(parents=True)
    (sweep / "state.json").write_text(json.dumps(state))
    return root


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    """A benchmark result folder: bench_<mode>.csv files and the summary metrics.json."""
    folder = tmp_path / "bench" / "run1"
    folder.mkdir(parents=True)
    for mode, frame in bench_rows().items():
        frame.to_csv(folder / f"bench_{mode}.csv", index=False)
    summary = {"schema_version": 1, "task": "bench", "mode": "table1", "status": "finished"}
    (folder / "metrics.json").write_text(json.dumps(summary))
    return tmp_path / "bench"


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real sweep through ``python -m fastff.sweep``: FF, FFF l=8 and FFF l=4 at training
    width 16 on digits, 2 epochs each; returns the sweep's folder (``<out>/tiny_report``)."""
    base = tmp_path_factory.mktemp("tiny_sweep")
    sweep_file = base / "tiny_report.yaml"
    sweep_file.write_text(yaml.safe_dump(TINY_SWEEP, sort_keys=False))
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "fastff.sweep", str(sweep_file), "-o", str(base / "out")]
    done = subprocess.run(
        [*command, "--jobs", "2", "--threads", "2"],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return base / "out" / "tiny_report"


@pytest.fixture
def report_main() -> Callable[..., int]:
    """``fastff.report.cli.main`` with W&B disabled unless the arguments say otherwise."""
    from fastff.report.cli import main

    def run(*args: str | Path) -> int:
        argv = [str(a) for a in args]
        if "--wandb-mode" not in argv:
            argv += ["--wandb-mode", "disabled"]
        return main(argv)

    return run
