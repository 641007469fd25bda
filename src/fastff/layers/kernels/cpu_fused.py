"""``fused_cpu``: the C++ kernel ``csrc/fff_hard_cpu.cpp``, (B, D) -> (B, O).

Per input row, while the row is in cache: walk the tree, then evaluate the one leaf reached; rows
in parallel, nothing gathered. CPU, float32 or float64, the activations in
:class:`KernelActivation`, inference only (no autograd: use ``torch.no_grad()`` or
``torch.inference_mode()``). It runs only when a build of the kernel is loaded in this process;
see :mod:`fastff.layers.kernels.cpu_build` for building and loading.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import torch
from torch import nn

from fastff.layers.kernels import cpu_build

if TYPE_CHECKING:
    from fastff.layers.fff import FFF

DTYPES = (torch.float32, torch.float64)


class KernelActivation(enum.IntEnum):
    """Activation codes understood by the C++ kernel (must match ``csrc/fff_hard_cpu.cpp``)."""

    IDENTITY = 0
    RELU = 1
    LEAKY_RELU = 2
    GELU = 3
    GELU_TANH = 4
    SILU = 5
    TANH = 6
    SIGMOID = 7


_SIMPLE_ACTIVATIONS = {
    nn.Identity: KernelActivation.IDENTITY,
    nn.ReLU: KernelActivation.RELU,
    nn.SiLU: KernelActivation.SILU,
    nn.Tanh: KernelActivation.TANH,
    nn.Sigmoid: KernelActivation.SIGMOID,
}


def kernel_activation(module: nn.Module) -> tuple[int, float] | None:
    """(code, parameter) of ``module`` for the C++ kernel, or None if the kernel lacks it."""
    kind = type(module)
    if kind is nn.GELU:
        approximate = getattr(module, "approximate", "none")
        return (KernelActivation.GELU_TANH if approximate == "tanh" else KernelActivation.GELU, 0.0)
    if kind is nn.LeakyReLU:
        return (KernelActivation.LEAKY_RELU, float(module.negative_slope))
    code = _SIMPLE_ACTIVATIONS.get(kind)
    return None if code is None else (int(code), 0.0)


def unsupported_reason(layer: FFF, x2d: torch.Tensor) -> str | None:
    """Why the kernel cannot compute this call, or None if it can.

    The call's own properties are checked first; only a call the kernel could compute asks
    whether a build is loaded (:func:`cpu_build.load`: decided once per process, never builds).
    """
    parameters = (layer.node_weights, layer.node_biases, layer.w1s, layer.b1s, layer.w2s)
    parameters += (layer.b2s,)
    if x2d.device.type != "cpu" or x2d.dtype not in DTYPES:
        return f"it needs CPU float32/float64 inputs, got {x2d.device.type} {x2d.dtype}"
    if any(p.dtype != x2d.dtype or p.device.type != "cpu" for p in parameters):
        return "it needs the layer's parameters on the CPU in the input's dtype"
    if kernel_activation(layer.activation) is None:
        return f"it lacks the activation {type(layer.activation).__name__}"
    if torch.is_grad_enabled() and (x2d.requires_grad or any(p.requires_grad for p in parameters)):
        return "it has no autograd; run it under torch.no_grad() or torch.inference_mode()"
    if not cpu_build.load():
        return cpu_build.status().reason
    return None


def hard_forward(layer: FFF, x2d: torch.Tensor) -> torch.Tensor:
    """The C++ kernel on a flat batch, (B, D) -> (B, O); the kernel must be loaded."""
    code, parameter = kernel_activation(layer.activation)
    return torch.ops.fastff.fff_hard_forward(
        x2d.contiguous(),
        layer.node_weights.contiguous(),
        layer.node_biases.contiguous(),
        _w1s_for_kernel(layer.w1s),
        layer.b1s.contiguous(),
        layer.w2s.contiguous(),
        layer.b2s.contiguous(),
        layer.depth,
        code,
        parameter,
    )


def _w1s_for_kernel(w1s: torch.Tensor) -> torch.Tensor:
    """w1s (L, D, l) as stored if the kernel reads that layout, else a contiguous copy."""
    if w1s.is_contiguous() or w1s.transpose(1, 2).is_contiguous():
        return w1s
    return w1s.contiguous()
