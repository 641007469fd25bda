"""What one benchmark configuration is: the layers to time on one input, and their costs.

A :class:`Case` is one row of the results table (for example paper_fig3 at depth 11, batch 256).
It names its implementations (columns ``FF``, ``FFF``, ``MoE``, ``ref``), says how many weight
bytes and FLOPs each needs (so the runner can skip what exceeds the budgets before allocating
anything) and builds them on demand with :meth:`Case.build`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

IMPLEMENTATIONS = ("ff", "fff", "moe", "reference")
"""Config names of the implementations; their result columns are ``COLUMN[name]``."""
COLUMN = {"ff": "FF", "fff": "FFF", "moe": "MoE", "reference": "ref"}

Builder = Callable[[dict[str, nn.Module]], nn.Module]
"""Builds one implementation's module; gets the modules built so far (to share weights)."""


@dataclass
class Implementation:
    """One timed layer in a case.

    Attributes:
        name: a key of ``COLUMN``.
        weight_bytes: bytes of its parameters in float32 (scaled by the runner for other dtypes);
            for training, gradients are counted too.
        flops: floating-point operations of one timed call (2 per multiply-add).
        build: returns the module on the CPU in float32 (the runner moves it).
        shares_weights_with: name of an implementation whose weights it reuses (no extra memory).
    """

    name: str
    weight_bytes: int
    flops: float
    build: Builder
    shares_weights_with: str | None = None


@dataclass
class Case:
    """One benchmark configuration: parameters (table columns), input and implementations.

    Attributes:
        mode: the mode that produced it.
        params: column values describing the configuration (batch, depth, widths, ...).
        in_features: D of the input (batch, D).
        batch: number of input rows.
        kind: ``"inference"`` (eval forward under inference_mode) or ``"training"`` (forward and
            backward of ``output.sum() + aux_loss``).
        implementations: the layers to time, by name.
        ideal: ideal cost ratios by column name, e.g. ``{"ideal FF/FFF": 410.0}``.
    """

    mode: str
    params: dict[str, Any]
    in_features: int
    batch: int
    kind: str
    implementations: dict[str, Implementation]
    ideal: dict[str, float] = field(default_factory=dict)

    def build(self, names: list[str]) -> dict[str, nn.Module]:
        """Build the named implementations in order (weight sharers after their source)."""
        modules: dict[str, nn.Module] = {}
        order = sorted(names, key=lambda n: self.implementations[n].shares_weights_with is not None)
        for name in order:
            modules[name] = self.implementations[name].build(modules)
        return modules


# ------------------------------------------------------------------------ cost formulas (MACs)
def ff_params(d: int, w: int, o: int) -> int:
    """Parameters of a dense FF d -> w -> o."""
    return d * w + w + w * o + o


def fff_params(d: int, o: int, leaf: int, depth: int) -> int:
    """Parameters of an FFF: nodes (weight and bias) and 2**depth leaves d -> leaf -> o."""
    leaves = 2**depth
    return (leaves - 1) * (d + 1) + leaves * ff_params(d, leaf, o)


def moe_params(d: int, o: int, experts: int, width: int) -> int:
    """Parameters of an MoE: gate and noise matrices (d, E) and E experts d -> width -> o."""
    return 2 * d * experts + experts * ff_params(d, width, o)


def ff_macs(d: int, w: int, o: int) -> int:
    """Multiply-adds of one input through a dense FF d -> w -> o."""
    return d * w + w * o


def fff_hard_macs(d: int, o: int, leaf: int, depth: int) -> int:
    """Multiply-adds of one input through a hard FFF: depth node dot products and one leaf."""
    return d * depth + ff_macs(d, leaf, o)


def fff_soft_macs(d: int, o: int, leaf: int, depth: int) -> int:
    """Multiply-adds of one input through a soft FFF: all nodes and all leaves."""
    return d * (2**depth - 1) + ff_macs(d, leaf * 2**depth, o)


def moe_eval_macs(d: int, o: int, experts: int, width: int, k: int) -> int:
    """Multiply-adds of one input through an eval MoE: the gate and k experts."""
    return d * experts + k * ff_macs(d, width, o)


def bytes_of(params: int, training: bool) -> int:
    """float32 bytes of ``params`` parameters, doubled for training (their gradients)."""
    return params * 4 * (2 if training else 1)


def gflop(macs_per_input: int, batch: int, training: bool) -> float:
    """FLOPs of one timed call: 2 per multiply-add, x3 for forward plus backward."""
    return 2.0 * macs_per_input * batch * (3 if training else 1)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when either is missing or the denominator is 0."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator == 0:
        return math.nan
    return numerator / denominator


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a config name; ValueError naming ``dtype`` otherwise."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
    if name not in dtypes:
        raise ValueError(f"dtype must be one of {list(dtypes)}, got {name!r}")
    return dtypes[name]
