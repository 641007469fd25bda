"""The paper's flat network: flatten the image, one layer, class logits."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


class FlatNet(nn.Module):
    """Flatten (B, C, H, W) images to (B, C*H*W) and apply one layer that outputs class logits.

    Args:
        input_shape: shape of one input, e.g. (1, 28, 28).
        num_classes: number of classes (the layer's out_features).
        layer_factory: ``layer_factory(in_features, out_features) -> nn.Module``.
        name: config label, ignored.
        layer_width: the layer config's default training width (``layer.width`` reads it),
            ignored here.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        layer_factory: Callable[[int, int], nn.Module],
        name: str = "flat",
        layer_width: int | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.layer = layer_factory(math.prod(self.input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *input_shape) -> logits (B, num_classes)."""
        return self.layer(x.flatten(1))
