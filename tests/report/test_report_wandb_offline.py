"""``fastff-report --wandb-offline PATH``: the report's rows from a run's offline W&B file (read
by fastff.tracking.wandb_offline, no server) equal the rows from the same run's metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pipeline_utils import run_cli

from fastff.report.cli import main

SAME = ("status", "dataset", "layer", "training_width", "leaf_width", "depth", "seed", "M_A", "G_A")
"""Columns both sources must agree on (the run ids differ: folder name vs W&B run id)."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short FFF run on digits with the default offline W&B logger."""
    root = tmp_path_factory.mktemp("offline_report")
    run = root / "run"
    proc = run_cli(
        "fastff.train",
        "trainer.max_epochs=2",
        "callbacks.rich_progress_bar=null",
        f"hydra.run.dir={run}",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    return run


def _runs_csv(out: Path, *args: str) -> pd.DataFrame:
    assert main([*args, "-o", str(out), "--wandb-mode", "disabled"]) == 0
    return pd.read_csv(out / "runs.csv")


def test_offline_wandb_rows_equal_the_metrics_json_rows(run_dir, tmp_path):
    from_metrics = _runs_csv(tmp_path / "metrics", str(run_dir))
    from_wandb = _runs_csv(tmp_path / "wandb", "--wandb-offline", str(run_dir))
    assert len(from_metrics) == len(from_wandb) == 1
    expected, got = from_metrics.iloc[0], from_wandb.iloc[0]
    for column in SAME:
        assert got[column] == pytest.approx(expected[column]), column
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert got["G_A"] == pytest.approx(metrics["G_A"]) and got["status"] == "finished"
    assert got["run_id"] != expected["run_id"]  # the W&B run id, not the folder


def test_every_form_of_the_path_gives_the_run(run_dir, tmp_path):
    (wandb_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    for n, path in enumerate((run_dir / "wandb", wandb_file.parent, wandb_file)):
        runs = _runs_csv(tmp_path / str(n), "--wandb-offline", str(path))
        assert list(runs["run_id"]) == [wandb_file.stem.removeprefix("run-")]


def test_a_folder_without_offline_runs_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--wandb-offline", str(tmp_path), "-o", str(out), "--wandb-mode", "disabled"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --wandb-offline") and "no offline W&B run" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
