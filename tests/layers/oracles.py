"""Slow, obviously correct per-sample oracles for the layers, written with plain Python loops.

Other test modules import these; they trade all speed for readability and never track gradients.
"""

from __future__ import annotations

import torch

from fastff.layers import FFF, MoE


@torch.no_grad()
def fff_leaf_oracle(fff: FFF, x: torch.Tensor) -> torch.Tensor:
    """Leaf index reached by each input when walking the tree, (..., D) -> (...) long.

    At node k go to the right child 2k + 2 when w_k . x + b_k >= 0, else to the left child 2k + 1.
    """
    flat = x.reshape(-1, fff.in_features)
    leaves = []
    for sample in flat:
        node = 0
        for _ in range(fff.depth):
            logit = float(fff.node_weights[node] @ sample + fff.node_biases[node, 0])
            node = 2 * node + 2 if logit >= 0 else 2 * node + 1
        leaves.append(node - fff.n_nodes)
    return torch.tensor(leaves, dtype=torch.long).view(x.shape[:-1])


@torch.no_grad()
def fff_leaf_output(fff: FFF, leaf: int, sample: torch.Tensor) -> torch.Tensor:
    """Leaf ``leaf`` applied to one input: act(sample @ w1 + b1) @ w2 + b2, (D,) -> (O,)."""
    hidden = fff.activation(sample @ fff.w1s[leaf] + fff.b1s[leaf])
    return hidden @ fff.w2s[leaf] + fff.b2s[leaf]


@torch.no_grad()
def fff_hard_oracle(fff: FFF, x: torch.Tensor) -> torch.Tensor:
    """Hard FFF output: walk the tree per input and evaluate the one leaf, (..., D) -> (..., O)."""
    flat = x.reshape(-1, fff.in_features)
    leaves = fff_leaf_oracle(fff, flat)
    rows = [
        fff_leaf_output(fff, int(leaf), sample) for sample, leaf in zip(flat, leaves, strict=True)
    ]
    return torch.stack(rows).view(*x.shape[:-1], fff.out_features)


@torch.no_grad()
def fff_soft_oracle(fff: FFF, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft FFF output without region leak or dropout, and the per-input node entropies.

    Leaf j's weight is the product over its path of c (went right) or 1 - c (went left), with
    c = sigmoid(w . x + b) of each node on the path; the output is the weighted sum of all leaves.

    Returns:
        output (..., O) and entropies (B, N) with B the number of inputs (natural log, p clamped
        to [1e-6, 1 - 1e-6]).
    """
    flat = x.reshape(-1, fff.in_features)
    rows, entropy_rows = [], []
    for sample in flat:
        right = [
            torch.sigmoid(fff.node_weights[k] @ sample + fff.node_biases[k, 0])
            for k in range(fff.n_nodes)
        ]
        entropy_rows.append(
            torch.stack([bernoulli_entropy(p) for p in right]) if right else sample[:0]
        )
        output = torch.zeros(fff.out_features, dtype=sample.dtype)
        for leaf in range(fff.n_leaves):
            weight, node = torch.ones((), dtype=sample.dtype), 0
            for level in reversed(range(fff.depth)):
                goes_right = (leaf >> level) & 1
                weight = weight * (right[node] if goes_right else 1 - right[node])
                node = 2 * node + 1 + goes_right
            output = output + weight * fff_leaf_output(fff, leaf, sample)
        rows.append(output)
    return torch.stack(rows).view(*x.shape[:-1], fff.out_features), torch.stack(entropy_rows)


def bernoulli_entropy(p: torch.Tensor) -> torch.Tensor:
    """Natural-log Bernoulli(p) entropy, elementwise, p and 1 - p clamped to [1e-6, 1 - 1e-6].

    Differentiable; computed in at least float32 so bfloat16/float16 probabilities give usable
    values. Shape (...) -> (...).
    """
    p = p.to(torch.promote_types(p.dtype, torch.float32))
    q = (1 - p).clamp(1e-6, 1 - 1e-6)
    p = p.clamp(1e-6, 1 - 1e-6)
    return -p * torch.log(p) - q * torch.log(q)


# ------------------------------------------------------------------------------------------ MoE
def dense_gates(indices: torch.Tensor, gates: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(N, E) gates: ``gates`` at ``indices`` (both (N, k)), zeros elsewhere (differentiable)."""
    return gates.new_zeros(gates.shape[0], num_experts).scatter(1, indices, gates)


@torch.no_grad()
def moe_gates_oracle(moe: MoE, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """G(x) computed from the layer's weights alone, (..., D) -> (..., E), float32.

    H = x @ w_gate (+ noise * (softplus(x @ w_noise) + 1e-6) when ``noise`` (..., E) standard
    normal draws are given); keep the k largest H per input, softmax over them, zeros elsewhere.
    Uses none of the layer's routing code.
    """
    flat = x.reshape(-1, moe.in_features).float()
    logits = flat @ moe.w_gate.float()
    if noise is not None:
        scale = torch.nn.functional.softplus(flat @ moe.w_noise.float()) + 1e-6
        logits = logits + noise.reshape(logits.shape).float() * scale
    values, indices = logits.topk(moe.k, dim=-1)
    gates = dense_gates(indices, torch.softmax(values, dim=-1), moe.num_experts)
    return gates.reshape(*x.shape[:-1], moe.num_experts)
