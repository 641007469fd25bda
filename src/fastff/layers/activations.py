"""Activation functions by name, shared by every layer."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "mish": nn.Mish,
    "identity": nn.Identity,
}


def make_activation(activation: str | nn.Module) -> nn.Module:
    """Return an activation module from a name in ``ACTIVATIONS`` or pass a module through.

    Raises:
        ValueError: for an unknown name or a value that is neither a string nor an ``nn.Module``.
    """
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        return ACTIVATIONS[activation.lower()]()
    raise ValueError(
        f"activation must be one of {sorted(ACTIVATIONS)} or an nn.Module, got {activation!r}"
    )
