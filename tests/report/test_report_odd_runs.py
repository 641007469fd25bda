"""Runs a report meets in the wild: a finished run whose G_A is Infinity, NaN or a string, a
metrics.json without a status, a run that failed before its data loaded, a user's own
``--multirun`` grid with no task_name or tags. Through ``fastff.report``'s command line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from report_helpers import run_metrics, write_run

GRID = {"dataset": "digits", "layer": "fff", "task_name": "train"}


def _runs_csv(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "runs.csv", keep_default_na=False).set_index("run_id")


def _write(folder: Path, metrics: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))  # allows Infinity and NaN


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("inf"), "finished, but G_A is inf, not a finite number"),
        (float("nan"), "finished, but G_A is nan, not a finite number"),
        ("87.5", "finished, but G_A is '87.5' (str), not a number"),
        (187.5, "finished, but G_A is 187.5, outside 0-100"),
    ],
)
def test_a_finished_run_with_a_bad_accuracy_is_invalid_never_averaged(
    tmp_path, report_main, value, reason
):
    root = tmp_path / "runs"
    for seed, g_a in ((0, 90.0), (1, 92.0)):
        write_run(root / f"w32_s{seed}", **GRID, leaf=8, width=32, seed=seed, M_A=99.0, G_A=g_a)
    bad = run_metrics(**GRID, leaf=8, width=32, seed=2, M_A=99.0, G_A=1.0)
    bad["G_A"] = value
    _write(root / "w32_s2", bad)
    out = tmp_path / "report"
    assert report_main(root, "-o", out) == 0
    runs = _runs_csv(out)
    assert runs.loc["w32_s2", "status"] == "invalid"
    assert runs.loc["w32_s2", "error"] == reason
    table = pd.read_csv(out / "tables" / "runs_digits.csv")
    assert list(table["n_runs"]) == [2]
    assert table["G_A_mean"].iloc[0] == pytest.approx(91.0)
    report = (out / "report.md").read_text()
    assert "Runs found: 3: finished 2, invalid 1." in report
    assert "| w32_s2 | invalid |" in report and reason in report


def test_a_metrics_json_without_a_status_is_incomplete(tmp_path, report_main):
    root = tmp_path / "runs"
    write_run(root / "done", **GRID, leaf=8, width=32, seed=0, M_A=99.0, G_A=90.0)
    partial = run_metrics(**GRID, leaf=8, width=32, seed=1, M_A=99.0, G_A=95.0)
    del partial["status"]
    _write(root / "partial", partial)
    out = tmp_path / "report"
    assert report_main(root, "-o", out) == 0
    runs = _runs_csv(out)
    assert runs.loc["partial", "status"] == "incomplete"
    assert runs.loc["partial", "error"] == "metrics.json has no status"
    assert pd.read_csv(out / "tables" / "runs_digits.csv")["G_A_mean"].iloc[0] == 90.0


@pytest.mark.parametrize(
    ("target", "dataset"),
    [
        ("fastff.data.torchvision_sets.MNISTDataModule", "mnist"),
        ("fastff.data.torchvision_sets.FashionMNISTDataModule", "fashion_mnist"),
        ("fastff.data.torchvision_sets.CIFAR100DataModule", "cifar100"),
        ("fastff.data.mnist5k.MNIST5kDataModule", "mnist5k"),
        ("my_package.data.OwnDataModule", "own"),
    ],
)
def test_a_run_that_failed_before_its_data_loaded_names_the_dataset(
    tmp_path, report_main, target, dataset
):
    """metrics.json has no dataset then: its name comes from the data config's _target_, the
    conf/data/*.yaml that uses it."""
    root = tmp_path / "runs"
    write_run(root / "done", **GRID, leaf=8, width=32, seed=0, M_A=99.0, G_A=90.0)
    failed = run_metrics(**GRID, leaf=8, width=32, seed=1, M_A=None, G_A=None, status="failed")
    del failed["dataset"]
    failed["config"]["data"]["_target_"] = target
    _write(root / "failed", failed)
    out = tmp_path / "report"
    assert report_main(root, "-o", out) == 0
    assert _runs_csv(out).loc["failed", "dataset"] == dataset


def test_a_users_own_multirun_grid_gets_a_table_and_a_figure(tmp_path, report_main):
    """No task_name naming a table, no tags: accuracy vs width, grouped by the leaf width (the
    setting that varies), means over the seeds computed here from the same numbers."""
    root = tmp_path / "multirun"
    expected = {}
    job = 0
    for leaf in (8, 16):
        for width in (16, 32, 64):
            if width < leaf:
                continue
            values = []
            for seed in (0, 1):
                g_a = 80.0 + width / 8 + leaf / 4 + seed
                values.append(g_a)
                write_run(
                    root / str(job), **GRID, leaf=leaf, width=width, seed=seed, M_A=99.0, G_A=g_a
                )
                job += 1
            expected[(f"leaf_width={leaf}", width)] = sum(values) / len(values)
    out = tmp_path / "report"
    assert report_main(root, "-o", out) == 0
    table = pd.read_csv(out / "tables" / "runs_digits.csv", keep_default_na=False)
    got = {(r.row, int(r.training_width)): r.G_A_mean for r in table.itertuples()}
    assert got.keys() == expected.keys()
    for key, mean in expected.items():
        assert got[key] == pytest.approx(mean, abs=1e-4)
    assert set(table["n_runs"]) == {2} and set(table["seeds"]) == {"0,1"}
    assert "row" in table and "leaf_width" in table and "layer" not in table  # only what varies
    assert (out / "figures" / "runs_digits.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "## Runs by training width, no paper table (digits)" in report
    assert list(table["row"]) == ["leaf_width=8"] * 3 + ["leaf_width=16"] * 3  # numeric order
    assert "grouped by the settings that vary among them (leaf_width)" in report
    assert "tabulated by training width in 'Runs by training width'" in report
    assert "![Runs of no paper table on digits" in report


def test_runs_of_paper_tables_get_no_extra_table(tmp_path, report_main):
    root = tmp_path / "runs"
    write_run(
        root / "t1",
        dataset="usps",
        layer="ff",
        width=16,
        seed=0,
        M_A=99.0,
        G_A=93.0,
        task_name="table1",
        tags=("table1",),
    )
    out = tmp_path / "report"
    assert report_main(root, "-o", out) == 0
    assert not list((out / "tables").glob("runs_*"))
    assert report_main(root, "-o", out, "--table", "runs") == 2
