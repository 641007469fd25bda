"""A Hydra multirun never loses the rest of the sweep to one bad job."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline_utils import run_cli

QUICK = ("trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=none")


def test_a_bad_value_stops_the_multirun_before_any_job_starts(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "fastff.train",
        "--multirun",
        "layer.leaf_width=8,48,16",
        *QUICK,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: job #1 (layer.leaf_width=48") and "layer.width=64" in line
    assert not list(sweep.glob("*/metrics.json"))  # nothing ran


def test_a_failing_job_is_recorded_and_the_others_still_run(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "fastff.train",
        "--multirun",
        "layer=ff",
        "optimizer=sgd",
        "optimizer.lr=1e30,0.01",
        *QUICK,
        "callbacks.rich_progress_bar=null",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "1 job(s) of the multirun failed" in proc.stderr
    statuses = [json.loads((sweep / str(i) / "metrics.json").read_text())["status"] for i in (0, 1)]
    assert statuses == ["diverged", "finished"]
