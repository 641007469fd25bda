"""Correctness gates run on the timed input before any timing: a wrong kernel reports no speedup."""

from __future__ import annotations

import torch
from torch import nn

from fastff.layers import FFF

TIE_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2}
"""A node logit within this fraction of |x| * |w| of 0 may route either way in another order."""
OUTPUT_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 3e-2}


@torch.no_grad()
def oracle_rows(layer: FFF, x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row tree walk in float64: (outputs (R, O), smallest relative |logit| on each path (R,)).

    The smallest ``|w . x + b| / (|w| |x| + |b|)`` on the path says how close the row is to a tie.
    """
    outputs, margins = [], []
    for row in x2d.detach().double():
        node, margin = 0, float("inf")
        for _ in range(layer.depth):
            weight = layer.node_weights[node].double()
            bias = float(layer.node_biases[node, 0])
            logit = float(weight @ row) + bias
            scale = float(weight.norm() * row.norm()) + abs(bias) + 1e-30
            margin = min(margin, abs(logit) / scale)
            node = 2 * node + 2 if logit >= 0 else 2 * node + 1
        leaf = node - layer.n_nodes
        hidden = layer.activation(row @ layer.w1s[leaf].double() + layer.b1s[leaf].double())
        outputs.append(hidden @ layer.w2s[leaf].double() + layer.b2s[leaf].double())
        margins.append(margin)
    return torch.stack(outputs), torch.tensor(margins, dtype=torch.float64)


def check_fff_hard(
    layer: nn.Module, x2d: torch.Tensor, strategy: str, rows: int, oracle_layer: FFF | None = None
) -> str | None:
    """Compare the timed strategy with the plain path on all of ``x2d`` and with the per-row
    oracle on its first ``rows`` rows. Rows that differ must sit on a near-tie (a logit within
    rounding of 0), and at most 1 % of them may. Returns None if correct, else the reason.

    ``layer``: an FFF, or a quantized FFF with ``oracle_layer`` its dequantized FFF (the oracle
    walks that; default ``layer``)."""
    dtype = x2d.dtype
    oracle_layer = layer if oracle_layer is None else oracle_layer
    with torch.inference_mode():
        fast = layer.hard_forward(x2d, strategy)
        plain = layer.hard_forward(x2d, "plain")
    checked = x2d[:rows]
    expected, margins = oracle_rows(oracle_layer, checked.cpu())
    references = {"plain path": (plain, None), "oracle": (expected, margins)}
    for label, (reference, ref_margins) in references.items():
        count = reference.shape[0]
        got = fast[:count].double().cpu()
        reference = reference.double().cpu()
        scale = reference.abs().amax().item() + 1.0
        tolerance = OUTPUT_TOLERANCE.get(dtype, 1e-4) * scale
        bad = ((got - reference).abs() > tolerance).any(dim=1)
        if not bad.any():
            continue
        worst = (got - reference).abs().amax().item()
        failure = (
            f"strategy {strategy!r} differs from the {label} on {int(bad.sum())} of {count} "
            f"rows (max abs error {worst:.3g}, tolerance {tolerance:.3g})"
        )
        if bad.sum() > max(1, count // 100):
            return failure
        if ref_margins is None:
            _, ref_margins = oracle_rows(oracle_layer, x2d[bad.to(x2d.device)].cpu())
        else:
            ref_margins = ref_margins[bad]
        if not (ref_margins < TIE_TOLERANCE.get(dtype, 1e-5)).all():
            return failure
    return None


def check_fff_soft(layer: FFF, reference: nn.Module, x2d: torch.Tensor) -> str | None:
    """FFF soft forward vs the reference ``training_forward`` on the same weights and input."""
    with torch.no_grad():
        ours = layer.soft_forward(x2d).double()
        theirs = reference.training_forward(x2d).double()
    tolerance = OUTPUT_TOLERANCE.get(x2d.dtype, 1e-4) * (theirs.abs().amax().item() + 1.0)
    worst = (ours - theirs).abs().amax().item() if ours.numel() else 0.0
    if worst > tolerance:
        return f"soft forward differs from the reference (max abs error {worst:.3g})"
    return None
