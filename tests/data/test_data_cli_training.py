"""fast_dev_run training on each of the paper's six datasets through the real command line.

The six runs share one Hydra multirun process (``-m data=usps,mnist,...``): one Python start-up
instead of six keeps this under a minute on two cores, and every run still gets its own
instantiate -> fit -> test -> metrics.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_datasets import TORCHVISION_SETS, write_fake_dataset

pytestmark = pytest.mark.slow


def run_train(*overrides: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastff.train", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """Fake files for all six sets, one fast_dev_run each; (process, {dataset: metrics})."""
    tmp = tmp_path_factory.mktemp("cli")
    data_dir = tmp / "data"
    for name in TORCHVISION_SETS:
        write_fake_dataset(name, data_dir)
    process = run_train(
        "-m",
        f"data={','.join(TORCHVISION_SETS)}",
        f"paths.data_dir={data_dir}",
        # Keys of the torchvision configs only: as one-value sweeps they apply per job, after
        # data=<name> is chosen (the multirun's base config has the default data, digits).
        "data.download=choice(false)",
        "data.check_integrity=choice(false)",
        "trainer.fast_dev_run=true",
        "logger=none",
        f"paths.log_dir={tmp / 'outputs'}",
        f"hydra.sweep.dir={tmp / 'multirun'}",
        cwd=tmp,
    )
    metrics = {}
    for path in (tmp / "multirun").glob("*/metrics.json"):
        result = json.loads(path.read_text())
        metrics[result["dataset"]] = result
    return process, metrics


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_fast_dev_run_trains_and_tests(multirun, name):
    process, metrics = multirun
    assert process.returncode == 0, process.stderr[-3000:]
    assert name in metrics, f"no metrics.json for {name}: {sorted(metrics)}"
    assert metrics[name]["status"] == "smoke_test"  # fast_dev_run: a pipeline check
    assert 0.0 <= metrics[name]["G_A"] <= 100.0


def test_missing_data_stops_the_command_with_one_clear_line(tmp_path):
    process = run_train(
        "data=usps",
        f"paths.data_dir={tmp_path / 'empty'}",
        "data.download=false",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert process.returncode != 0
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, process.stderr[-3000:]
    assert f"dataset 'usps' not found in {tmp_path / 'empty'}" in errors[0]
    assert "python -m fastff.data.fetch --datasets usps" in errors[0]
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "empty").exists()
