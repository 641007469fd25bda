"""``triton`` and ``triton_grouped``: the hard forward as Triton kernels, (B, D) -> (B, O); also
MoE's pairs.

One program per input row walks the tree (one node dot product per level) and evaluates the one
leaf reached (the two leaf products and the activation) while the row is in cache: nothing is
gathered, sorted or synchronised with the host, so the launch can be captured in a CUDA graph.
float32, bfloat16 or float16 inputs (the layer's parameters in the same dtype), float32
accumulation, output in the input's dtype; any depth, leaf width, in/out features and strides;
the activations of :class:`~fastff.layers.kernels.cpu_fused.KernelActivation`; inference only
(no autograd: ``torch.no_grad()`` or ``torch.inference_mode()``, or ``auto`` falls back).

``triton_grouped`` (:func:`grouped_hard_forward`, for many rows per leaf: ``auto`` takes it on
CUDA from :data:`TRITON_GROUPED_MIN_ROWS_PER_LEAF` rows per leaf on) routes tiles of rows in one
launch, sorts the rows by leaf and evaluates each leaf's rows as tile matrix products in a
second launch; the same inputs, outputs and limits, and no host synchronisation either.

Where they run: CUDA tensors, or CPU tensors where Triton's interpreter runs the kernels
(``TRITON_INTERPRET=1`` set before they are first imported: the tests do this). Importing fastff
never imports triton; the first call that could use the kernels imports
:mod:`fastff.layers.kernels.triton_jit`. ``auto`` considers it for CUDA inputs only.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from fastff.layers.kernels.cpu_fused import kernel_activation

if TYPE_CHECKING:
    from fastff.layers.fff import FFF

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TILE_ELEMENTS = 8192
"""Upper bound on the elements of one (BLOCK_D, BLOCK_L) or (BLOCK_L, BLOCK_O) weight tile,
unless the leaf width alone needs more (the hidden vector stays in registers)."""


_KERNELS: ModuleType | str | None = None
"""The outcome of the first :func:`kernel_module` call (a plain global: torch.compile reads it
without tracing the import again)."""


def kernel_module() -> ModuleType | str:
    """:mod:`.triton_jit` (imported once per process), or why it cannot be imported."""
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _import_kernels()
    return _KERNELS


def _import_kernels() -> ModuleType | str:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    try:
        return importlib.import_module("fastff.layers.kernels.triton_jit")
    except Exception as error:  # a broken triton install: report it, never fail fastff
        return f"triton cannot be imported ({type(error).__name__}: {error})"


def unsupported_for(
    x2d: torch.Tensor, parameters: tuple[torch.Tensor, ...], activation: nn.Module
) -> str | None:
    """Why the kernels cannot evaluate these leaves or experts on ``x2d`` (B, D), or None.

    The call's own properties are checked first; only a call the kernels could compute imports
    triton (:func:`kernel_module`).
    """
    device = x2d.device.type
    if device not in ("cuda", "cpu"):
        return f"it needs CUDA inputs, got {device}"
    if x2d.dtype not in DTYPES:
        return f"it needs float32/bfloat16/float16 inputs, got {x2d.dtype}"
    if any(p.dtype != x2d.dtype or p.device != x2d.device for p in parameters):
        return "it needs the layer's parameters on the input's device in the input's dtype"
    if kernel_activation(activation) is None:
        return f"it lacks the activation {type(activation).__name__}"
    if torch.is_grad_enabled() and (x2d.requires_grad or any(p.requires_grad for p in parameters)):
        return "it has no autograd; run it under torch.no_grad() or torch.inference_mode()"
    module = kernel_module()
    if isinstance(module, str):
        return module
    if device == "cpu" and not module.INTERPRETED:
        return (
            "it needs CUDA inputs, got cpu (CPU tensors run only in Triton's interpreter: set "
            "TRITON_INTERPRET=1 before fastff's Triton kernels are first imported)"
        )
    return None


def _parameters(layer: FFF) -> tuple[torch.Tensor, ...]:
    return (layer.node_weights, layer.node_biases, layer.w1s, layer.b1s, layer.w2s, layer.b2s)


def unsupported_reason(layer: FFF, x2d: torch.Tensor) -> str | None:
    """Why ``triton`` cannot compute ``layer``'s hard forward on ``x2d`` (B, D), or None."""
    return unsupported_for(x2d, _parameters(layer), layer.activation)


def auto_unsupported(layer: FFF, x2d: torch.Tensor) -> str | None:
    """:func:`unsupported_reason`, and CPU inputs too: ``auto`` never runs the interpreter."""
    if x2d.device.type != "cuda":
        return f"auto runs it on CUDA inputs only, got {x2d.device.type}"
    return unsupported_reason(layer, x2d)


def block_sizes(in_features: int, leaf_width: int, out_features: int) -> dict[str, int]:
    """Power-of-two block sizes (and warps) of the kernels for these sizes; all masked."""
    block_l = max(16, triton_next_power_of_2(leaf_width))
    tile = max(16, TILE_ELEMENTS // block_l)
    blocks = {
        "BLOCK_D": min(tile, 128, max(16, triton_next_power_of_2(in_features))),
        "BLOCK_L": block_l,
        "BLOCK_O": min(tile, 128, max(16, triton_next_power_of_2(out_features))),
    }
    tile_elements = block_l * max(blocks["BLOCK_D"], blocks["BLOCK_O"])
    blocks["num_warps"] = min(16, max(4, tile_elements // 2048))  # about 16-64 elements a thread
    return blocks


def triton_next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (n >= 1), as ``triton.next_power_of_2``."""
    return 1 << (n - 1).bit_length()


def _leaf_strides(
    w1s: torch.Tensor, b1s: torch.Tensor, w2s: torch.Tensor, b2s: torch.Tensor
) -> tuple[int, ...]:
    """The strides the kernels take for w1s (L, D, l), b1s (L, l), w2s (L, l, O), b2s (L, O)."""
    return (*w1s.stride(), *b1s.stride(), *w2s.stride(), *b2s.stride())


def hard_forward(layer: FFF, x2d: torch.Tensor) -> torch.Tensor:
    """The fused kernel on a flat batch, (B, D) -> (B, O) in x2d's dtype; one launch."""
    module = kernel_module()
    assert not isinstance(module, str), module
    n_rows = x2d.shape[0]
    y = torch.empty((n_rows, layer.out_features), device=x2d.device, dtype=x2d.dtype)
    if n_rows == 0:
        return y
    code, parameter = kernel_activation(layer.activation)
    # depth 0 has no nodes: any valid pointer stands in for the empty node tensors (never read)
    nodes = (layer.node_weights, layer.node_biases) if layer.depth else (layer.w1s, layer.w1s)
    blocks = block_sizes(layer.in_features, layer.leaf_width, layer.out_features)
    module.fff_hard_kernel[(n_rows,)](
        x2d, nodes[0], nodes[1], layer.w1s, layer.b1s, layer.w2s, layer.b2s, y,
        layer.in_features, layer.leaf_width, layer.out_features,
        *x2d.stride(), nodes[0].stride(0), nodes[0].stride(-1), nodes[1].stride(0),
        *_leaf_strides(layer.w1s, layer.b1s, layer.w2s, layer.b2s), *y.stride(),
        DEPTH=layer.depth, ACT=code, act_param=parameter,
        BLOCK_WALK=min(1024, max(16, triton_next_power_of_2(layer.in_features))), **blocks,
    )  # fmt: skip
    return y


TRITON_GROUPED_MIN_ROWS_PER_LEAF = 32
"""``auto`` runs ``triton_grouped`` instead of ``triton`` on CUDA when batch / 2**depth reaches
this many rows per leaf (a first rule, as the CPU's ``grouped``; ``make gpu-check`` measures
where the two actually cross)."""


def grouped_auto_unsupported(layer: FFF, x2d: torch.Tensor) -> str | None:
    """Why ``auto`` should not pick ``triton_grouped`` for this call (too few rows per leaf)."""
    if x2d.shape[0] < TRITON_GROUPED_MIN_ROWS_PER_LEAF * layer.n_leaves:
        return f"auto groups from {TRITON_GROUPED_MIN_ROWS_PER_LEAF} rows per leaf on"
    return auto_unsupported(layer, x2d)


def grouped_block_sizes(in_features: int, leaf_width: int, out_features: int) -> dict[str, int]:
    """Block sizes of :func:`triton_jit.grouped_leaf_kernel` (tiles of at most 8192 elements;
    every ``tl.dot`` dimension at least 16)."""
    block_l = max(16, triton_next_power_of_2(leaf_width))
    side = max(16, min(64, 4096 // block_l))
    return {
        "BLOCK_M": 64 if block_l <= 128 else max(16, 8192 // block_l),
        "BLOCK_D": min(side, max(16, triton_next_power_of_2(in_features))),
        "BLOCK_L": block_l,
        "BLOCK_O": min(side, max(16, triton_next_power_of_2(out_features))),
        "num_warps": 4 if block_l <= 128 else 8,
    }


ROUTE_BLOCK_M = 32
"""Rows per program of :func:`triton_jit.route_kernel`."""


def grouped_hard_forward(layer: FFF, x2d: torch.Tensor) -> torch.Tensor:
    """``triton_grouped``: route (one launch), sort rows by leaf (torch), then every tile of
    sorted rows runs its leaves as tile matrix products (one launch), (B, D) -> (B, O).

    No host synchronisation: the grids follow the batch size, a tile loops over the leaves it
    holds. Suits many rows per leaf; with about one row per leaf ``triton`` does less work.
    """
    module = kernel_module()
    assert not isinstance(module, str), module
    n_rows = x2d.shape[0]
    y = torch.empty((n_rows, layer.out_features), device=x2d.device, dtype=x2d.dtype)
    if n_rows == 0:
        return y
    if layer.depth == 0:
        sorted_leaves = torch.zeros(n_rows, device=x2d.device, dtype=torch.long)
        order = torch.arange(n_rows, device=x2d.device)
    else:
        leaves = torch.empty(n_rows, device=x2d.device, dtype=torch.long)
        walk = min(128, max(16, triton_next_power_of_2(layer.in_features)))
        module.route_kernel[(triton_cdiv(n_rows, ROUTE_BLOCK_M),)](
            x2d, layer.node_weights, layer.node_biases, leaves, n_rows, layer.in_features,
            *x2d.stride(), *layer.node_weights.stride(), layer.node_biases.stride(0),
            DEPTH=layer.depth, BLOCK_M=ROUTE_BLOCK_M, BLOCK_WALK=walk,
        )  # fmt: skip
        sorted_leaves, order = torch.sort(leaves)
    code, parameter = kernel_activation(layer.activation)
    blocks = grouped_block_sizes(layer.in_features, layer.leaf_width, layer.out_features)
    upcast = module.INTERPRETED and x2d.dtype == torch.bfloat16  # see grouped_leaf_kernel
    precision = "ieee" if x2d.dtype == torch.float32 or upcast else "tf32"  # 16 bits: unused
    module.grouped_leaf_kernel[(triton_cdiv(n_rows, blocks["BLOCK_M"]),)](
        x2d, order, sorted_leaves, layer.w1s, layer.b1s, layer.w2s, layer.b2s, y,
        n_rows, layer.in_features, layer.leaf_width, layer.out_features, *x2d.stride(),
        *_leaf_strides(layer.w1s, layer.b1s, layer.w2s, layer.b2s), *y.stride(),
        ACT=code, act_param=parameter, DOT_PRECISION=precision, UPCAST_DOT=upcast, **blocks,
    )  # fmt: skip
    return y


def triton_cdiv(n: int, d: int) -> int:
    """ceil(n / d) for positive ints, as ``triton.cdiv``."""
    return -(-n // d)


def pair_forward(
    x2d: torch.Tensor,
    experts: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    activation: nn.Module,
) -> torch.Tensor:
    """Expert ``experts[p]`` on row ``p // k`` of x2d for every pair p, in one launch.

    Args:
        x2d: (N, D) inputs.
        experts: (N, k) expert ids (any integer dtype); pair p = n * k + j.
        weights: (w1s (E, D, W), b1s (E, W), w2s (E, W, O), b2s (E, O)), x2d's dtype and device.
        activation: applied to the hidden units (a :func:`kernel_activation` module).

    Returns:
        (N * k, O) pair outputs in x2d's dtype.
    """
    module = kernel_module()
    assert not isinstance(module, str), module
    w1s, b1s, w2s, b2s = weights
    pairs_per_row = experts.shape[1]
    flat = experts.reshape(-1).contiguous()
    y = torch.empty((flat.numel(), w2s.shape[2]), device=x2d.device, dtype=x2d.dtype)
    if flat.numel() == 0:
        return y
    code, parameter = kernel_activation(activation)
    module.pair_kernel[(flat.numel(),)](
        x2d, flat, w1s, b1s, w2s, b2s, y, w1s.shape[1], w1s.shape[2], w2s.shape[2],
        *x2d.stride(), *_leaf_strides(w1s, b1s, w2s, b2s), *y.stride(),
        PAIRS_PER_ROW=pairs_per_row, ACT=code, act_param=parameter,
        **block_sizes(w1s.shape[1], w1s.shape[2], w2s.shape[2]),
    )  # fmt: skip
    return y
