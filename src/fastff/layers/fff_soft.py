"""Vectorised pieces of the FFF soft (training) forward: leaf mixture, region leak, entropy.

Notation as in ``fastff.layers.fff``: B inputs, N = 2**d - 1 nodes in heap order, L = 2**d leaves.
Everything here works on node logits z (B, N) rather than on probabilities c = sigmoid(z): a
transposed decision <c, 1 - c> is the decision of the negated logit, and the leaf mixture is the
exponential of a sum of log-sigmoids, built one tree level at a time.
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


def leaf_mixture(logits: torch.Tensor, depth: int) -> torch.Tensor:
    """Mixture weight of every leaf from the node logits, (B, N) -> (B, L), depth >= 1.

    Leaf j's weight is the product over its path of c_n (went right) or 1 - c_n (went left),
    computed as the exp of a sum of log-sigmoids (log c = logsigmoid(z), log(1 - c) =
    logsigmoid(-z)), all <= 0: decisions that are exactly 0 or 1 in floating point give exact
    weights and finite gradients. The sums are built one tree level at a time, each level's
    partial sums split in two by its nodes: work and memory O(B * L).
    """
    logsigmoid = torch.nn.functional.logsigmoid
    steps = torch.stack((logsigmoid(-logits), logsigmoid(logits)), dim=-1)  # (B, N, 2)
    n_inputs = logits.shape[0]
    log_mixture = steps[:, 0]  # (B, 2): the root's two subtrees
    for level in range(1, depth):
        nodes = steps[:, 2**level - 1 : 2 ** (level + 1) - 1]  # (B, 2**level, 2)
        log_mixture = (log_mixture.unsqueeze(-1) + nodes).view(n_inputs, 2 ** (level + 1))
    return torch.exp(log_mixture)


def node_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Bernoulli(sigmoid(z)) entropy per element (natural log), p clamped to [eps, 1 - eps].

    With zc = clamp(z, -bound, bound): H = -p log p - (1 - p) log(1 - p) = softplus(-zc) +
    zc * sigmoid(-zc). Equals the clamped entropy computed from p = sigmoid(z) directly (the
    tests check this against ``oracles.bernoulli_entropy``), gradient included (zero where the
    clamp is active); invariant under z -> -z, so region leak does not change it.
    """
    clamped = logits.clamp(-ENTROPY_LOGIT_BOUND, ENTROPY_LOGIT_BOUND).neg()
    return torch.nn.functional.softplus(clamped) - clamped * torch.sigmoid(clamped)
