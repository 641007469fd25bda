"""Model-wide views of the layers inside a backbone: auxiliary losses, soft mode, node entropy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from fastff.layers import FFF


def total_aux_loss(model: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """Sum of ``aux_loss`` over every layer of ``model`` that has one (a 0-dim tensor)."""
    total = like.new_zeros(())
    for module in model.modules():
        aux = getattr(module, "aux_loss", None)
        if isinstance(aux, torch.Tensor):
            total = total + aux.to(total.dtype)
    return total


def fff_layers(model: nn.Module) -> list[tuple[str, FFF]]:
    """(qualified name, layer) of every FFF in ``model``."""
    return [(name or "layer", m) for name, m in model.named_modules() if isinstance(m, FFF)]


@contextlib.contextmanager
def soft_inference(model: nn.Module) -> Iterator[None]:
    """Within the block, every FFF in ``model`` runs its soft mixture forward, whatever the mode."""
    layers = {layer: layer.eval_path for _, layer in fff_layers(model)}
    for layer in layers:
        layer.eval_path = "soft"
    try:
        yield
    finally:
        for layer, path in layers.items():
            layer.eval_path = path


def level_entropies(model: nn.Module) -> dict[str, float]:
    """Mean node entropy per tree level of each FFF after its last training forward.

    Keys look like ``entropy/<layer>/level_<m>`` (level 0 is the root).
    """
    out: dict[str, float] = {}
    for name, layer in fff_layers(model):
        entropy = getattr(layer, "node_entropy", None)
        if entropy is None or entropy.numel() == 0:
            continue
        entropy = entropy.detach().float()
        for level in range(layer.depth):
            chunk = entropy[2**level - 1 : 2 ** (level + 1) - 1]
            out[f"entropy/{name}/level_{level}"] = chunk.mean().item()
    return out
