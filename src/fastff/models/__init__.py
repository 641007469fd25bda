"""Backbones that host a layer (the paper's flat net; timm vision transformers come next), the
builders the ``layer`` configs instantiate, and sizes read from built layers."""

from fastff.models.flat import FlatNet
from fastff.models.layer_builders import LAYER_CLASSES, LayerConfigError
from fastff.models.sizes import hosted_layers, layer_sizes, model_sizes
from fastff.models.timm_mlp import TimmMlp, timm_mlp

__all__ = [
    "LAYER_CLASSES",
    "FlatNet",
    "LayerConfigError",
    "TimmMlp",
    "hosted_layers",
    "layer_sizes",
    "model_sizes",
    "timm_mlp",
]
