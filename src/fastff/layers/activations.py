"""Activation functions shared by every layer: by name, as a module, or as a module class."""

from __future__ import annotations

import functools
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

ActivationSpec = str | nn.Module | type[nn.Module] | functools.partial
"""What every layer's ``activation`` argument accepts (see :func:`make_activation`)."""

ALLOWED = (
    f"a name in {sorted(ACTIVATIONS)}, an nn.Module instance, an nn.Module subclass "
    "(instantiated with no arguments, e.g. nn.GELU) or a functools.partial of one"
)


def make_activation(activation: ActivationSpec) -> nn.Module:
    """Return the activation module described by ``activation``.

    Accepts a name from ``ACTIVATIONS`` (case-insensitive), an ``nn.Module`` instance (returned
    as is, so it is shared if passed to several layers), an ``nn.Module`` subclass such as
    ``nn.GELU`` (instantiated with no arguments: timm's ``act_layer`` passes straight through),
    or a ``functools.partial`` of such a subclass (e.g. ``partial(nn.GELU, approximate="tanh")``).
    The module acts elementwise on tensors of any shape.

    Raises:
        ValueError: naming ``activation`` and what is allowed, for any other value or a class
            that cannot be built without arguments.
    """
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, str):
        if activation.lower() in ACTIVATIONS:
            return ACTIVATIONS[activation.lower()]()
    elif _is_module_class(activation) or (
        isinstance(activation, functools.partial) and _is_module_class(activation.func)
    ):
        try:
            return activation()
        except TypeError as error:
            raise ValueError(
                f"activation {activation!r} cannot be built without arguments ({error}); "
                f"activation must be {ALLOWED}"
            ) from error
    raise ValueError(f"activation must be {ALLOWED}, got {activation!r}")


def _is_module_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, nn.Module)
