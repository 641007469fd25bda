"""``fused_cpu`` for a quantized FFF: the C++ kernel ``csrc/fff_hard_compact_cpu.cpp``.

(B, D) -> (B, O) for a :class:`fastff.layers.quantized_fff.QuantizedFFF`: the tree walk of the
float32 kernel (same routing), then the reached leaf evaluated straight from its bfloat16 or int8
weights, widened to float32 in registers (int8 times its per-unit float32 scale), float32 sums.
CPU float32 inputs, float32 node weights and biases, the activations of
:class:`fastff.layers.kernels.cpu_fused.KernelActivation`, no autograd; and only once the kernel
library is built and loaded (:mod:`fastff.layers.kernels.cpu_build`, the same library as the
float kernel's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fastff.layers.kernels import cpu_build
from fastff.layers.kernels.cpu_fused import kernel_activation

if TYPE_CHECKING:
    from fastff.layers.quantized_fff import QuantizedFFF


def unsupported_reason(layer: QuantizedFFF, x2d: torch.Tensor) -> str | None:
    """Why the compact kernel cannot compute this call, or None if it can (asks whether the
    library is loaded last: decided once per process, never builds)."""
    if x2d.device.type != "cpu" or x2d.dtype != torch.float32:
        return f"it needs CPU float32 inputs, got {x2d.device.type} {x2d.dtype}"
    floats = (layer.node_weights, layer.node_biases, layer.b1s, layer.b2s)
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in floats):
        return "it needs the layer's node weights and biases on the CPU in float32"
    if layer.w1s.device.type != "cpu":
        return "it needs the layer's leaf weights on the CPU"
    if kernel_activation(layer.activation) is None:
        return f"it lacks the activation {type(layer.activation).__name__}"
    if torch.is_grad_enabled() and x2d.requires_grad:
        return "it has no autograd; run it under torch.no_grad() or torch.inference_mode()"
    if not cpu_build.load():
        return cpu_build.status().reason
    return None


def hard_forward(layer: QuantizedFFF, x2d: torch.Tensor) -> torch.Tensor:
    """The compact kernel on a flat batch, (B, D) -> (B, O); the kernel must be loaded."""
    code, parameter = kernel_activation(layer.activation)
    return torch.ops.fastff.fff_hard_forward_compact(
        x2d.contiguous(),
        layer.node_weights.contiguous(),
        layer.node_biases.contiguous(),
        layer.w1s.transpose(1, 2).contiguous(),  # (L, l, D): a view as the layer stores it
        None if layer.w1s_scale is None else layer.w1s_scale.contiguous(),
        layer.b1s.contiguous(),
        layer.w2s.contiguous(),
        None if layer.w2s_scale is None else layer.w2s_scale.contiguous(),
        layer.b2s.contiguous(),
        layer.depth,
        code,
        parameter,
    )
