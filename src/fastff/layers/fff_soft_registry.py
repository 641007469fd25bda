"""Soft (training) implementations of :class:`fastff.layers.FFF` and the registry ``auto`` picks
from.

Every implementation computes ``FFF.soft_forward`` on a flat batch, (B, D) -> (B, O): the mixture
of all 2**d leaves weighted by their path probabilities, recording the layer's ``aux_loss`` and
``node_entropy``. All give the same outputs and gradients (to rounding):

- ``fused_cpu``: one autograd function with a hand-written backward
  (:func:`fastff.layers.fff_soft_fused.soft_fff`) whose routing runs as the C++ kernel of
  :mod:`fastff.layers.kernels.cpu_soft_routing`; with a ReLU and the input and parameters in one
  float32/float64 dtype (autocast off) the whole step is one C++ autograd op. CPU inputs of any
  floating dtype (the routing runs in at least float32), only once the kernel library is built
  (``python -m fastff.layers.kernels build``; a forward never builds it) and loaded, and not
  while torch.compile or torch.export traces (the C++ ops have no fake implementation).
- ``fused_torch``: the same autograd function with the routing as torch ops; any device.
- ``composite``: torch ops under standard autograd; every configuration.

Both fused implementations need depth >= 1, no active dropout, an activation without parameters
that keeps its input (:func:`fastff.layers.fff_soft_fused.unfusable_reason`), and not
``torch.jit.trace`` (it records torch ops, not autograd functions or custom ops).

``auto`` (the default; ``"fused"`` is its alias): the first *preferred* implementation, in
registration order, that can compute the call (``fused_cpu``, then ``fused_torch``), else
``composite``. So on the CPU with the kernel loaded the C++ step runs; on CUDA, without the
kernel and while torch.compile traces, ``fused_torch``; at depth 0, with active dropout, an
activation with parameters or in place, and while ``torch.jit.trace`` traces, ``composite``. The
choice is a function of the layer's settings (depth, dropout in training mode, activation), the
input's device and dtype and the trace state, never of values; whether the kernel is loaded is
decided once per process (the first call it could serve loads an existing build).

Force one with ``layer.soft_implementation = "fused_torch"``; a forced implementation that cannot
compute a call raises ValueError naming the reason. An empty batch is computed by the composite
path whatever the implementation (with zero entropies and loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fastff.layers.fff_soft import routing_dtype
from fastff.layers.fff_soft_fused import unfusable_reason
from fastff.layers.kernels import cpu_build, cpu_soft_routing

if TYPE_CHECKING:
    from fastff.layers.fff import FFF

ALIASES = {"fused": "auto"}
"""Other names ``soft_implementation`` accepts, and what they mean."""


def _runs_everywhere(layer: FFF, x2d: torch.Tensor) -> str | None:
    return None


@dataclass(frozen=True)
class SoftImplementation:
    """One soft (training) implementation.

    Attributes:
        name: what ``layer.soft_implementation`` accepts.
        forward: ``(layer, x2d (B, D)) -> (B, O)``; records aux_loss and node_entropy.
        unsupported: ``(layer, x2d) -> reason or None``: why it cannot compute this call.
        preferred: ``auto`` runs it wherever it can.
    """

    name: str
    forward: Callable[[FFF, torch.Tensor], torch.Tensor]
    unsupported: Callable[[FFF, torch.Tensor], str | None] = _runs_everywhere
    preferred: bool = False


REGISTRY: dict[str, SoftImplementation] = {}
"""Registered implementations by name, in registration order."""


def register(implementation: SoftImplementation) -> SoftImplementation:
    """Add an implementation (a new name; ``"auto"`` and the aliases are reserved), return it."""
    name = implementation.name
    if name == "auto" or name in ALIASES or name in REGISTRY:
        raise ValueError(f"soft implementation name {name!r} is taken")
    REGISTRY[name] = implementation
    return implementation


def _fused_unsupported(layer: FFF, x2d: torch.Tensor) -> str | None:
    if torch.jit.is_tracing():
        return "torch.jit.trace records torch ops, not its autograd function"
    return unfusable_reason(layer.activation, layer.training and layer.dropout > 0.0, layer.depth)


def _fused_cpu_unsupported(layer: FFF, x2d: torch.Tensor) -> str | None:
    reason = _fused_unsupported(layer, x2d)
    if reason is not None:
        return reason
    if x2d.device.type != "cpu" or routing_dtype(x2d.dtype) not in cpu_soft_routing.DTYPES:
        return f"it needs CPU float inputs, got {x2d.device.type} {x2d.dtype}"
    if torch.compiler.is_compiling():
        return "torch.compile and torch.export cannot trace its C++ ops"
    if not cpu_build.load():
        return cpu_build.unavailable_reason() or "its C++ kernel library is not loaded"
    return None


def _fused_cpu(layer: FFF, x2d: torch.Tensor) -> torch.Tensor:
    return layer._fused_soft_forward(x2d, routing_kernel=True)


def _fused_torch(layer: FFF, x2d: torch.Tensor) -> torch.Tensor:
    return layer._fused_soft_forward(x2d, routing_kernel=False)


def _composite(layer: FFF, x2d: torch.Tensor) -> torch.Tensor:
    return layer._composite_soft_forward(x2d)


register(SoftImplementation("fused_cpu", _fused_cpu, _fused_cpu_unsupported, preferred=True))
register(SoftImplementation("fused_torch", _fused_torch, _fused_unsupported, preferred=True))
register(SoftImplementation("composite", _composite))


def implementation_names() -> tuple[str, ...]:
    """``"auto"``, every registered implementation and the aliases."""
    return ("auto", *REGISTRY, *ALIASES)


def check_implementation(name: object) -> str:
    """The implementation ``name`` means (an alias resolved), else ValueError listing them."""
    if isinstance(name, str) and (name == "auto" or name in REGISTRY):
        return name
    if isinstance(name, str) and name in ALIASES:
        return ALIASES[name]
    raise ValueError(
        f"soft_implementation must be one of {list(implementation_names())}, got {name!r}"
    )


def select(layer: FFF, x2d: torch.Tensor) -> str:
    """The implementation ``auto`` runs for ``layer`` on the flat batch ``x2d`` (B, D)."""
    for implementation in REGISTRY.values():
        if implementation.preferred and implementation.unsupported(layer, x2d) is None:
            return implementation.name
    return "composite"


def resolve(layer: FFF, x2d: torch.Tensor, name: str) -> SoftImplementation:
    """The implementation that computes this call for the setting ``name``.

    Raises:
        ValueError: an unknown name, or a forced implementation that cannot compute this call.
    """
    name = check_implementation(name)
    if name == "auto":
        return REGISTRY[select(layer, x2d)]
    chosen = REGISTRY[name]
    reason = chosen.unsupported(layer, x2d)
    if reason is not None:
        raise ValueError(f"soft_implementation {name!r} cannot run this call: {reason}")
    return chosen


__all__ = [
    "ALIASES",
    "REGISTRY",
    "SoftImplementation",
    "check_implementation",
    "implementation_names",
    "register",
    "resolve",
    "select",
]
