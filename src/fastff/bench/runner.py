"""Runs a benchmark mode: validate the config, then for every case and device skip what exceeds
the budgets, build, check correctness, time interleaved, and write the outputs."""

from __future__ import annotations

import copy
import gc
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch import nn

from fastff.atomic_json import write_json_atomic
from fastff.bench import compact, report
from fastff.bench.cases import (
    COLUMN,
    IMPLEMENTATIONS,
    Case,
    compared_kinds,
    ratio,
    speedup_column,
    torch_dtype,
)
from fastff.bench.checks import check_fff_hard, check_fff_soft
from fastff.bench.modes import MODES, reference_unavailable_reason
from fastff.bench.timing import time_interleaved
from fastff.layers import FFF, kernels
from fastff.layers.fff import SOFT_IMPLEMENTATIONS
from fastff.layers.kernels import cpu_build
from fastff.layers.validation import check_choice, check_int, check_number
from fastff.tracking import resolve_wandb_mode

DEVICES = ("auto", "cpu", "cuda")
SPEEDUPS = {
    **{kind.name: speedup_column(kind) for kind in compared_kinds()},
    "ref": "ref/FFF",
    "onnx": "FF/FFF onnx",
    "fff_bf16": "FFF/FFF_bf16",
    "fff_int8": "FFF/FFF_int8",
}
"""Summary metric prefix -> speedup column: ``speedup_<name>_max`` / ``_median`` / ``_min``."""
SUMMARY_SCHEMA_VERSION = 1


def validate(cfg: DictConfig) -> None:
    """Raise one ValueError naming the first bad setting, before any work."""
    check_choice("mode", cfg.mode, sorted(MODES))
    if cfg.mode not in cfg.modes:
        raise ValueError(f"modes.{cfg.mode} is missing from the config")
    unknown = [name for name in cfg.implementations if name not in IMPLEMENTATIONS]
    if unknown or not cfg.implementations:
        raise ValueError(
            f"implementations must be a non-empty list from {list(IMPLEMENTATIONS)}, "
            f"got {list(cfg.implementations)}"
        )
    check_choice("device", cfg.device, DEVICES)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but CUDA is not available; use device=auto or cpu")
    torch_dtype(cfg.dtype)
    for strategy in [cfg.fff_strategy, *cfg.extra_fff_strategies]:
        if strategy not in kernels.strategy_names():
            raise ValueError(
                "fff_strategy / extra_fff_strategies must be in "
                f"{list(kernels.strategy_names())}, got {strategy!r}"
            )
    extra_soft = cfg.get("extra_soft_implementations") or []
    for implementation in extra_soft:
        check_choice("extra_soft_implementations", implementation, SOFT_IMPLEMENTATIONS)
    check_int("threads", cfg.threads, 1)
    check_int("timing.repeats", cfg.timing.repeats, 1)
    for key in ("timing.min_run_time", "limits.memory_budget_gb", "limits.max_gflop_per_call"):
        check_number(key, OmegaConf.select(cfg, key), 0, math.inf, open_low=True, open_high=True)
    check_int("timing.warmup", cfg.timing.warmup, 0)
    check_int("check.oracle_rows", cfg.check.oracle_rows, 0)
    check_int("limits.reference_max_batch", cfg.limits.reference_max_batch, 0)
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer from 0 to {2**32 - 1} (2**32 - 1), got {seed!r}")
    try:
        resolve_wandb_mode(cfg.wandb.mode)
    except ValueError as err:
        raise ValueError(str(err).replace("logger.wandb.mode", "wandb.mode")) from None
    validate_mode_sizes(cfg.mode, OmegaConf.to_container(cfg.modes[cfg.mode], resolve=True))


MODE_INTS = {
    "in_features": 1,
    "out_features": 1,
    "leaf_width": 1,
    "moe_k": 1,
    "num_classes": 1,
    "features": 1,
    "tokens": 1,
    "training_width": 1,
}
"""Integer size settings of a mode (when present) and their minimum."""
MODE_LISTS = {"batch_sizes": 1, "widths": 1, "leaf_widths": 1, "depths": 0}
"""Non-empty integer-list settings of a mode (when present) and their items' minimum."""


def validate_mode_sizes(mode: str, mode_cfg: Mapping[str, Any]) -> None:
    """Raise one ValueError naming the first bad size setting ``modes.<mode>.<key>``."""
    for key, minimum in MODE_INTS.items():
        if key in mode_cfg:
            check_int(f"modes.{mode}.{key}", mode_cfg[key], minimum)
    for key, minimum in MODE_LISTS.items():
        if key not in mode_cfg:
            continue
        values = mode_cfg[key]
        if not isinstance(values, list) or not values:
            raise ValueError(
                f"modes.{mode}.{key} must be a non-empty list of integers >= {minimum}, "
                f"got {values!r}"
            )
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"modes.{mode}.{key} must be a list of integers >= {minimum}, got {values!r}"
                )
    if "min_depth" in mode_cfg or "max_depth" in mode_cfg:
        low = check_int(f"modes.{mode}.min_depth", mode_cfg.get("min_depth"), 0)
        high = check_int(f"modes.{mode}.max_depth", mode_cfg.get("max_depth"), 0)
        if low > high:
            raise ValueError(
                f"modes.{mode}.min_depth={low} must be <= modes.{mode}.max_depth={high}"
            )
    if "hardening" in mode_cfg:
        check_number(f"modes.{mode}.hardening", mode_cfg["hardening"], 0)
    if "widths" in mode_cfg and "leaf_widths" in mode_cfg:
        leaves = mode_cfg["leaf_widths"]
        for width in mode_cfg["widths"]:
            for leaf in leaves:
                if width < leaf:
                    continue
                try:
                    FFF.depth_for(width, leaf)
                except ValueError:
                    raise ValueError(
                        f"modes.{mode}.widths: {width} is not leaf width {leaf} times a power "
                        f"of two (width = leaf_width * 2**depth; leaf_widths {leaves})"
                    ) from None
        if not any(w >= leaf for w in mode_cfg["widths"] for leaf in leaves):
            raise ValueError(
                f"modes.{mode}.widths {mode_cfg['widths']}: no width is >= a leaf width of "
                f"{leaves}, so there is nothing to time"
            )


def devices_for(setting: str) -> list[torch.device]:
    """``auto``: the CPU, plus CUDA when present; otherwise the one device named."""
    if setting == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [torch.device(setting)]


def skip_reason(name: str, case: Case, cfg: DictConfig, dtype: torch.dtype) -> str | None:
    """Why an implementation is not timed in this case, or None."""
    implementation = case.implementations[name]
    scale = torch.empty((), dtype=dtype).element_size() / 4
    gigabytes = implementation.weight_bytes * scale / 2**30
    if implementation.shares_weights_with is None and gigabytes > cfg.limits.memory_budget_gb:
        return (
            f"weights need {gigabytes:.2f} GiB > limits.memory_budget_gb="
            f"{cfg.limits.memory_budget_gb}"
        )
    if implementation.flops / 1e9 > cfg.limits.max_gflop_per_call:
        return (
            f"{implementation.flops / 1e9:.0f} GFLOP per call > limits.max_gflop_per_call="
            f"{cfg.limits.max_gflop_per_call}"
        )
    onnx_limit = cfg.limits.get("onnx_max_gb")
    if name.endswith("_onnx") and onnx_limit is not None and gigabytes > onnx_limit:
        return (
            f"the ONNX file would hold {gigabytes:.2f} GiB of weights > limits.onnx_max_gb="
            f"{onnx_limit} (exporting it takes minutes and several times that in memory)"
        )
    if name == "reference":
        reason = reference_unavailable_reason()
        if reason:
            return reason
        if case.params["depth"] == 0:
            return "the reference's eval_forward crashes at depth 0 (known defect)"
        if case.kind == "inference" and case.batch > cfg.limits.reference_max_batch:
            return (
                f"the reference's eval loops over inputs in Python; batch {case.batch} > "
                f"limits.reference_max_batch={cfg.limits.reference_max_batch}"
            )
    return None


def _call(name: str, module: nn.Module, x: torch.Tensor, case: Case, hardening: float) -> Callable:
    """The timed callable: an eval forward, or forward + backward of sum(output) + aux loss."""
    if case.kind == "inference":
        return lambda: module(x)

    def step() -> None:
        x.grad = None
        for parameter in module.parameters():
            parameter.grad = None
        if name == "reference":
            output, entropies = module.training_forward(x, return_entropies=True)
            loss = output.float().sum() + hardening * entropies.mean()
        else:
            loss = module(x).float().sum() + module.aux_loss
        loss.backward()

    return step


def run_case(case: Case, device: torch.device, cfg: DictConfig, console: Console) -> dict[str, Any]:
    """Time one case on one device; returns its table row."""
    dtype = torch_dtype(cfg.dtype)
    row: dict[str, Any] = {"mode": case.mode, "device": device.type, "dtype": cfg.dtype}
    row.update(case.params)
    notes: dict[str, str] = {}
    names = []
    for name in case.implementations:
        reason = skip_reason(name, case, cfg, dtype)
        if reason is None and case.implementations[name].shares_weights_with in notes:
            reason = "needs the FFF's weights, which were skipped"
        if reason:
            notes[name] = f"skipped: {reason}"
        else:
            names.append(name)

    torch.manual_seed(cfg.seed)
    modules = case.build(names)
    training = case.kind == "training"
    for module in modules.values():
        module.to(device=device, dtype=dtype).train(training)
    x = case.timed_input().to(device=device, dtype=dtype)
    if case.input_requires_grad and case.kind == "training":
        x.requires_grad_(True)
    hardening = float(cfg.modes[cfg.mode].get("hardening", 0.0))
    calls = {
        COLUMN[name]: _call(name, module, x, case, hardening) for name, module in modules.items()
    }

    row["check"] = "not checked"
    # extra FFF columns: soft implementations in training modes, hard strategies otherwise
    extras = (cfg.get("extra_soft_implementations") or []) if training else cfg.extra_fff_strategies
    extra_labels = [f"FFF[{s}]" for s in extras]
    if "fff" in modules and training:
        if "reference" in modules:
            row["check"] = check_fff_soft(modules["fff"], modules["reference"], x) or "ok"
        for implementation in extras:
            variant = copy.deepcopy(modules["fff"])
            variant.soft_implementation = implementation
            calls[f"FFF[{implementation}]"] = _call("fff", variant, x, case, hardening)
    elif "fff" in modules:
        fff_inputs = fff_layer_inputs(modules["fff"], x)
        for layer, _ in fff_inputs:
            layer.hard_strategy = cfg.fff_strategy
        first, first_input = fff_inputs[0]
        with torch.inference_mode():
            row["fff_strategy"] = (
                kernels.select(first, first_input)
                if cfg.fff_strategy == "auto"
                else cfg.fff_strategy
            )
        failures = [
            check_fff_hard(layer, inputs, strategy, cfg.check.oracle_rows)
            for layer, inputs in fff_inputs
            for strategy in [row["fff_strategy"], *cfg.extra_fff_strategies]
        ]
        row["check"] = "; ".join(f for f in failures if f) or "ok"
        if len(fff_inputs) == 1:
            for strategy in cfg.extra_fff_strategies:
                calls[f"FFF[{strategy}]"] = lambda s=strategy, layer=first, inputs=x: (
                    layer.hard_forward(inputs, s)
                )
        elif cfg.extra_fff_strategies:
            notes["FFF[...]"] = "extra_fff_strategies are timed for single layers only"
    row.update(compact.check_and_compare(modules, x, cfg.check.oracle_rows))

    grad_mode = torch.enable_grad() if training else torch.inference_mode()
    with grad_mode:
        times, errors = time_interleaved(
            calls,
            device=device,
            threads=cfg.threads,
            min_run_time=cfg.timing.min_run_time,
            repeats=cfg.timing.repeats,
            warmup=cfg.timing.warmup,
        )
    for label in [*COLUMN.values(), *extra_labels]:
        row[f"t_{label}_ms"] = times[label] * 1e3 if label in times else math.nan
    for label, error in errors.items():
        notes[label] = f"error: {error[:200]}"

    trusted = row["check"] in ("ok", "not checked")
    fff_time = row["t_FFF_ms"] if trusted else math.nan
    for kind in compared_kinds():
        row[speedup_column(kind)] = ratio(row[f"t_{kind.label}_ms"], fff_time)
    row["ref/FFF"] = ratio(row["t_ref_ms"], fff_time)
    row["FF/FFF onnx"] = ratio(row["t_FF_onnx_ms"], row["t_FFF_onnx_ms"])
    compact.add_speedups(row)
    row.update(case.ideal)
    row["notes"] = "; ".join(f"{COLUMN.get(k, k)} {v}" for k, v in notes.items())
    if not trusted:
        console.print(f"[red]FFF check FAILED, no speedup reported: {row['check']}[/red]")
    if row.get("check compact", "ok") != "ok":
        console.print(f"[red]compact check FAILED, no speedup: {row['check compact']}[/red]")

    del modules, calls, x
    gc.collect()
    return row


def fff_layer_inputs(module: nn.Module, x: torch.Tensor) -> list[tuple[FFF, torch.Tensor]]:
    """Every FFF in ``module`` (the module itself, or the layers of a model) with the flat input
    (B, D) it receives when ``module`` runs on ``x`` in eval mode."""
    if isinstance(module, FFF):
        return [(module, x.reshape(-1, module.in_features))]
    seen: list[tuple[FFF, torch.Tensor]] = []
    handles = [
        layer.register_forward_pre_hook(
            lambda layer, args: seen.append((layer, args[0].reshape(-1, layer.in_features)))
        )
        for layer in module.modules()
        if isinstance(layer, FFF)
    ]
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def load_cpu_kernel(console: Console) -> None:
    """Load the fused C++ kernel before any timing, building it first if it is missing (an
    explicit step of this command, said in the log), so every timed call runs one strategy."""
    missing = cpu_build.disabled_reason() is None and cpu_build.find_built_library() is None
    if missing and cpu_build.compiler() is not None:
        console.print("Building the fused C++ FFF kernel (up to a minute, once; `make kernels`)...")
    if not cpu_build.load(build_missing=True):
        console.print(f"[yellow]fused_cpu unavailable: {cpu_build.unavailable_reason()}[/yellow]")


def run(cfg: DictConfig, run_dir: Path, console: Console | None = None) -> pd.DataFrame:
    """Run ``cfg.mode``; write the CSV and plots into ``run_dir``, log to W&B; return the rows."""
    validate(cfg)
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: wide enough for every column
            console = Console(width=220)
    run_dir.mkdir(parents=True, exist_ok=True)
    mode_cfg: Mapping[str, Any] = OmegaConf.to_container(cfg.modes[cfg.mode], resolve=True)
    cases = MODES[cfg.mode](mode_cfg, list(cfg.implementations))
    devices = devices_for(cfg.device)
    wants_kernel = cfg.fff_strategy in ("auto", "fused_cpu") or "fused_cpu" in list(
        cfg.extra_fff_strategies
    )
    if "fff" in cfg.implementations and wants_kernel and devices[0].type == "cpu":
        load_cpu_kernel(console)

    rows: list[dict[str, Any]] = []
    try:
        for device in devices:
            for case in cases:
                params = ", ".join(f"{k} {v}" for k, v in case.params.items())
                console.print(f"[dim]{cfg.mode} on {device.type}: {params}[/dim]")
                rows.append(run_case(case, device, cfg, console))
                # after every case: an interrupted run keeps its finished rows
                report.write_csv(pd.DataFrame(rows), run_dir, cfg.mode)
    except KeyboardInterrupt:
        where = f"in {run_dir / f'bench_{cfg.mode}.csv'}" if rows else "(none finished)"
        console.print(f"[yellow]interrupted: {len(rows)} finished row(s) {where}[/yellow]")
        raise SystemExit(130) from None
    frame = pd.DataFrame(rows)

    title = f"fastff bench {cfg.mode} ({cfg.dtype}, {cfg.threads} CPU threads)"
    report.print_table(frame, title, console)
    csv_path = report.write_csv(frame, run_dir, cfg.mode)
    plots = report.write_plots(frame, run_dir, cfg.mode)
    console.print(f"Results: {csv_path}", soft_wrap=True)
    if plots:
        console.print(f"Plots: {', '.join(str(p) for p in plots)}", soft_wrap=True)

    summary = summary_metrics(frame, cfg)
    write_summary(summary, run_dir)
    wandb_mode = resolve_wandb_mode(cfg.wandb.mode)
    if wandb_mode != "disabled":  # disabled: wandb is not even imported (it may be absent)
        report.log_wandb(
            frame,
            plots,
            mode=wandb_mode,
            project=cfg.wandb.project,
            run_dir=run_dir,
            config=OmegaConf.to_container(cfg, resolve=True),
            summary=summary,
        )
    return frame


def summary_metrics(frame: pd.DataFrame, cfg: DictConfig) -> dict[str, Any]:
    """The run's headline numbers (``metrics.json`` and the W&B summary; a sweep's metric): per
    speedup column the max, median and min over the checked rows, ``null`` where none was
    measured, e.g. ``speedup_ff_max`` = the largest FF/FFF."""
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "task": "bench",
        "mode": cfg.mode,
        "dtype": cfg.dtype,
        "threads": cfg.threads,
        "devices": sorted(set(frame["device"])) if "device" in frame else [],
        "n_cases": len(frame),
        "n_check_failed": int((~frame["check"].isin(["ok", "not checked"])).sum())
        if "check" in frame
        else 0,
    }
    for name, column in SPEEDUPS.items():
        values = frame[column].dropna() if column in frame else pd.Series(dtype=float)
        for stat in ("max", "median", "min"):
            summary[f"speedup_{name}_{stat}"] = (
                round(float(getattr(values, stat)()), 4) if len(values) else None
            )
    summary["csv"] = f"bench_{cfg.mode}.csv"
    summary["status"] = "finished"
    return summary


def write_summary(summary: Mapping[str, Any], run_dir: Path) -> Path:
    """Write ``summary`` to ``run_dir/metrics.json`` atomically (never half a file)."""
    return write_json_atomic(run_dir / "metrics.json", dict(summary))
