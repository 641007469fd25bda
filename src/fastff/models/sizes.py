"""The paper's size columns, read from built layers (never re-derived from a config)."""

from __future__ import annotations

from typing import Any

from torch import nn

from fastff.models import kinds


def hosted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, layer) of every layer of a kind (:mod:`fastff.models.kinds`: FFF, FF,
    MoE, their quantized forms, registered kinds) inside ``model`` (``model`` itself too)."""
    types = kinds.layer_types()
    return [(name, m) for name, m in model.named_modules() if isinstance(m, types)]


def layer_sizes(layer: nn.Module) -> dict[str, Any]:
    """The size columns of one layer; keys that do not apply are None.

    ``width`` is the training width (the paper's w); the kind adds its own columns
    (:attr:`~fastff.models.kinds.LayerKind.size_columns`: FFF leaf_width and depth, MoE
    num_experts, expert_width and k).
    """
    kind = kinds.kind_of(layer)
    sizes: dict[str, Any] = {
        "layer": kind.name,
        "width": layer.training_width,
        "leaf_width": None,
        "depth": None,
        "training_width": layer.training_width,
        "inference_width": layer.inference_width,
        "inference_size": layer.inference_size,
    }
    return sizes | kind.size_columns(layer)


def model_sizes(model: nn.Module) -> dict[str, Any]:
    """Sizes of the layer ``model`` hosts (one layer's columns), ``n_hosted_layers`` and the
    model's ``n_params``.

    Raises:
        ValueError: if the model hosts no fastff layer or layers of different sizes.
    """
    layers = hosted_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} hosts no fastff layer (FFF, FF, MoE, ...)")
    per_layer = [layer_sizes(layer) for _, layer in layers]
    if any(sizes != per_layer[0] for sizes in per_layer):
        raise ValueError(f"{type(model).__name__} hosts layers of different sizes")
    return {
        **per_layer[0],
        "n_hosted_layers": len(layers),
        "n_params": sum(p.numel() for p in model.parameters()),
    }
