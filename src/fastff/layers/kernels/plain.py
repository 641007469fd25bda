"""``plain``: route every input, then gather its leaf's weights and evaluate it, (B, D) -> (B, O).

Best when few inputs share a leaf (batch <= 2**depth). Any device and dtype; supports autograd.
The reached leaves' weights are gathered per input in batch chunks that keep the gathered copies
below :data:`HARD_GATHER_BUDGET_BYTES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fastff.layers.fff import FFF

HARD_GATHER_BUDGET_BYTES = 64 * 2**20
"""Upper bound on the per-input leaf weights gathered at once."""


def hard_forward(layer: FFF, x2d: torch.Tensor) -> torch.Tensor:
    """Hard forward of ``layer`` on a flat batch, (B, D) -> (B, O)."""
    leaves = layer.leaf_indices(x2d)  # (B,)
    per_input = layer.leaf_width * (layer.in_features + layer.out_features)
    chunk = max(1, HARD_GATHER_BUDGET_BYTES // (per_input * layer.w1s.element_size()))
    outputs = [
        evaluate_leaves(layer, x_part, leaf_part)
        for x_part, leaf_part in zip(x2d.split(chunk), leaves.split(chunk), strict=True)
    ]
    if len(outputs) == 1:
        return outputs[0]
    return torch.cat(outputs) if outputs else x2d.new_zeros((0, layer.out_features))


def evaluate_leaves(layer: FFF, x2d: torch.Tensor, leaves: torch.Tensor) -> torch.Tensor:
    """Leaf ``leaves[i]`` of ``layer`` applied to ``x2d[i]`` for every i, (B, D), (B,) -> (B, O)."""
    hidden = torch.bmm(x2d.unsqueeze(1), layer.w1s[leaves]).squeeze(1) + layer.b1s[leaves]
    hidden = layer.activation(hidden)  # (B, l)
    return torch.bmm(hidden.unsqueeze(1), layer.w2s[leaves]).squeeze(1) + layer.b2s[leaves]
