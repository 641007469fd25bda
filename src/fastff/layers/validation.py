"""Argument checks shared by every fastff package: one clear ValueError naming the argument.

Public and dependency-free (torch and the standard library only), so the layers, the data
modules and the model builders all report bad arguments the same way:
``"<name> must be <what is allowed>, got <value>"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

import torch

__all__ = [
    "check_bool",
    "check_choice",
    "check_floating_dtype",
    "check_input",
    "check_int",
    "check_nonnegative_number",
    "check_number",
    "check_probability",
]

T = TypeVar("T")


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


def check_nonnegative_number(name: str, value: object) -> float:
    """Return ``value`` as float if it is a finite number >= 0, else raise ValueError naming it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool (not merely truthy), else raise ValueError naming it."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_number(
    name: str,
    value: object,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """Return ``value`` as float if it is a number between ``low`` and ``high`` (ends included
    unless ``open_low`` / ``open_high``); else raise ValueError naming ``name`` and the interval."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (
            value < high if open_high else value <= high
        )
    if not ok:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_choice(name: str, value: T, choices: Iterable[T]) -> T:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    allowed = list(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_floating_dtype(name: str, value: object) -> torch.dtype | None:
    """Return ``value`` if it is None or a floating-point ``torch.dtype``, else raise ValueError."""
    if value is not None and not (isinstance(value, torch.dtype) and value.is_floating_point):
        raise ValueError(
            f"{name} must be None or a floating-point torch.dtype (e.g. torch.float32), "
            f"got {value!r}"
        )
    return value


def check_input(x: torch.Tensor, in_features: int, layer: str) -> None:
    """Raise ValueError unless ``x`` is a tensor of shape (..., in_features) with at least 1 dim.

    Nothing to check while torch.fx (a Proxy) or torch.jit.trace (sizes are traced values)
    traces: the real input was checked, or is checked when the traced graph runs the layer."""
    if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing():
        return
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{layer} input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"{layer} input must have shape (..., in_features={in_features}), got {tuple(x.shape)}"
        )
