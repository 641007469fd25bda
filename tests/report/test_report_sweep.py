"""The report of a real sweep (python -m fastff.sweep: FF, FFF l=8 and l=4 on digits, 2 epochs),
and of the committed results in docs/results/report/ when they exist."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "results" / "report"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_of_a_real_sweep(tiny_sweep, report_main, tmp_path):
    out = tmp_path / "report"
    assert report_main(tiny_sweep, "-o", out, "--table", "table1") == 0

    trials = sorted((tiny_sweep / "trials").glob("*/metrics.json"))
    assert len(trials) == 3
    metrics = pd.DataFrame([json.loads(p.read_text()) for p in trials])
    assert set(metrics["status"]) == {"finished"}
    want = (
        metrics.assign(leaf_width=metrics["leaf_width"].fillna(0))
        .groupby(["layer", "leaf_width", "training_width"])
        .agg(n=("seed", "size"), M_A=("M_A", "mean"), G_A=("G_A", "mean"), ETT_G=("ETT_G", "mean"))
        .reset_index()
    )
    got = pd.read_csv(out / "tables" / "table1_digits.csv")
    got["leaf_width"] = got["leaf_width"].fillna(0)
    merged = want.merge(got, on=["layer", "leaf_width", "training_width"], how="outer")
    assert len(merged) == 3 and list(merged["n"]) == list(merged["n_runs"])
    for metric in ("M_A", "G_A"):
        assert list(merged[f"{metric}_mean"]) == pytest.approx(list(merged[metric]), abs=1e-4)
    assert list(merged["ETT_G_mean"]) == pytest.approx(list(merged["ETT_G"]))
    assert merged["G_A_std"].isna().all()  # one seed each: no spread
    assert got["paper_dataset"].isna().all()  # digits: no paper column

    md = (out / "tables" / "table1_digits.md").read_text()
    assert "digits is not in the paper" in md and "not measured" in md
    assert "| FF |" in md and "| l=8 |" in md and "| l=4 |" in md
    for name in ("table1_digits.png", "entropy_table1_digits.png"):
        assert (out / "figures" / name).read_bytes()[:8] == PNG
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["run_id"]) == ["trials/0001", "trials/0002", "trials/0003"]
    assert set(runs["task_name"]) == {"train"} and set(runs["table"]) == {"table1"}

    rebuilt = tmp_path / "rebuilt"
    assert report_main(out / "runs.csv", "-o", rebuilt, "--table", "table1") == 0
    for name in ("table1_digits.md", "table1_digits.csv"):
        assert (out / "tables" / name).read_bytes() == (rebuilt / "tables" / name).read_bytes()


def test_committed_report_rebuilds_from_its_csv(report_main, tmp_path):
    runs = COMMITTED / "runs.csv"
    if not runs.is_file():
        pytest.skip(f"{runs.relative_to(ROOT)} is not committed yet (the committed report)")
    sources = [runs] + ([COMMITTED / "bench.csv"] if (COMMITTED / "bench.csv").is_file() else [])
    out = tmp_path / "report"
    assert report_main(*sources, "-o", out) == 0
    committed = sorted((COMMITTED / "tables").glob("*.md"))
    assert committed, "docs/results/report/tables/ holds no tables"
    for path in committed:
        rebuilt = out / "tables" / path.name
        assert rebuilt.is_file(), f"{path.name} is not rebuilt from runs.csv"
        assert rebuilt.read_text() == path.read_text(), path.name
