"""The Triton kernels of the ``triton`` hard strategy and of MoE's ``triton`` dispatch.

Imported only through :mod:`fastff.layers.kernels.triton_hard` (never by ``import fastff``):
this module imports triton. Triton decides when a ``@triton.jit`` function is *defined* whether
it is compiled for the GPU or run by its interpreter on the CPU (``TRITON_INTERPRET=1``), so
:data:`INTERPRETED` records which happened here, once per process.

Kernels, written with Triton API present in 3.6 and 3.8:

- :func:`fff_hard_kernel`: row b of x (B, D) walks the tree (``DEPTH`` node dot products; right
  where ``w_k . x + b_k >= 0``), then evaluates the reached leaf j:
  ``y[b] = act(x[b] @ w1s[j] + b1s[j]) @ w2s[j] + b2s[j]``.
- :func:`pair_kernel`: pair p evaluates expert ``experts[p]`` on row ``p // PAIRS_PER_ROW`` of x
  (MoE: k pairs per row), the same leaf evaluation.
- :func:`route_kernel` and :func:`grouped_leaf_kernel` (the ``triton_grouped`` strategy, for
  many rows per leaf): tiles of rows walk the tree together and store their leaves; after a
  sort by leaf, each tile of sorted rows runs every leaf it holds as two ``tl.dot`` products
  (tensor cores; float32 in IEEE precision), the hidden tile cast to the weights' dtype between.

Every product accumulates in float32; in the per-row kernels the hidden vector (l) stays in
registers in float32 and only the output is stored in y's dtype. Every size is a runtime value
and masked (any D, l, O; blocks are powers of two), pointers advance by the tensors' strides (any
layout), offsets are 64-bit.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Activation codes: fastff.layers.kernels.cpu_fused.KernelActivation (shared with the C++ kernel).
_RELU = tl.constexpr(1)
_LEAKY_RELU = tl.constexpr(2)
_GELU = tl.constexpr(3)
_GELU_TANH = tl.constexpr(4)
_SILU = tl.constexpr(5)
_TANH = tl.constexpr(6)
_SIGMOID = tl.constexpr(7)
_NO_LEAF = tl.constexpr(2**62)  # beyond every leaf index: marks the padding of a tile


@triton.jit
def _activation(h, ACT: tl.constexpr, act_param):
    """Elementwise activation of a float32 block (codes as ``KernelActivation``)."""
    if ACT == _RELU:
        h = tl.maximum(h, 0.0)
    elif ACT == _LEAKY_RELU:
        h = tl.where(h >= 0.0, h, h * act_param)
    elif ACT == _GELU:
        h = 0.5 * h * (1.0 + tl.erf(h * 0.7071067811865476))
    elif ACT == _GELU_TANH:
        inner = 0.7978845608028654 * (h + 0.044715 * h * h * h)
        h = 0.5 * h * (1.0 + (2.0 * tl.sigmoid(2.0 * inner) - 1.0))
    elif ACT == _SILU:
        h = h * tl.sigmoid(h)
    elif ACT == _TANH:
        h = 2.0 * tl.sigmoid(2.0 * h) - 1.0
    elif ACT == _SIGMOID:
        h = tl.sigmoid(h)
    return h


@triton.jit
def _evaluate_leaf(
    x_row,
    stride_xd,
    leaf,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    y_row,
    stride_yo,
    D,
    LW,
    O,
    s_w1_leaf,
    s_w1_d,
    s_w1_k,
    s_b1_leaf,
    s_b1_k,
    s_w2_leaf,
    s_w2_k,
    s_w2_o,
    s_b2_leaf,
    s_b2_o,
    ACT: tl.constexpr,
    act_param,
    BLOCK_D: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """``y_row[:O] = act(x_row @ w1[leaf] + b1[leaf]) @ w2[leaf] + b2[leaf]``, float32 sums."""
    offs_k = tl.arange(0, BLOCK_L)
    mask_k = offs_k < LW
    w1_leaf = w1_ptr + leaf * s_w1_leaf
    hidden = tl.zeros([BLOCK_L], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        xv = tl.load(x_row + offs_d * stride_xd, mask=mask_d, other=0.0).to(tl.float32)
        w1 = tl.load(
            w1_leaf + offs_d[:, None] * s_w1_d + offs_k[None, :] * s_w1_k,
            mask=mask_d[:, None] & mask_k[None, :],
            other=0.0,
        ).to(tl.float32)
        hidden += tl.sum(xv[:, None] * w1, axis=0)
    b1 = tl.load(b1_ptr + leaf * s_b1_leaf + offs_k * s_b1_k, mask=mask_k, other=0.0)
    hidden = _activation(hidden + b1.to(tl.float32), ACT, act_param)
    hidden = tl.where(mask_k, hidden, 0.0)
    w2_leaf = w2_ptr + leaf * s_w2_leaf
    for o0 in range(0, O, BLOCK_O):
        offs_o = o0 + tl.arange(0, BLOCK_O)
        mask_o = offs_o < O
        w2 = tl.load(
            w2_leaf + offs_k[:, None] * s_w2_k + offs_o[None, :] * s_w2_o,
            mask=mask_k[:, None] & mask_o[None, :],
            other=0.0,
        ).to(tl.float32)
        b2 = tl.load(b2_ptr + leaf * s_b2_leaf + offs_o * s_b2_o, mask=mask_o, other=0.0)
        out = tl.sum(hidden[:, None] * w2, axis=0) + b2.to(tl.float32)
        tl.store(y_row + offs_o * stride_yo, out.to(y_row.dtype.element_ty), mask=mask_o)


@triton.jit
def fff_hard_kernel(
    x_ptr,
    nw_ptr,
    nb_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    y_ptr,
    D,
    LW,
    O,
    stride_xb,
    stride_xd,
    s_nw_n,
    s_nw_d,
    s_nb_n,
    s_w1_leaf,
    s_w1_d,
    s_w1_k,
    s_b1_leaf,
    s_b1_k,
    s_w2_leaf,
    s_w2_k,
    s_w2_o,
    s_b2_leaf,
    s_b2_o,
    stride_yb,
    stride_yo,
    DEPTH: tl.constexpr,
    ACT: tl.constexpr,
    act_param,
    BLOCK_WALK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """One program per row b of x (B, D): walk the tree, evaluate the leaf, store y[b] (O,)."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xb
    node = row * 0  # int64 heap index: the root
    for _level in range(DEPTH):
        acc = tl.zeros([BLOCK_WALK], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_WALK):
            offs_d = d0 + tl.arange(0, BLOCK_WALK)
            mask_d = offs_d < D
            xv = tl.load(x_row + offs_d * stride_xd, mask=mask_d, other=0.0).to(tl.float32)
            wv = tl.load(nw_ptr + node * s_nw_n + offs_d * s_nw_d, mask=mask_d, other=0.0)
            acc += xv * wv.to(tl.float32)
        logit = tl.sum(acc, axis=0) + tl.load(nb_ptr + node * s_nb_n).to(tl.float32)
        node = 2 * node + 1 + (logit >= 0.0).to(tl.int64)
    leaf = node - (2**DEPTH - 1)
    _evaluate_leaf(
        x_row, stride_xd, leaf, w1_ptr, b1_ptr, w2_ptr, b2_ptr, y_ptr + row * stride_yb,
        stride_yo, D, LW, O, s_w1_leaf, s_w1_d, s_w1_k, s_b1_leaf, s_b1_k, s_w2_leaf,
        s_w2_k, s_w2_o, s_b2_leaf, s_b2_o, ACT, act_param, BLOCK_D, BLOCK_L, BLOCK_O,
    )  # fmt: skip


@triton.jit
def pair_kernel(
    x_ptr,
    experts_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    y_ptr,
    D,
    LW,
    O,
    stride_xb,
    stride_xd,
    s_w1_leaf,
    s_w1_d,
    s_w1_k,
    s_b1_leaf,
    s_b1_k,
    s_w2_leaf,
    s_w2_k,
    s_w2_o,
    s_b2_leaf,
    s_b2_o,
    stride_yb,
    stride_yo,
    PAIRS_PER_ROW: tl.constexpr,
    ACT: tl.constexpr,
    act_param,
    BLOCK_D: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """One program per pair p: expert ``experts[p]`` on row ``p // PAIRS_PER_ROW``, into y[p]."""
    pair = tl.program_id(0).to(tl.int64)
    expert = tl.load(experts_ptr + pair).to(tl.int64)
    x_row = x_ptr + (pair // PAIRS_PER_ROW) * stride_xb
    _evaluate_leaf(
        x_row, stride_xd, expert, w1_ptr, b1_ptr, w2_ptr, b2_ptr, y_ptr + pair * stride_yb,
        stride_yo, D, LW, O, s_w1_leaf, s_w1_d, s_w1_k, s_b1_leaf, s_b1_k, s_w2_leaf,
        s_w2_k, s_w2_o, s_b2_leaf, s_b2_o, ACT, act_param, BLOCK_D, BLOCK_L, BLOCK_O,
    )  # fmt: skip


@triton.jit
def route_kernel(
    x_ptr,
    nw_ptr,
    nb_ptr,
    leaves_ptr,
    B,
    D,
    stride_xb,
    stride_xd,
    s_nw_n,
    s_nw_d,
    s_nb_n,
    DEPTH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_WALK: tl.constexpr,
):
    """BLOCK_M rows per program walk the tree together; ``leaves[b]`` (int64) for each row b."""
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < B
    node = offs_m * 0  # (BLOCK_M,) int64 heap indices: the root
    for _level in range(DEPTH):
        acc = tl.zeros([BLOCK_M, BLOCK_WALK], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_WALK):
            offs_d = d0 + tl.arange(0, BLOCK_WALK)
            mask = mask_m[:, None] & (offs_d < D)[None, :]
            xv = tl.load(
                x_ptr + offs_m[:, None] * stride_xb + offs_d[None, :] * stride_xd,
                mask=mask,
                other=0.0,
            )
            wv = tl.load(
                nw_ptr + node[:, None] * s_nw_n + offs_d[None, :] * s_nw_d, mask=mask, other=0.0
            )
            acc += xv.to(tl.float32) * wv.to(tl.float32)
        bias = tl.load(nb_ptr + node * s_nb_n, mask=mask_m, other=0.0).to(tl.float32)
        logit = tl.sum(acc, axis=1) + bias
        node = 2 * node + 1 + (logit >= 0.0).to(tl.int64)
    tl.store(leaves_ptr + offs_m, node - (2**DEPTH - 1), mask=mask_m)


@triton.jit
def grouped_leaf_kernel(
    x_ptr,
    order_ptr,
    sorted_leaves_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    y_ptr,
    B,
    D,
    LW,
    O,
    stride_xb,
    stride_xd,
    s_w1_leaf,
    s_w1_d,
    s_w1_k,
    s_b1_leaf,
    s_b1_k,
    s_w2_leaf,
    s_w2_k,
    s_w2_o,
    s_b2_leaf,
    s_b2_o,
    stride_yb,
    stride_yo,
    ACT: tl.constexpr,
    act_param,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """Rows sorted by leaf, BLOCK_M sorted positions per program: for each leaf present in the
    tile, its rows' hidden units and outputs as two tile matrix products (``tl.dot``).

    ``UPCAST_DOT``: multiply the (bfloat16) tiles as float32, for Triton's interpreter, whose
    ``tl.dot`` mishandles bfloat16 (triton 3.8); the products of bfloat16 values are exact in
    float32 and the sums float32, as on the tensor cores.
    """
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < B
    leaf_of = tl.load(sorted_leaves_ptr + offs_m, mask=mask_m, other=_NO_LEAF)  # (BLOCK_M,)
    rows = tl.load(order_ptr + offs_m, mask=mask_m, other=0)  # original row indices
    offs_k = tl.arange(0, BLOCK_L)
    mask_k = offs_k < LW
    leaf = tl.min(leaf_of, axis=0)
    while leaf < _NO_LEAF:  # the tile's leaves in ascending order
        in_leaf = leaf_of == leaf
        hidden = tl.zeros([BLOCK_M, BLOCK_L], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            mask_d = offs_d < D
            xt = tl.load(
                x_ptr + rows[:, None] * stride_xb + offs_d[None, :] * stride_xd,
                mask=in_leaf[:, None] & mask_d[None, :],
                other=0.0,
            )
            w1 = tl.load(
                w1_ptr + leaf * s_w1_leaf + offs_d[:, None] * s_w1_d + offs_k[None, :] * s_w1_k,
                mask=mask_d[:, None] & mask_k[None, :],
                other=0.0,
            )
            if UPCAST_DOT:
                xt, w1 = xt.to(tl.float32), w1.to(tl.float32)
            hidden = tl.dot(xt, w1, hidden, input_precision=DOT_PRECISION)
        b1 = tl.load(b1_ptr + leaf * s_b1_leaf + offs_k * s_b1_k, mask=mask_k, other=0.0)
        hidden = _activation(hidden + b1.to(tl.float32)[None, :], ACT, act_param)
        hidden = tl.where(mask_k[None, :], hidden, 0.0).to(w1_ptr.dtype.element_ty)
        for o0 in range(0, O, BLOCK_O):
            offs_o = o0 + tl.arange(0, BLOCK_O)
            mask_o = offs_o < O
            w2 = tl.load(
                w2_ptr + leaf * s_w2_leaf + offs_k[:, None] * s_w2_k + offs_o[None, :] * s_w2_o,
                mask=mask_k[:, None] & mask_o[None, :],
                other=0.0,
            )
            b2 = tl.load(b2_ptr + leaf * s_b2_leaf + offs_o * s_b2_o, mask=mask_o, other=0.0)
            if UPCAST_DOT:
                out = tl.dot(
                    hidden.to(tl.float32), w2.to(tl.float32), input_precision=DOT_PRECISION
                )
            else:
                out = tl.dot(hidden, w2, input_precision=DOT_PRECISION)
            out += b2.to(tl.float32)[None, :]
            tl.store(
                y_ptr + rows[:, None] * stride_yb + offs_o[None, :] * stride_yo,
                out.to(y_ptr.dtype.element_ty),
                mask=in_leaf[:, None] & mask_o[None, :],
            )
        leaf = tl.min(tl.where(leaf_of > leaf, leaf_of, _NO_LEAF), axis=0)


def _interpreted() -> bool:
    """Whether triton made the kernels above interpreter functions (TRITON_INTERPRET=1)."""
    return not isinstance(fff_hard_kernel, triton.runtime.JITFunction)


INTERPRETED = _interpreted()
"""True where the kernels run in Triton's interpreter (CPU tensors), False where compiled (CUDA)."""
