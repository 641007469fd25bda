"""The paper's size columns, read from built layers (never re-derived from a config)."""

from __future__ import annotations

from typing import Any

from torch import nn

from fastff.layers import FF, FFF, MoE
from fastff.layers.quantized_fff import QuantizedFFF
from fastff.layers.quantized_moe import QuantizedMoE
from fastff.models.layer_builders import layer_name

LAYER_TYPES = (FFF, FF, MoE, QuantizedFFF, QuantizedMoE)
FFF_TYPES = (FFF, QuantizedFFF)
MOE_TYPES = (MoE, QuantizedMoE)
"""FFF and MoE and their quantized forms (``fastff.quantize``) have the same size columns."""


def hosted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, layer) of every FFF, FF or MoE inside ``model`` (``model`` itself too)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)]


def layer_sizes(layer: nn.Module) -> dict[str, Any]:
    """The size columns of one layer; keys that do not apply are None.

    ``width`` is the training width (the paper's w); MoE adds num_experts, expert_width and k.
    """
    sizes: dict[str, Any] = {
        "layer": layer_name(layer),
        "width": layer.training_width,
        "leaf_width": layer.leaf_width if isinstance(layer, FFF_TYPES) else None,
        "depth": layer.depth if isinstance(layer, FFF_TYPES) else None,
        "training_width": layer.training_width,
        "inference_width": layer.inference_width,
        "inference_size": layer.inference_size,
    }
    if isinstance(layer, MOE_TYPES):
        sizes |= {
            "num_experts": layer.num_experts,
            "expert_width": layer.expert_width,
            "k": layer.k,
        }
    return sizes


def model_sizes(model: nn.Module) -> dict[str, Any]:
    """Sizes of the layer ``model`` hosts (one layer's columns), ``n_hosted_layers`` and the
    model's ``n_params``.

    Raises:
        ValueError: if the model hosts no fastff layer or layers of different sizes.
    """
    layers = hosted_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} hosts no FFF, FF or MoE layer")
    per_layer = [layer_sizes(layer) for _, layer in layers]
    if any(sizes != per_layer[0] for sizes in per_layer):
        raise ValueError(f"{type(model).__name__} hosts layers of different sizes")
    return {
        **per_layer[0],
        "n_hosted_layers": len(layers),
        "n_params": sum(p.numel() for p in model.parameters()),
    }
