"""A layer kind that is not fastff's: a low-rank FF, registered through the entry-point group
``fastff.layer_kinds`` by the test that uses it (tests/test_layer_kind_plugin.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastff.layers.activations import make_activation
from fastff.models.kinds import LayerKind
from fastff.models.layer_builders import build_layer
from fastff.models.size_rules import positive


class LowRankFF(nn.Module):
    """in -> rank -> hidden_width -> out, the activation after the hidden layer.

    Shapes:
        input (..., in_features) -> output (..., out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_width: int,
        rank: int,
        activation: Any = "relu",
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.hidden_width, self.rank = hidden_width, rank
        self.down = nn.Linear(in_features, rank, bias=False, **factory)
        self.up = nn.Linear(rank, hidden_width, **factory)
        self.out = nn.Linear(hidden_width, out_features, **factory)
        self.activation = make_activation(activation)
        self.drop = nn.Dropout(dropout)
        self.aux_loss = torch.zeros(())

    training_width = inference_width = property(lambda self: self.hidden_width)
    training_size = inference_size = property(lambda self: self.hidden_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.activation(self.up(self.down(x)))))


def lowrank(in_features: int, out_features: int, *, width: int, rank: int, **kwargs: Any):
    """The ``layer=lowrank`` config's builder (through fastff's :func:`build_layer`)."""
    return build_layer("lowrank", in_features, out_features, width=width, rank=rank, **kwargs)


LOWRANK = LayerKind(
    name="lowrank",
    label="LowRank",
    layer_class=LowRankFF,
    target="lowrank_kind.lowrank",
    sizes=lambda width, config, host: {"hidden_width": positive("width", width)},
    derived=("hidden_width",),
    size_columns=lambda layer: {"rank": layer.rank},
    bench_layer=lambda shape: {"width": shape.training_width, "rank": 4},
    bench_vit_layer=lambda leaf, moe_k, hidden: {"width": None, "rank": 4},
)
