"""Backbones that host a layer: the paper's flat net (and, later, timm vision transformers)."""

from fastff.models.flat import FlatNet
from fastff.models.layer_factory import LAYER_NAMES, build_layer, layer_sizes

__all__ = ["LAYER_NAMES", "FlatNet", "build_layer", "layer_sizes"]
