"""Backbones that host a layer (the paper's flat net; timm vision transformers come next), the
builders the ``layer`` configs instantiate, and sizes read from built layers."""

from fastff.models.flat import FlatNet
from fastff.models.kinds import FASTFF_KINDS
from fastff.models.layer_builders import LayerConfigError
from fastff.models.sizes import hosted_layers, layer_sizes, model_sizes
from fastff.models.timm_mlp import TimmMlp, timm_mlp

LAYER_CLASSES = {kind.name: kind.layer_class for kind in FASTFF_KINDS}
"""fastff's layer kind names -> their classes (:mod:`fastff.models.kinds` has every kind)."""

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
