"""The fused FFF training step's C++ kernels (``csrc/fff_soft_routing_cpu.cpp``,
``csrc/fff_soft_train_cpu.cpp``).

From the node logits z (B, N) the kernel computes, one pass per row, the leaf mixture (B, L) and
the batch-mean node entropy (N,), and in the backward dLoss/dz (B, N), with the math of the
torch-op path in :mod:`fastff.layers.fff_soft_fused` (which it replaces on the CPU);
:func:`train_step` runs the whole ReLU training step (matrix products, leaf passes and backward
included) as one C++ autograd op. CPU float32/float64 only; it runs only when the kernel library
is loaded in this process (it is part of the ``fused_cpu`` library: :mod:`.cpu_build` builds and
loads both; a forward pass never builds, and ``FASTFF_FUSED_CPU=0`` disables both).

Notation as in :mod:`fastff.layers.fff`: B inputs, d = depth, N = 2**d - 1 nodes, L = 2**d leaves.
"""

from __future__ import annotations

import torch

from fastff.layers.kernels import cpu_build

DTYPES = (torch.float32, torch.float64)


def usable(logits: torch.Tensor) -> bool:
    """Whether the kernel can compute the routing of these node logits (B, N): CPU, float32 or
    float64, the library loaded (decided once per process, never builds; see
    :func:`cpu_build.load`), and not while torch.compile or torch.export traces (the ops have no
    fake implementation; traced code runs the torch ops, which compile and export)."""
    return (
        logits.device.type == "cpu"
        and logits.dtype in DTYPES
        and not torch.compiler.is_compiling()
        and cpu_build.load()
    )


def forward(
    logits: torch.Tensor, swap: torch.Tensor | None, depth: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixture (B, L), mean node entropy (N,)), both in the logits' dtype, from node logits
    (B, N) and the region-leak swaps (B, N) bool or None (negated mixture logits)."""
    return torch.ops.fastff.fff_soft_routing_forward(
        logits.contiguous(), None if swap is None else swap.contiguous(), depth
    )


def backward(
    logits: torch.Tensor,
    swap: torch.Tensor | None,
    leaf_grad: torch.Tensor | None,
    mixture: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    depth: int,
) -> torch.Tensor:
    """dLoss/dz (B, N) from dLoss/dm (B, L) (None: no output gradient), the forward's mixture
    (B, L) and dLoss/d(mean entropy) (N,) (None: no entropy gradient)."""
    dtype = logits.dtype
    return torch.ops.fastff.fff_soft_routing_backward(
        logits.contiguous(),
        None if swap is None else swap.contiguous(),
        None if leaf_grad is None else leaf_grad.to(dtype).contiguous(),
        mixture.contiguous(),
        None if grad_entropy is None else grad_entropy.to(dtype).contiguous(),
        depth,
    )


def runs_whole_step(x: torch.Tensor, parameters: tuple[torch.Tensor, ...]) -> bool:
    """Whether :func:`train_forward` can compute this step: the caller checked :func:`usable`
    and a ReLU; the parameters are in x's dtype and device and autocast is off (the step's
    matrix products would not be autocast inside the op)."""
    return not torch.is_autocast_enabled(x.device.type) and all(
        p.dtype == x.dtype and p.device == x.device for p in parameters
    )


def train_step(
    x: torch.Tensor,
    parameters: tuple[torch.Tensor, ...],
    packed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    swap: torch.Tensor | None,
    aux_scale: float,
    depth: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole ReLU soft step of (B, D) inputs as one C++ autograd op: (y (B, O), aux (),
    mean node entropy (N,)). y and the hardening loss aux = ``aux_scale`` * the sum of the mean
    node entropies are differentiable in x and the FFF's parameters (node_weights, node_biases,
    w1s, b1s, w2s, b2s); the entropies are not. ``packed``: (first (H + P, D), first_bias
    (H + P,), second (H + L, O)), the tensors the parameters are views of
    (``FFF.packed_parameters``), or None. ``swap`` (B, N) bool or None negates those mixture
    logits."""
    first, first_bias, second = packed if packed is not None else (None, None, None)
    return torch.ops.fastff.fff_soft_train.default(
        x, *parameters, first, first_bias, second,
        None if swap is None else swap.contiguous(), aux_scale, depth,
    )  # fmt: skip
