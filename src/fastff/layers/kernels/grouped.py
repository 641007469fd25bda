"""``grouped``: sort the inputs by leaf, one matmul pair per reached leaf, (B, D) -> (B, O).

Best when many inputs share each leaf (batch >> 2**depth). Any device and dtype; supports
autograd. Temporary memory: one sorted copy of the inputs and outputs, O(B * (D + O)).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fastff.layers.fff import FFF


def hard_forward(layer: FFF, x2d: torch.Tensor) -> torch.Tensor:
    """Hard forward of ``layer`` on a flat batch, (B, D) -> (B, O)."""
    leaves = layer.leaf_indices(x2d)  # (B,)
    order = torch.argsort(leaves, stable=True)  # (B,) inputs grouped by leaf
    counts = torch.bincount(leaves, minlength=layer.n_leaves).tolist()
    x_sorted = x2d.index_select(0, order)  # (B, D)
    outputs, start = [], 0
    for leaf, count in enumerate(counts):
        if count == 0:
            continue
        rows = x_sorted[start : start + count]  # (count, D)
        hidden = layer.activation(torch.addmm(layer.b1s[leaf], rows, layer.w1s[leaf]))
        outputs.append(torch.addmm(layer.b2s[leaf], hidden, layer.w2s[leaf]))  # (count, O)
        start += count
    if not outputs:
        return x2d.new_zeros((0, layer.out_features))
    y_sorted = torch.cat(outputs) if len(outputs) > 1 else outputs[0]  # (B, O)
    return torch.empty_like(y_sorted).index_copy_(0, order, y_sorted)
