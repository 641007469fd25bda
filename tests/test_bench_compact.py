"""The benchmark's compact-weight columns (FF and FFF with bf16 / int8 weights) run end to end in a
tiny configuration, with their errors against float32; a wrong compact kernel reports no speedup."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from fastff.bench import runner
from fastff.layers.kernels import cpu_build, cpu_compact

CONF = str(Path(__file__).resolve().parents[1] / "conf")
TINY = [
    "mode=compact",
    "implementations=[ff,fff,ff_bf16,ff_int8,fff_bf16,fff_int8]",
    "modes.compact.in_features=48",
    "modes.compact.out_features=40",
    "modes.compact.leaf_width=8",
    "modes.compact.depths=[0,4]",
    "modes.compact.batch_sizes=[33,1]",
    "timing.min_run_time=0.01",
    "timing.repeats=1",
    "timing.warmup=1",
    "check.oracle_rows=4",
    "wandb.mode=disabled",
    "device=cpu",
]
COMPACT = ("FF_bf16", "FF_int8", "FFF_bf16", "FFF_int8")


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("bench", overrides=[*TINY, f"paths.output_dir={tmp_path}", *overrides])


def test_compact_mode_runs_with_checks_errors_and_speedups(tmp_path):
    kernel = cpu_build.load(build_missing=True)
    frame = runner.run(_cfg(tmp_path), tmp_path)
    csv = pd.read_csv(tmp_path / "bench_compact.csv")
    assert len(csv) == len(frame) == 4
    assert (csv["check"] == "ok").all() and (csv["check compact"] == "ok").all()
    assert (csv["compact_strategy"] == ("fused_cpu" if kernel else "plain")).all()
    for column in COMPACT:
        float_column = column.split("_")[0]
        assert (csv[f"t_{column}_ms"] > 0).all(), column
        ratio = csv[f"t_{float_column}_ms"] / csv[f"t_{column}_ms"]
        assert ((ratio - csv[f"{float_column}/{column}"]).abs() < 1e-9).all()
        # relative output error against float32 of the same weights: the bounds
        bound = 0.01 if column.endswith("bf16") else 0.03
        assert ((csv[f"err_{column}"] > 0) & (csv[f"err_{column}"] <= bound)).all(), column


def test_wrong_compact_kernel_reports_no_speedup(tmp_path, monkeypatch):
    real = cpu_compact.hard_forward
    monkeypatch.setattr(cpu_compact, "hard_forward", lambda layer, x: real(layer, x) + 1e-2)
    if not cpu_build.load(build_missing=True):
        pytest.skip("the compact kernel is not built here: the plain path is timed and checked")
    frame = runner.run(_cfg(tmp_path, "implementations=[fff,fff_bf16]"), tmp_path)
    assert frame["check compact"].str.contains("differs from the plain path").all()
    assert frame["FFF/FFF_bf16"].isna().all()
    assert frame["t_FFF_bf16_ms"].notna().all()
    assert not math.isnan(frame["err_FFF_bf16"].iloc[0])
