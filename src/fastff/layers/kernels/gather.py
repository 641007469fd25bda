"""``gather``: the hard path as fixed-shape gathers, for export (ONNX, ``torch.export``).

(B, D) -> (B, O) with no data-dependent shapes, no host synchronisation and no custom op, so
``torch.export`` traces it with a dynamic batch and ONNX Runtime runs it:

- one gather per tree level: the reached node's weight row and bias, (B, D) and (B,); the node
  logit ``sum(x * w) + b`` picks the child (right where it is >= 0);
- one leaf gather: the reached leaf's weights, (B, D, l) and (B, l, O), evaluated with two
  batched matmuls.

Every intermediate tensor scales with the batch times D, l or O, never with the batch times the
number of leaves: the work per input stays ``D * (d + l) + l * O`` multiply-adds (log-time in
the layer's training width). Unlike ``plain`` it does not split the batch into memory-bounded
chunks (the split size would depend on the batch), so it holds the gathered leaf weights of the
whole batch at once: B * l * (D + O) elements. Any device and dtype; supports autograd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fastff.layers.fff import FFF


def hard_forward(layer: FFF, x2d: torch.Tensor) -> torch.Tensor:
    """Hard forward of ``layer`` on a flat batch, (B, D) -> (B, O)."""
    if layer.depth == 0:  # one leaf: a dense FF, nothing to gather
        hidden = layer.activation(torch.addmm(layer.b1s[0], x2d, layer.w1s[0]))  # (B, l)
        return torch.addmm(layer.b2s[0], hidden, layer.w2s[0])
    node_weights, node_biases = layer.node_weights, layer.node_biases
    if layer.frozen_tree:
        node_weights, node_biases = node_weights.detach(), node_biases.detach()
    leaf = route(x2d, node_weights, node_biases, layer.depth)  # (B,)
    w1 = layer.w1s.index_select(0, leaf)  # (B, D, l)
    hidden = torch.bmm(x2d.unsqueeze(1), w1).squeeze(1) + layer.b1s.index_select(0, leaf)
    hidden = layer.activation(hidden)  # (B, l)
    w2 = layer.w2s.index_select(0, leaf)  # (B, l, O)
    return torch.bmm(hidden.unsqueeze(1), w2).squeeze(1) + layer.b2s.index_select(0, leaf)


def route(
    x2d: torch.Tensor, node_weights: torch.Tensor, node_biases: torch.Tensor, depth: int
) -> torch.Tensor:
    """Leaf reached by each input with one gather per level, (B, D) -> (B,) long; node weights
    (2**depth - 1, D), biases (2**depth - 1, 1). Right where the node logit is >= 0."""
    node_biases = node_biases.reshape(-1)
    node = torch.zeros_like(x2d[:, 0], dtype=torch.long)  # (B,) heap index, the root first
    for _ in range(depth):
        logits = (x2d * node_weights.index_select(0, node)).sum(-1)  # (B,)
        logits = logits + node_biases.index_select(0, node)
        node = 2 * node + 1 + (logits >= 0).long()
    return node - (2**depth - 1)
