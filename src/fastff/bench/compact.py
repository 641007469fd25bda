"""The benchmark's compact-weight columns: FF and FFF quantized by ``fastff.quantize`` (bfloat16,
or int8 with float32 scales; weight-only) beside their float32 originals.

Implementations ``fff_bf16``, ``fff_int8``, ``ff_bf16``, ``ff_int8`` (eval modes only), columns
``FFF_bf16`` ... Each is made from the case's float layer of the same name when that is timed
too (the same weights), else from a fresh one. Before timing, each is checked against an
independent computation from its dequantized weights (the compact FFF's timed strategy against
the dequantized FFF's plain path and per-row oracle, with the float FFF's tie rules; a compact
FF against float matmuls with the dequantized weights), and its output is compared with the float
layer's on the timed input: ``err_<column>`` = ||y_compact - y_float|| / ||y_float||. Speedups
``FFF/FFF_bf16`` (float32 time / compact time) etc. are reported only where the checks pass.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from fastff.bench.cases import COLUMN as CASE_COLUMN
from fastff.bench.cases import Implementation, ratio
from fastff.bench.checks import OUTPUT_TOLERANCE, check_fff_hard
from fastff.layers import FF
from fastff.layers.quantized_fff import QuantizedFFF
from fastff.layers.quantized_linear import QuantizedLinear
from fastff.layers.quantized_storage import dequantize
from fastff.quantization import quantize

FORMAT_BYTES = {"bf16": 2, "int8": 1}
IMPLEMENTATIONS = ("ff_bf16", "ff_int8", "fff_bf16", "fff_int8")
COLUMN = {name: CASE_COLUMN[name] for name in IMPLEMENTATIONS}
SPEEDUP_COLUMNS = [f"{COLUMN[n].split('_')[0]}/{COLUMN[n]}" for n in IMPLEMENTATIONS]
"""``FF/FF_bf16``, ``FF/FF_int8``, ``FFF/FFF_bf16``, ``FFF/FFF_int8``: float32 time / compact."""
ERROR_COLUMNS = [f"err_{COLUMN[n]}" for n in IMPLEMENTATIONS]
SOURCE_KEY = "_bench_float_source"
"""Instance attribute of a compact module holding the float layer it was made from."""


def source_and_format(name: str) -> tuple[str, str]:
    """``("fff", "int8")`` for ``"fff_int8"``."""
    source, format = name.split("_")
    return source, format


def implementation(name: str, float_impl: Implementation, make_float: Any) -> Implementation:
    """The compact version of ``float_impl`` (the case's FF or FFF): same FLOPs; its weight bytes
    are the compact weights plus the float layer kept to compare with."""
    source, format = source_and_format(name)

    def build(built: dict[str, nn.Module]) -> nn.Module:
        layer = built.get(source) or make_float()
        compact = quantize(layer, format)
        compact.__dict__[SOURCE_KEY] = layer  # a plain attribute: not a submodule
        return compact

    weight_bytes = float_impl.weight_bytes + float_impl.weight_bytes * FORMAT_BYTES[format] // 4
    return replace(float_impl, name=name, weight_bytes=weight_bytes, build=build,
                   derived_from=source)  # fmt: skip


def check_and_compare(modules: dict[str, nn.Module], x: torch.Tensor, rows: int) -> dict[str, Any]:
    """Columns for the compact modules in ``modules`` on the timed input ``x`` (B, D): ``check
    compact`` ("ok" or the reasons), ``compact_strategy`` and ``err_<column>``."""
    out: dict[str, Any] = {}
    failures = []
    for name in IMPLEMENTATIONS:
        module = modules.get(name)
        if module is None:
            continue
        column = COLUMN[name]
        failure = (
            _check_fff(module, x, rows)
            if isinstance(module, QuantizedFFF)
            else _check_ff(module, x)
        )
        if failure:
            failures.append(f"{column}: {failure}")
        if isinstance(module, QuantizedFFF):
            out["compact_strategy"] = _strategy(module, x)
        with torch.inference_mode():
            got = module(x).double()
            expected = module.__dict__[SOURCE_KEY](x).double()
        norm = expected.norm().item()
        out[f"err_{column}"] = (got - expected).norm().item() / norm if norm > 0 else math.nan
    if any(name in modules for name in IMPLEMENTATIONS):
        out["check compact"] = "; ".join(failures) or "ok"
    return out


def add_speedups(row: dict[str, Any]) -> None:
    """``FFF/FFF_bf16`` ... from the row's times: NaN unless the float layer's check (``check``)
    and the compact check (``check compact``) passed."""
    trusted = row.get("check") in ("ok", "not checked") and row.get("check compact") == "ok"
    for name, speedup in zip(IMPLEMENTATIONS, SPEEDUP_COLUMNS, strict=True):
        float_column = COLUMN[name].split("_")[0]
        compact_time = row.get(f"t_{COLUMN[name]}_ms", math.nan) if trusted else math.nan
        row[speedup] = ratio(row.get(f"t_{float_column}_ms", math.nan), compact_time)


def _strategy(layer: QuantizedFFF, x: torch.Tensor) -> str:
    from fastff.layers.kernels import cpu_compact

    with torch.inference_mode():
        return "fused_cpu" if cpu_compact.unsupported_reason(layer, x) is None else "plain"


def _check_fff(layer: QuantizedFFF, x: torch.Tensor, rows: int) -> str | None:
    """The compact FFF's timed strategy against its plain path and the dequantized FFF's
    per-row oracle (see :func:`fastff.bench.checks.check_fff_hard`)."""
    return check_fff_hard(layer, x, _strategy(layer, x), rows, oracle_layer=layer.dequantize())


def _check_ff(module: nn.Module, x: torch.Tensor) -> str | None:
    """A compact FF against float matmuls with its dequantized weights, on all of ``x``."""
    if not isinstance(module, FF) or not isinstance(module.fc1, QuantizedLinear):
        return f"not a compact FF: {type(module).__name__}"
    with torch.inference_mode():
        got = module(x).double()
        hidden = x.double()
        for linear in (module.fc1, module.fc2):
            weight = dequantize(linear.weight, linear.weight_scale, 1, torch.float64)
            hidden = nn.functional.linear(hidden, weight, linear.bias.double())
            if linear is module.fc1:
                hidden = module.activation(hidden)
    tolerance = OUTPUT_TOLERANCE.get(x.dtype, 1e-4) * (hidden.abs().amax().item() + 1.0)
    worst = (got - hidden).abs().amax().item() if got.numel() else 0.0
    if not worst <= tolerance:
        return f"differs from the dequantized float FF by {worst:.3g} > {tolerance:.3g}"
    return None
