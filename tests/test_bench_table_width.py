"""``make bench``'s printed table fits 100 columns (split into several tables that repeat the
row keys, short headers), the CSV keeps every column, and W&B prints nothing on the terminal."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from fastff.bench import report

ROOT = Path(__file__).resolve().parents[1]


def _wide_frame() -> pd.DataFrame:
    """Every printed column, with the widest values a run produces (a failed check included)."""
    rows = []
    for depth in range(1, 5):
        row: dict = {
            "device": "cpu",
            "dtype": "float32",
            "batch": 2048,
            "depth": depth,
            "leaf_width": 32,
            "training_width": 32 * 2**depth,
        }
        for column in report.SHOWN:
            row.setdefault(column, 123456.789 / 10**depth)
        row["fff_strategy"] = "fused_cpu"
        row["compact_strategy"] = "fused_cpu"
        row["check"] = "ok" if depth != 2 else "differs at 37 rows beyond rounding (max 0.3)"
        row["check compact"] = "ok"
        row["t_FFF[grouped]_ms"] = 0.001234
        row["notes"] = "reference skipped: batch 2048 > limits.reference_max_batch" * (depth == 4)
        rows.append(row)
    return pd.DataFrame(rows)


def _printed(frame: pd.DataFrame, width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    report.print_table(frame, "fastff bench table1 (float32, 2 CPU threads)", console)
    return out.getvalue()


def test_every_column_is_printed_within_100_columns():
    frame = _wide_frame()
    text = _printed(frame, width=220)  # a log file's console: 220 wide
    assert max(len(line.rstrip()) for line in text.splitlines()) <= report.TABLE_WIDTH
    printed = [c for c in report.SHOWN if c in frame] + ["t_FFF[grouped]_ms"]
    shared = {"device", "dtype", "batch", "leaf_width"}  # one value each: in the title
    for column in printed:
        if column not in shared:
            assert report.header(column) in text, column
    assert "batch 2048" in text.splitlines()[0] and "leaf 32" in text.splitlines()[0]
    # the failed check's reason and the note are printed in full under the tables
    assert "check differs at 37 rows beyond rounding (max 0.3)" in " ".join(text.split())
    assert "reference skipped" in text
    # no value is cut: every depth's FF time appears in full
    for depth in range(1, 5):
        assert report._format(123456.789 / 10**depth) in text


def test_a_narrower_terminal_gets_narrower_tables():
    text = _printed(_wide_frame(), width=72)
    lines = [line for line in text.splitlines() if not line.startswith("fastff")]
    assert max(len(line.rstrip()) for line in lines) <= 72


def test_number_format_is_short_and_uncut():
    assert report._format(3919.4) == "3,919"
    assert report._format(0.0628212) == "0.0628"
    assert report._format(754.31) == "754"
    assert report._format(math.nan) == "-"
    assert report.header("t_FF_onnx_ms") == "FF onnx ms"
    assert report.header("training_width") == "width"


@pytest.mark.slow
def test_tiny_bench_run_prints_a_narrow_table_and_no_wandb_lines(tmp_path: Path):
    """A tiny ``make bench`` (python -m fastff.bench) with W&B offline, as by default."""
    args = [
        "mode=table1",
        "modes.table1.in_features=20",
        "modes.table1.widths=[4,8]",
        "modes.table1.leaf_widths=[2,4]",
        "modes.table1.batch_sizes=[16]",
        "timing.min_run_time=0.01",
        "timing.repeats=1",
        "timing.warmup=1",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    proc = subprocess.run(
        [sys.executable, "-m", "fastff.bench", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "COLUMNS": "250"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [
        line
        for line in proc.stdout.splitlines()
        if not line.startswith(("Results: ", "Plots: ", "table1 on cpu:"))
    ]
    assert any("FF/FFF" in line for line in lines), proc.stdout
    assert max(len(line.rstrip()) for line in lines) <= 100, proc.stdout
    assert "wandb:" not in proc.stdout + proc.stderr
    csv = pd.read_csv(tmp_path / "run" / "bench_table1.csv")
    assert {"t_FF_ms", "t_FFF_onnx_ms", "training_width", "ideal FF/FFF"} <= set(csv.columns)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "the W&B run is still kept"
