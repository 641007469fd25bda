"""What one benchmark configuration is: the layers to time on one input, and their costs.

A :class:`Case` is one row of the results table (for example paper_fig3 at depth 11, batch 256).
It names its implementations (a column per layer kind, ``FF``, ``FFF``, ``MoE``, ..., and
``ref``), says how many weight
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

from fastff.layers.validation import check_choice
from fastff.models import kinds
from fastff.models.kinds import LayerKind

SUBJECT = "fff"
"""The kind the benchmark is about: every speedup column is another kind's time over its."""


def bench_kinds() -> list[LayerKind]:
    """The layer kinds a case times (those with a benchmark shape), fastff's first."""
    return [kind for kind in kinds.all_kinds() if kind.bench_layer is not None]


def compared_kinds() -> list[LayerKind]:
    """The kinds timed against :data:`SUBJECT` (speedup ``<label>/FFF``)."""
    return [kind for kind in bench_kinds() if kind.name != SUBJECT]


def speedup_column(kind: LayerKind) -> str:
    """``FF/FFF``: the kind's time over the subject's."""
    return f"{kind.label}/{kinds.get(SUBJECT).label}"


IMPLEMENTATIONS = (
    *(kind.name for kind in bench_kinds()),
    "reference",
    "ff_onnx",
    "fff_onnx",
    "ff_bf16",
    "ff_int8",
    "fff_bf16",
    "fff_int8",
)
"""Config names of the implementations: every layer kind's name, then the reference and the
variants; their result columns are ``COLUMN[name]``. ``ff_onnx`` and ``fff_onnx``: FF and FFF
exported to ONNX and run in ONNX Runtime (eval modes only). ``ff_bf16`` ... ``fff_int8``: FF and
FFF with compact weights (``fastff.quantize``; eval modes only, see :mod:`fastff.bench.compact`)."""
COLUMN = {
    **{kind.name: kind.label for kind in bench_kinds()},
    "reference": "ref",
    "ff_onnx": "FF_onnx",
    "fff_onnx": "FFF_onnx",
    "ff_bf16": "FF_bf16",
    "ff_int8": "FF_int8",
    "fff_bf16": "FFF_bf16",
    "fff_int8": "FFF_int8",
}

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
        derived_from: name of an implementation it is made from when that is built too (the
            compact columns: quantized from the float layer's weights), so it is built after it.
    """

    name: str
    weight_bytes: int
    flops: float
    build: Builder
    shares_weights_with: str | None = None
    derived_from: str | None = None


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
        make_input: returns the timed input on the CPU in float32 (called after seeding); None
            for ``randn(batch, in_features)``.
        input_requires_grad: training steps also compute the input's gradient (a layer inside
            a network, such as a ViT's MLP).
    """

    mode: str
    params: dict[str, Any]
    in_features: int
    batch: int
    kind: str
    implementations: dict[str, Implementation]
    ideal: dict[str, float] = field(default_factory=dict)
    make_input: Callable[[], torch.Tensor] | None = None
    input_requires_grad: bool = False

    def timed_input(self) -> torch.Tensor:
        """The input every implementation is timed on (CPU, float32)."""
        if self.make_input is not None:
            return self.make_input()
        return torch.randn(self.batch, self.in_features)

    def build(self, names: list[str]) -> dict[str, nn.Module]:
        """Build the named implementations in order (weight sharers after their source)."""
        modules: dict[str, nn.Module] = {}
        implementations = self.implementations
        order = sorted(
            names,
            key=lambda n: (
                implementations[n].shares_weights_with is not None
                or implementations[n].derived_from is not None
            ),
        )
        for name in order:
            modules[name] = self.implementations[name].build(modules)
        return modules


# --------------------------------------------------------------------------------- costs
def macs_per_input(layer: nn.Module, training: bool) -> int:
    """Multiply-adds of one input through ``layer`` (a layer of any kind, e.g. built on the meta
    device), from its size properties: its kind's :attr:`~fastff.models.kinds.LayerKind.macs`.

    Inference runs ``inference_size`` neurons of which ``inference_width`` feed the output (FFF: d
    nodes and one leaf; MoE: the E gate neurons and k experts). Training runs ``training_size``
    (soft FFF: every node and leaf), except that an MoE still evaluates only its k experts and
    adds the noise matrix (E more neurons) when gating is noisy.
    """
    return kinds.kind_of(layer).macs(layer, training)


def n_params(layer: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in layer.parameters())


def bytes_of(params: int, training: bool) -> int:
    """float32 bytes of ``params`` parameters, doubled for training (their gradients)."""
    return params * 4 * (2 if training else 1)


def flops(macs_per_input: int, batch: int, training: bool) -> float:
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
    return dtypes[check_choice("dtype", name, dtypes)]
