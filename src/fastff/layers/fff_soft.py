"""Vectorised pieces of the FFF soft (training) forward: leaf mixture, region leak, entropy.

Notation as in ``fastff.layers.fff``: B inputs, N = 2**d - 1 nodes in heap order, L = 2**d leaves.
Everything here works on node logits z (B, N) rather than on probabilities c = sigmoid(z): a
transposed decision <c, 1 - c> is the decision of the negated logit, and the leaf mixture is the
exponential of a sum of log-sigmoids, one matrix product for all levels at once.
"""

from __future__ import annotations

import math

import torch

ENTROPY_EPSILON = 1e-6
"""Node probabilities are clamped to [eps, 1 - eps] before the entropy, as in the reference."""

ENTROPY_LOGIT_BOUND = math.log((1 - ENTROPY_EPSILON) / ENTROPY_EPSILON)
"""logit(1 - eps): clamping p to [eps, 1 - eps] is clamping its logit to [-bound, bound]."""


def routing_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype routing math runs in: at least float32, so low-precision layers route stably."""
    return torch.promote_types(dtype, torch.float32)


def region_leak_swaps(
    batch: int, n_nodes: int, region_leak: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Which node decisions a region leak transposes, (B, N) bool: each independently with
    probability ``region_leak``, from uniforms of ``dtype`` (the routing dtype).

    The uniforms are drawn in one call but in the same order as one draw per tree level of shape
    (B, 2**m), m = 0, 1, ..., which is the reference's order: on a CPU generator equal seeds give
    equal transpositions.
    """
    draws = torch.rand(batch * n_nodes, dtype=dtype, device=device)
    levels = []
    start = 0
    width = 1
    while start < n_nodes:
        levels.append(draws[batch * start : batch * (start + width)].view(batch, width))
        start += width
        width *= 2
    return torch.cat(levels, dim=1) < region_leak  # (B, N)


def region_leak_logits(logits: torch.Tensor, region_leak: float) -> torch.Tensor:
    """Negate each node logit independently with probability ``region_leak``, (B, N) -> (B, N).

    Negating z swaps the decision <1 - c, c> to <c, 1 - c> (see :func:`region_leak_swaps`).
    """
    swap = region_leak_swaps(*logits.shape, region_leak, logits.dtype, logits.device)
    return torch.where(swap, -logits, logits)


def leaf_path_columns(depth: int, device: torch.device) -> torch.Tensor:
    """(L, d) long: the column of ``cat(logsigmoid(-z), logsigmoid(z))`` with leaf j's level-m
    factor.

    Leaf j's mixture weight is the product over its path of c_n (went right) or 1 - c_n (went
    left), with log c_n = logsigmoid(z_n) and log(1 - c_n) = logsigmoid(-z_n): column n (< N)
    where leaf j goes left at node n, column N + n where it goes right.
    """
    leaves = torch.arange(2**depth, device=device)[:, None]  # (L, 1)
    levels = torch.arange(depth, device=device)[None, :]  # (1, d)
    nodes = 2**levels - 1 + torch.bitwise_right_shift(leaves, depth - levels)  # (L, d)
    goes_right = torch.bitwise_right_shift(leaves, depth - 1 - levels) & 1  # (L, d)
    return nodes + (2**depth - 1) * goes_right


def leaf_mixture(logits: torch.Tensor, depth: int) -> torch.Tensor:
    """Mixture weight of every leaf from the node logits, (B, N) -> (B, L), depth >= 1.

    exp of a sum of log-sigmoids, all <= 0: decisions that are exactly 0 or 1 in floating point
    give exact weights and finite gradients. Work and memory are O(B * L * d).
    """
    columns = leaf_path_columns(depth, logits.device)  # (L, d)
    logsigmoid = torch.nn.functional.logsigmoid
    log_terms = torch.cat((logsigmoid(-logits), logsigmoid(logits)), dim=1)  # (B, 2N)
    path_terms = log_terms.index_select(1, columns.flatten()).view(-1, *columns.shape)
    return torch.exp(path_terms.sum(dim=-1))  # (B, L)


def node_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Bernoulli(sigmoid(z)) entropy per element (natural log), p clamped to [eps, 1 - eps].

    With zc = clamp(z, -bound, bound): H = -p log p - (1 - p) log(1 - p) = softplus(-zc) +
    zc * sigmoid(-zc). Equals the clamped entropy computed from p = sigmoid(z) directly (the
    tests check this against ``oracles.bernoulli_entropy``), gradient included (zero where the
    clamp is active); invariant under z -> -z, so region leak does not change it.
    """
    clamped = logits.clamp(-ENTROPY_LOGIT_BOUND, ENTROPY_LOGIT_BOUND).neg()
    return torch.nn.functional.softplus(clamped) - clamped * torch.sigmoid(clamped)
