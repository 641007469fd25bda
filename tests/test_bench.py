"""The speed benchmark runs every mode end to end in tiny configurations, refuses wrong kernels."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from fastff.bench import runner
from fastff.bench.modes import MODES, reference_unavailable_reason
from fastff.layers import kernels

CONF = str(Path(__file__).resolve().parents[1] / "conf")
FAST = [
    "timing.min_run_time=0.01",
    "timing.repeats=2",
    "timing.warmup=1",
    "check.oracle_rows=4",
    "wandb.mode=disabled",
    "fff_strategy=plain",
    "device=cpu",
]
TINY = {
    "paper_fig3": [
        "mode=paper_fig3",
        "modes.paper_fig3.in_features=16",
        "modes.paper_fig3.out_features=12",
        "modes.paper_fig3.leaf_width=4",
        "modes.paper_fig3.min_depth=1",
        "modes.paper_fig3.max_depth=3",
        "modes.paper_fig3.batch_sizes=[8]",
    ],
    "table1": [
        "mode=table1",
        "modes.table1.in_features=20",
        "modes.table1.widths=[4,8]",
        "modes.table1.leaf_widths=[2,4]",
        "modes.table1.batch_sizes=[16]",
    ],
    "train": [
        "mode=train",
        "modes.train.in_features=20",
        "modes.train.leaf_width=2",
        "modes.train.depths=[1,3]",
        "modes.train.batch_sizes=[8]",
    ],
    "train_vit": [
        "mode=train_vit",
        "modes.train_vit.features=12",
        "modes.train_vit.tokens=5",
        "modes.train_vit.training_width=8",
        "modes.train_vit.leaf_widths=[4,1]",
        "modes.train_vit.batch_sizes=[3]",
    ],
}
needs_reference = pytest.mark.skipif(
    reference_unavailable_reason() is not None, reason="fastfeedforward is not installed"
)


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("bench", overrides=[*FAST, f"paths.output_dir={tmp_path}", *overrides])


@needs_reference
@pytest.mark.parametrize("mode", list(TINY))
def test_mode_runs_end_to_end(tmp_path, mode):
    frame = runner.run(_cfg(tmp_path, *TINY[mode]), tmp_path)
    csv = pd.read_csv(tmp_path / f"bench_{mode}.csv")
    rows = {"paper_fig3": 3, "table1": 4, "train": 2, "train_vit": 2}[mode]
    assert len(csv) == len(frame) == rows
    assert (tmp_path / f"bench_{mode}_times.png").stat().st_size > 0
    assert (tmp_path / f"bench_{mode}_speedups.png").stat().st_size > 0
    for column in ("t_FF_ms", "t_FFF_ms", "t_MoE_ms", "FF/FFF", "MoE/FFF", "ideal FF/FFF"):
        assert csv[column].notna().all() and (csv[column] > 0).all(), column
    assert (csv["check"] == "ok").all()
    # The reference cannot run depth 0 (table1 width == leaf width); elsewhere it is timed.
    timed = csv["depth"] > 0
    assert csv.loc[timed, "ref/FFF"].notna().all()
    if (~timed).any():
        assert csv.loc[~timed, "notes"].str.contains("crashes at depth 0").all()
    ratio = csv["t_FF_ms"] / csv["t_FFF_ms"]
    assert ((ratio - csv["FF/FFF"]).abs() < 1e-9).all()


def test_budgets_skip_and_say_why(tmp_path):
    cfg = _cfg(
        tmp_path,
        *TINY["paper_fig3"],
        "limits.memory_budget_gb=0.000002",  # 2 KiB: FF, FFF and MoE at depth 3 exceed it
        "limits.reference_max_batch=4",
        "implementations=[ff,fff,moe,reference]",
    )
    frame = runner.run(cfg, tmp_path)
    deepest = frame[frame["depth"] == 3].iloc[0]
    assert math.isnan(deepest["t_FF_ms"]) and math.isnan(deepest["FF/FFF"])
    assert "FF skipped: weights need" in deepest["notes"]
    assert "memory_budget_gb" in deepest["notes"]
    assert "FFF skipped" in deepest["notes"]  # the FFF itself is as large as the FF
    if reference_unavailable_reason() is None:
        shallow = frame[frame["depth"] == 1].iloc[0]
        assert "reference_max_batch=4" in shallow["notes"]


def test_gflop_limit_skips(tmp_path):
    frame = runner.run(
        _cfg(tmp_path, *TINY["table1"], "limits.max_gflop_per_call=0.000001"), tmp_path
    )
    assert frame["t_FF_ms"].isna().all()
    assert frame["notes"].str.contains("max_gflop_per_call").all()


def test_wrong_kernel_reports_no_speedup(tmp_path, monkeypatch):
    grouped = kernels.REGISTRY["grouped"]

    def broken(layer, x2d):
        return grouped.forward(layer, x2d) + 1e-2

    monkeypatch.setitem(kernels.REGISTRY, "grouped", dataclasses.replace(grouped, forward=broken))
    cfg = _cfg(tmp_path, *TINY["table1"], "implementations=[ff,fff]", "fff_strategy=grouped")
    frame = runner.run(cfg, tmp_path)
    assert frame["check"].str.contains("differs from the plain path").all()
    assert frame["FF/FFF"].isna().all()
    assert frame["t_FF_ms"].notna().all()


def test_extra_strategies_are_checked_and_timed(tmp_path):
    frame = runner.run(
        _cfg(
            tmp_path,
            *TINY["paper_fig3"],
            "implementations=[ff,fff]",
            "extra_fff_strategies=[grouped]",
        ),
        tmp_path,
    )
    assert (frame["check"] == "ok").all()
    assert frame["t_FFF[grouped]_ms"].notna().all()


def test_wandb_offline_run_in_run_dir(tmp_path):
    cfg = _cfg(tmp_path, *TINY["table1"], "implementations=[ff,fff]", "wandb.mode=offline")
    runner.run(cfg, tmp_path)
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mode=vitt", "mode must be one of"),
        ("implementations=[ff,dense]", "implementations must be"),
        ("fff_strategy=fastest", "fff_strategy"),
        ("dtype=int8", "dtype must be one of"),
        ("threads=0", "threads must be an integer >= 1"),
        ("device=tpu", "device must be one of"),
        ("timing.warmup=-1", "timing.warmup must be an integer >= 0"),
        ("check.oracle_rows=-1", "check.oracle_rows must be an integer >= 0"),
        ("seed=-1", "seed must be an integer from 0"),
        ("wandb.mode=cloud", "wandb.mode must be one of"),
        ("modes.paper_fig3.batch_sizes=[-8]", "modes.paper_fig3.batch_sizes must be"),
        ("modes.paper_fig3.batch_sizes=[]", "modes.paper_fig3.batch_sizes must be a non-empty"),
        ("modes.paper_fig3.leaf_width=0", "modes.paper_fig3.leaf_width must be an integer >= 1"),
        ("modes.paper_fig3.max_depth=-1", "modes.paper_fig3.max_depth must be an integer >= 0"),
        ("modes.paper_fig3.min_depth=14", "min_depth=14 must be <= modes.paper_fig3.max_depth=13"),
        ("modes.paper_fig3.in_features=0", "modes.paper_fig3.in_features must be"),
    ],
)
def test_bad_settings_fail_before_work(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        runner.run(_cfg(tmp_path, override), tmp_path)
    assert not list(tmp_path.glob("*.csv"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("modes.table1.widths=[0]", "modes.table1.widths must be a list of integers >= 1"),
        ("modes.table1.leaf_widths=[0]", "modes.table1.leaf_widths must be"),
        ("modes.table1.widths=[6]", "6 is not leaf width 2 times a power of two"),
        ("modes.table1.widths=[1]", "no width is >= a leaf width"),
    ],
)
def test_bad_table1_sizes_fail_before_work(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        runner.run(_cfg(tmp_path, *TINY["table1"], override), tmp_path)
    assert not list(tmp_path.glob("*.csv"))


def test_interrupted_run_keeps_its_finished_rows(tmp_path, monkeypatch):
    real_run_case = runner.run_case
    calls = []

    def run_case(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run_case(*args, **kwargs)

    monkeypatch.setattr(runner, "run_case", run_case)
    cfg = _cfg(tmp_path, *TINY["paper_fig3"], "implementations=[ff,fff]")
    with pytest.raises(SystemExit) as stopped:
        runner.run(cfg, tmp_path)
    assert stopped.value.code == 130
    rows = pd.read_csv(tmp_path / "bench_paper_fig3.csv")
    assert list(rows["depth"]) == [1, 2]
    assert rows["t_FFF_ms"].notna().all()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        runner.run(_cfg(tmp_path, "device=cuda"), tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mode_runs(tmp_path):
    frame = runner.run(
        _cfg(tmp_path, *TINY["paper_fig3"], "device=cuda", "fff_strategy=auto"), tmp_path
    )
    assert (frame["device"] == "cuda").all() and (frame["check"] == "ok").all()


@pytest.mark.slow
def test_entry_point_writes_csv_in_hydra_run_dir(tmp_path):
    command = [
        sys.executable,
        "-m",
        "fastff.bench",
        *TINY["table1"],
        *[o for o in FAST if not o.startswith("paths.")],
        "implementations=[ff,fff]",
        f"paths.log_dir={tmp_path}",
    ]
    env = {**os.environ, "FASTFF_FUSED_CPU": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FF/FFF" in result.stdout
    assert len(list(tmp_path.glob("bench/runs/*/bench_table1.csv"))) == 1
    bad = subprocess.run(
        [*command, "mode=nope"], capture_output=True, text=True, env=env, timeout=300
    )
    assert bad.returncode == 2 and "mode must be one of" in bad.stderr


@pytest.mark.parametrize("moe_k", [1, 2, 3])
def test_ideal_ratios_and_costs_follow_the_layers_sizes(moe_k):
    d, o, leaf, depth, batch = 16, 8, 4, 3, 5
    mode_cfg = {
        "in_features": d,
        "out_features": o,
        "leaf_width": leaf,
        "min_depth": depth,
        "max_depth": depth,
        "batch_sizes": [batch],
        "moe_k": moe_k,
    }
    (case,) = MODES["paper_fig3"](mode_cfg, ["ff", "fff", "moe"])
    experts, width = 2**depth, leaf * 2**depth
    ff_macs = d * width + width * o
    fff_macs = d * depth + d * leaf + leaf * o  # depth node dot products and one leaf
    moe_macs = d * experts + moe_k * (d * leaf + leaf * o)  # the gate and k experts
    assert case.ideal["ideal FF/FFF"] == pytest.approx(ff_macs / fff_macs)
    assert case.ideal["ideal MoE/FFF"] == pytest.approx(moe_macs / fff_macs)
    assert case.implementations["fff"].flops == 2 * fff_macs * batch
    fff_params = (experts - 1) * (d + 1) + experts * (d * leaf + leaf + leaf * o + o)
    assert case.implementations["fff"].weight_bytes == 4 * fff_params
    built = case.build(["fff"])["fff"]
    assert sum(p.numel() for p in built.parameters()) == fff_params


def test_training_costs_count_every_node_and_leaf():
    d, o, leaf, depth, batch = 12, 6, 2, 4, 3
    mode_cfg = {
        "in_features": d,
        "out_features": o,
        "leaf_width": leaf,
        "depths": [depth],
        "batch_sizes": [batch],
        "moe_k": 2,
        "hardening": 3.0,
    }
    (case,) = MODES["train"](mode_cfg, ["ff", "fff", "moe"])
    width = leaf * 2**depth
    soft_macs = d * (2**depth - 1) + d * width + width * o
    assert case.kind == "training"
    assert case.implementations["fff"].flops == 2 * 3 * soft_macs * batch
    assert case.ideal["ideal FF/FFF"] == pytest.approx((d * width + width * o) / soft_macs)


def test_timing_leaves_global_state_as_it_found_it():
    code = (
        "import logging, torch\n"
        "logger = logging.getLogger('torch.utils.cpp_extension')\n"
        "before = logger.level\n"
        "from fastff.bench.timing import time_interleaved\n"
        "import fastff.bench\n"
        "assert logger.level == before, 'import changed a logger level'\n"
        "torch.set_num_threads(1)\n"
        "times, errors = time_interleaved({'add': lambda: torch.ones(3) + 1}, "
        "device=torch.device('cpu'), threads=2, min_run_time=0.001, repeats=1, warmup=1)\n"
        "assert set(times) == {'add'} and not errors\n"
        "assert torch.get_num_threads() == 1, torch.get_num_threads()\n"
        "assert logger.level == before\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_vit_mode_times_the_layers_and_the_model(tmp_path):
    cfg = _cfg(
        tmp_path,
        "mode=vit",
        "modes.vit.image_shape=[1,8,8]",
        "modes.vit.leaf_widths=[32,4]",
        "modes.vit.batch_sizes=[2]",
        "implementations=[ff,fff,moe]",
    )
    frame = runner.run(cfg, tmp_path)
    assert sorted(zip(frame["part"], frame["leaf_width"], strict=True)) == [
        ("layers", 4),
        ("layers", 32),
        ("model", 4),
        ("model", 32),
    ]
    assert (frame["check"] == "ok").all()  # every block's FFF checked on its own tokens
    assert (frame["tokens"] == 4 + 1).all()  # 2x2 patches of 4x4 pixels and the class token
    assert frame["depth"].tolist() == [2, 2, 5, 5]
    for column in ("t_FF_ms", "t_FFF_ms", "t_MoE_ms", "FF/FFF", "ideal FF/FFF"):
        assert frame[column].notna().all(), column
    layers = frame[frame["part"] == "layers"].set_index("leaf_width")
    # 4 blocks x 5 tokens x 2 images; FF: 128 -> 128 -> 128; FFF: depth nodes and one leaf
    ff_macs = 2 * 128 * 128
    for leaf, depth in ((32, 2), (4, 5)):
        fff_macs = 128 * depth + 2 * 128 * leaf
        assert layers.loc[leaf, "ideal FF/FFF"] == pytest.approx(ff_macs / fff_macs)
    assert (tmp_path / "bench_vit_speedups.png").stat().st_size > 0


def test_vit_mode_catches_a_wrong_kernel_in_any_block(tmp_path, monkeypatch):
    grouped = kernels.REGISTRY["grouped"]

    def broken(layer, x2d):
        return grouped.forward(layer, x2d) + 1e-2

    monkeypatch.setitem(kernels.REGISTRY, "grouped", dataclasses.replace(grouped, forward=broken))
    cfg = _cfg(
        tmp_path,
        "mode=vit",
        "modes.vit.image_shape=[1,8,8]",
        "modes.vit.leaf_widths=[8]",
        "modes.vit.batch_sizes=[2]",
        "implementations=[ff,fff]",
        "fff_strategy=grouped",
    )
    frame = runner.run(cfg, tmp_path)
    assert frame["check"].str.contains("differs from the plain path").all()
    assert frame["FF/FFF"].isna().all()


def test_train_vit_times_token_batches_with_input_gradients_and_counts_every_node(tmp_path):
    cfg = _cfg(tmp_path, *TINY["train_vit"], "implementations=[ff,fff]")
    mode_cfg = {
        "features": 12,
        "tokens": 5,
        "training_width": 8,
        "leaf_widths": [1, 4],
        "batch_sizes": [3],
        "moe_k": 2,
        "hardening": 3.0,
    }
    mode_case, _ = MODES["train_vit"](mode_cfg, ["ff", "fff"])
    assert mode_case.input_requires_grad and mode_case.timed_input().shape == (3, 5, 12)
    assert mode_case.params["depth"] == 3 and mode_case.batch == 15
    # leaf 1 at training width 8: 7 nodes + 8 leaves of 12 inputs, 8 hidden units to 12 outputs
    ff_macs, fff_macs = 12 * 8 + 8 * 12, 12 * 7 + 12 * 8 + 8 * 12
    assert mode_case.ideal["ideal FF/FFF"] == pytest.approx(ff_macs / fff_macs)
    frame = runner.run(cfg, tmp_path)
    assert list(frame["depth"]) == [1, 3] and (frame["t_FFF_ms"] > 0).all()


def test_extra_soft_implementations_are_timed_in_training_modes(tmp_path):
    cfg = _cfg(
        tmp_path,
        *TINY["train"],
        "implementations=[ff,fff]",
        "extra_soft_implementations=[composite,fused]",
    )
    frame = runner.run(cfg, tmp_path)
    for column in ("t_FFF[composite]_ms", "t_FFF[fused]_ms"):
        assert (frame[column] > 0).all(), column
    with pytest.raises(ValueError, match="extra_soft_implementations"):
        runner.validate(_cfg(tmp_path, "extra_soft_implementations=[fast]"))


def test_onnx_columns_skip_layers_over_the_onnx_limit(tmp_path):
    cfg = _cfg(
        tmp_path,
        *TINY["table1"],
        "implementations=[ff,fff,ff_onnx,fff_onnx]",
        "limits.onnx_max_gb=0.0000001",
    )
    frame = runner.run(cfg, tmp_path)
    assert frame["t_FF_onnx_ms"].isna().all() and frame["t_FFF_onnx_ms"].isna().all()
    assert frame["notes"].str.contains("limits.onnx_max_gb").all()
