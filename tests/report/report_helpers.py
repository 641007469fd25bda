"""Hand-made results for the report's tests: metrics.json files as fastff.train writes them (with
failed, interrupted and missing runs and mixed seeds), benchmark CSVs as fastff.bench writes them,
and the real tiny sweep's file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd


def run_metrics(
    *,
    dataset: str,
    layer: str,
    width: int,
    seed: int,
    M_A: float | None,
    G_A: float | None,
    leaf: int | None = None,
    depth: int | None = None,
    status: str = "finished",
    task_name: str = "train",
    tags: tuple[str, ...] = (),
    model: str = "flat",
    hardening: float = 3.0,
    frozen: bool = False,
    lr: float = 0.01,
    epochs: int = 3,
    entropy_layers: tuple[str, ...] = ("layer",),
) -> dict[str, Any]:
    """A metrics.json (schema 2) like fastff.train writes, with a per-epoch history holding
    ``entropy/<layer>/level_<m>`` for FFF runs (values from the seed, level and epoch)."""
    layer_cfg: dict[str, Any] = {"_target_": f"fastff.models.layer_builders.{layer}"}
    extra: dict[str, Any] = {}
    if layer == "fff":
        depth = depth if depth is not None else int(math.log2(width // leaf))
        training_width, inference_width, inference_size = leaf * 2**depth, leaf, depth + leaf
        layer_cfg |= {"leaf_width": leaf, "hardening": hardening, "frozen_tree": frozen}
    elif layer == "moe":
        training_width, inference_width, inference_size = width, 32, 32
        extra = {"num_experts": width // 16, "expert_width": 16, "k": 2}
        layer_cfg |= {"expert_width": 16, "k": 2}
    else:
        training_width = inference_width = inference_size = width
    history = []
    for epoch in range(1, epochs + 1):
        entry: dict[str, Any] = {"epoch": epoch, "train_acc": 0.5, "val_acc": 0.4}
        if layer == "fff":
            for name in entropy_layers:
                for level in range(depth):
                    entry[f"entropy/{name}/level_{level}"] = 0.6 / (epoch + level + seed)
        history.append(entry)
    return {
        "schema_version": 2,
        "seed": seed,
        "output_dir": "/somewhere",
        "config": {
            "task_name": task_name,
            "tags": list(tags),
            "seed": seed,
            "data": {"batch_size": 64},
            "model": {"name": model},
            "layer": layer_cfg,
            "optimizer": {"_target_": "torch.optim.Adam", "lr": lr},
            "trainer": {"max_epochs": epochs},
            "callbacks": {"early_stopping": {"patience": 3}},
        },
        "M_A": M_A,
        "G_A": G_A,
        "ETT_M": epochs,
        "ETT_G": max(1, epochs - 1),
        "wall_time_s": 1.25,
        "status": status,
        "dataset": dataset,
        "model": model,
        "layer": layer,
        "width": training_width,
        "leaf_width": leaf if layer == "fff" else None,
        "depth": depth if layer == "fff" else None,
        "training_width": training_width,
        "inference_width": inference_width,
        "inference_size": inference_size,
        **extra,
        "n_hosted_layers": len(entropy_layers),
        "n_params": 1000,
        "provenance": {"git": {"commit": "0123abc", "dirty": False}},
        "epochs": epochs,
        "history": history,
    }


def write_run(folder: Path, **fields: Any) -> Path:
    """Write ``folder/metrics.json`` (see :func:`run_metrics`); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(run_metrics(**fields), indent=1))
    return folder


T1 = {"dataset": "usps", "tags": ("table1", "sweep_table1"), "task_name": "table1"}
# (subfolder, fields): Table 1 on USPS with 1-3 seeds per configuration and unfinished runs,
# Table 2 on CIFAR10 (FF, MoE, FFF), Table 3 in a ViT on mnist5k (h = 5 and frozen), Figure 2.
HANDMADE: list[tuple[str, dict[str, Any]]] = [
    ("t1/ff_w16_s0", {**T1, "layer": "ff", "width": 16, "seed": 0, "M_A": 99.0, "G_A": 93.0}),
    ("t1/ff_w16_s1", {**T1, "layer": "ff", "width": 16, "seed": 1, "M_A": 100.0, "G_A": 94.0}),
    ("t1/ff_w16_s2", {**T1, "layer": "ff", "width": 16, "seed": 2, "M_A": 98.0, "G_A": 92.5}),
    ("t1/ff_w32_s0", {**T1, "layer": "ff", "width": 32, "seed": 0, "M_A": 100.0, "G_A": 93.5}),
    ("t1/ff_w32_s1", {**T1, "layer": "ff", "width": 32, "seed": 1, "M_A": 99.5, "G_A": 93.9}),
    (
        "t1/l8_w16_s0",
        {**T1, "layer": "fff", "leaf": 8, "width": 16, "seed": 0, "M_A": 97.0, "G_A": 90.0},
    ),
    (
        "t1/l8_w16_s1",
        {**T1, "layer": "fff", "leaf": 8, "width": 16, "seed": 1, "M_A": 96.0, "G_A": 91.0},
    ),
    (
        "t1/l8_w16_s2",
        {**T1, "layer": "fff", "leaf": 8, "width": 16, "seed": 2, "M_A": 95.5, "G_A": 88.0},
    ),
    (
        "t1/l8_w32_s0",
        {**T1, "layer": "fff", "leaf": 8, "width": 32, "seed": 0, "M_A": 98.0, "G_A": 91.0},
    ),
    (
        "t1/l4_w16_s1",
        {**T1, "layer": "fff", "leaf": 4, "width": 16, "seed": 1, "M_A": 90.0, "G_A": 85.0},
    ),
    (
        "t1/l4_w16_s2",
        {**T1, "layer": "fff", "leaf": 4, "width": 16, "seed": 2, "M_A": 92.0, "G_A": 86.5},
    ),
    # unfinished runs: never averaged in
    (
        "t1/l8_w16_s3_failed",
        {
            **T1,
            "layer": "fff",
            "leaf": 8,
            "width": 16,
            "seed": 3,
            "M_A": 10.0,
            "G_A": None,
            "status": "failed",
        },
    ),
    (
        "t1/ff_w16_s4_interrupted",
        {
            **T1,
            "layer": "ff",
            "width": 16,
            "seed": 4,
            "M_A": 5.0,
            "G_A": 5.0,
            "status": "interrupted",
        },
    ),
    (
        "t1/ff_w32_s5_running",
        {
            **T1,
            "layer": "ff",
            "width": 32,
            "seed": 5,
            "M_A": None,
            "G_A": None,
            "status": "running",
        },
    ),
    # Table 2 on CIFAR10
    *[
        (
            f"t2/{layer}_w64_s{seed}",
            {
                "dataset": "cifar10",
                "task_name": "table2",
                "tags": ("table2",),
                "layer": layer,
                "width": 64,
                "leaf": 32 if layer == "fff" else None,
                "seed": seed,
                "M_A": 80.0 + seed + i,
                "G_A": 40.0 + 2 * seed + i,
            },
        )
        for i, layer in enumerate(("ff", "moe", "fff"))
        for seed in (0, 1)
    ],
    # Table 3: the ViT on mnist5k, FF and FFF l = 8 with h = 5 and a frozen tree
    *[
        (
            f"t3/{name}_s{seed}",
            {
                "dataset": "mnist5k",
                "task_name": "table3_mnist5k",
                "tags": ("table3_mnist5k",),
                "model": "vit",
                "layer": layer,
                "width": 128,
                "leaf": 8 if layer == "fff" else None,
                "hardening": 5.0,
                "frozen": name == "frozen",
                "seed": seed,
                "M_A": 95.0 - i,
                "G_A": 94.0 - 2 * i + seed,
                "entropy_layers": ("blocks.0.mlp", "blocks.1.mlp"),
            },
        )
        for i, (name, layer) in enumerate((("ff", "ff"), ("h5", "fff"), ("frozen", "fff")))
        for seed in (0, 1)
    ],
    # Figure 2 on SVHN
    (
        "f2/ff_w10",
        {
            "dataset": "svhn",
            "tags": ("fig2",),
            "layer": "ff",
            "width": 10,
            "seed": 0,
            "M_A": 50.0,
            "G_A": 40.0,
        },
    ),
    (
        "f2/fff_l8_d2",
        {
            "dataset": "svhn",
            "tags": ("fig2",),
            "layer": "fff",
            "leaf": 8,
            "depth": 2,
            "width": 32,
            "hardening": 0.0,
            "seed": 0,
            "M_A": 60.0,
            "G_A": 41.0,
        },
    ),
]

BENCH_COLUMNS = [
    "mode",
    "device",
    "dtype",
    "part",
    "batch",
    "in",
    "out",
    "leaf_width",
    "depth",
    "training_width",
    "check",
    "fff_strategy",
    "t_FF_ms",
    "t_FFF_ms",
    "t_MoE_ms",
    "FF/FFF",
    "MoE/FFF",
    "notes",
]


def bench_rows() -> dict[str, pd.DataFrame]:
    """Benchmark CSVs by mode, shaped like python -m fastff.bench's (batch 256 rows in table1
    that the report must not use: the paper's batch is 2048; table1 timed at USPS's 256 inputs,
    the input size of the hand-made Table 1 runs)."""
    table1 = []
    for batch in (256, 2048):
        for width in (16, 32):
            for leaf in (8, 4):
                t_ff, t_fff = 1.0 + width / 16, 0.5 + leaf / 16 + batch / 4096
                table1.append(
                    ["table1", "cpu", "float32", "", batch, 256, 10, leaf,
                     int(math.log2(width // leaf)), width, "ok", "fused_cpu",
                     t_ff, t_fff, 3.0, t_ff / t_fff, 3.0 / t_fff, ""]
                )  # fmt: skip
    vit = []
    for leaf in (32, 8):
        for part, t_ff in (("layers", 10.0), ("model", 40.0)):
            t_fff = leaf / 8 + (30.0 if part == "model" else 0.0)
            vit.append(
                ["vit", "cpu", "float32", part, 256, 128, 128, leaf, int(math.log2(128 // leaf)),
                 128, "ok", "fused_cpu", t_ff, t_fff, 20.0, t_ff / t_fff, 20.0 / t_fff, ""]
            )  # fmt: skip
    fig3 = []
    for batch in (1, 256):
        for depth in (1, 2, 3):
            t_ff, t_fff, t_moe = 2.0**depth, 1.0 + depth / 10, 1.0 + 2**depth / 4
            fig3.append(
                ["paper_fig3", "cpu", "float32", "", batch, 768, 768, 32, depth, 32 * 2**depth,
                 "ok", "fused_cpu", t_ff, t_fff, t_moe, t_ff / t_fff, t_moe / t_fff,
                 "a note, with a comma"]
            )  # fmt: skip
    return {
        mode: pd.DataFrame(rows, columns=BENCH_COLUMNS)
        for mode, rows in (("table1", table1), ("vit", vit), ("paper_fig3", fig3))
    }


TINY_SWEEP = {
    "name": "tiny_report",
    "method": "grid",
    "metric": {"name": "G_A", "goal": "maximize"},
    "parameters": {
        "data": {"value": "digits"},
        "variant": {"values": ["ff", "fff_l8", "fff_l4"]},
        "layer.width": {"value": 16},
        "seed": {"value": 0},
        "trainer.max_epochs": {"value": 2},
        "logger": {"value": "none"},
        "tags": {"value": "[table1,sweep_tiny_report]"},
    },
    "command": ["${env}", "${interpreter}", "-m", "fastff.train", "${args_no_hyphens}"],
}
