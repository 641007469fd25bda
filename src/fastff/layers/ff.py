"""Dense feedforward layer (FF), the baseline FFF and MoE are compared with."""

from __future__ import annotations

import torch
from torch import nn

from fastff.layers.activations import ActivationSpec, make_activation
from fastff.layers.validation import (
    check_floating_dtype,
    check_input,
    check_int,
    check_probability,
)


class FF(nn.Module):
    """Dense feedforward layer ``fc2(dropout(act(fc1(x))))``: in_features -> hidden_width -> out.

    Shares the interface of ``FFF`` and ``MoE``: ``aux_loss`` (always a zero scalar) and the size
    properties, which all equal ``hidden_width`` since every neuron runs in training and inference.

    Args:
        in_features: D, size of the last input dimension.
        out_features: O, size of the last output dimension.
        hidden_width: number of hidden neurons.
        activation: a name from ``fastff.layers.activations.ACTIVATIONS``, a module instance or
            a module class such as ``nn.GELU`` (see ``make_activation``).
        dropout: probability of dropping hidden activations, training only.
        device: where the parameters are created (as ``nn.Linear``; ``"meta"`` allocates
            nothing, for reading sizes).
        dtype: dtype the parameters are created in (default: torch's default dtype).

    Shapes:
        input (..., D) -> output (..., O).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_width: int,
        activation: ActivationSpec = "relu",
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.hidden_width = check_int("hidden_width", hidden_width, 1)
        self.dropout = check_probability("dropout", dropout)
        check_floating_dtype("dtype", dtype)
        factory = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(in_features, hidden_width, **factory)
        self.activation = make_activation(activation)
        self.drop = nn.Dropout(self.dropout)
        self.fc2 = nn.Linear(hidden_width, out_features, **factory)

    @property
    def training_width(self) -> int:
        return self.hidden_width

    @property
    def inference_width(self) -> int:
        return self.hidden_width

    @property
    def training_size(self) -> int:
        return self.hidden_width

    @property
    def inference_size(self) -> int:
        return self.hidden_width

    @property
    def aux_loss(self) -> torch.Tensor:
        """Always a zero scalar: the dense layer has no regulariser of its own."""
        return torch.zeros((), device=self.fc1.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., O)."""
        if not torch.jit.is_scripting():  # TorchScript compiles the layer without the check
            check_input(x, self.in_features, "FF")
        return self.fc2(self.drop(self.activation(self.fc1(x))))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"hidden_width={self.hidden_width}, dropout={self.dropout}"
        )
