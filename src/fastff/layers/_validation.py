"""Argument checks shared by the layers: one clear ValueError naming the argument."""

from __future__ import annotations

import torch


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an integer >= ``minimum``; else raise ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_probability(name: str, value: object) -> float:
    """Return ``value`` as float if it lies in [0, 1], else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_input(x: torch.Tensor, in_features: int, layer: str) -> None:
    """Raise ValueError unless ``x`` is a tensor of shape (..., in_features) with at least 1 dim."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{layer} input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"{layer} input must have shape (..., in_features={in_features}), got {tuple(x.shape)}"
        )
