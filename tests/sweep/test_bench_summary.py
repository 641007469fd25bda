"""The benchmark's summary metrics.json: the speed sweep's metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from fastff.bench import runner

CONF = str(Path(__file__).resolve().parents[2] / "conf")
TINY = [
    "mode=table1",
    "modes.table1.in_features=20",
    "modes.table1.widths=[4,8]",
    "modes.table1.leaf_widths=[2]",
    "modes.table1.batch_sizes=[16]",
    "implementations=[ff,fff,moe]",
    "timing.min_run_time=0.01",
    "timing.repeats=1",
    "timing.warmup=1",
    "check.oracle_rows=4",
    "wandb.mode=disabled",
    "fff_strategy=plain",
    "device=cpu",
]


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("bench", overrides=list(overrides))


def test_summary_takes_max_median_min_of_each_speedup_and_null_when_unmeasured():
    frame = pd.DataFrame(
        {
            "device": ["cpu"] * 3,
            "check": ["ok", "ok", "mismatch"],
            "FF/FFF": [2.0, 4.0, math.nan],
            "MoE/FFF": [1.0, 3.0, math.nan],
            "ref/FFF": [math.nan] * 3,
        }
    )
    summary = runner.summary_metrics(frame, _cfg(*TINY))
    assert summary["speedup_ff_max"] == 4.0 and summary["speedup_ff_median"] == 3.0
    assert summary["speedup_ff_min"] == 2.0 and summary["speedup_moe_max"] == 3.0
    assert summary["speedup_ref_max"] is None
    assert summary["n_cases"] == 3 and summary["n_check_failed"] == 1
    assert summary["mode"] == "table1" and summary["status"] == "finished"


def test_a_bench_run_writes_its_summary_beside_the_csv(tmp_path):
    frame = runner.run(_cfg(*TINY, f"paths.output_dir={tmp_path}"), tmp_path)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["csv"] == "bench_table1.csv" and (tmp_path / summary["csv"]).is_file()
    assert summary["speedup_ff_max"] == round(float(frame["FF/FFF"].max()), 4) > 0
