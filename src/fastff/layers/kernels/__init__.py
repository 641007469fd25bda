"""Hard-inference strategies of :class:`fastff.layers.FFF` and the registry ``auto`` picks from.

Every strategy computes ``FFF.hard_forward`` on a flat batch, (B, D) -> (B, O): route each input
to one leaf (right where the node logit is >= 0, :meth:`FFF.leaf_indices`), then evaluate only
that leaf. One module per strategy:

- ``plain`` (:mod:`.plain`): gather each input's leaf weights, in memory-bounded chunks. Any
  device and dtype, autograd.
- ``grouped`` (:mod:`.grouped`): sort inputs by leaf, one matmul pair per reached leaf. Any device
  and dtype, autograd.
- ``fused_cpu`` (:mod:`.cpu_fused`, built by :mod:`.cpu_build`): a C++ kernel; CPU
  float32/float64, inference only, and only once built (``python -m fastff.layers.kernels
  build`` or ``make kernels``; ``make install`` builds it too).
- ``gather`` (:mod:`.gather`): one gather per tree level and one leaf gather, with no
  data-dependent shapes: the path ``torch.export`` and ONNX export trace (``fastff.export``).
  Any device and dtype, autograd; ``auto`` picks it only while traced (see :func:`select`).
- ``triton`` (:mod:`.triton_hard`, kernels in :mod:`.triton_jit`): one Triton launch, one
  program per input row (tree walk, then the leaf's two products and activation); CUDA
  float32/bfloat16/float16, inference only; CPU tensors only in Triton's interpreter
  (``TRITON_INTERPRET=1``), which ``auto`` never runs. Importing fastff never imports triton.
- ``triton_grouped`` (same module): route in one launch, sort rows by leaf, then one launch
  evaluates every leaf's rows as tile matrix products; the same limits. ``auto`` takes it on
  CUDA from ``triton_hard.TRITON_GROUPED_MIN_ROWS_PER_LEAF`` rows per leaf on.

``auto`` runs the first *preferred* strategy (compiled kernels, in registration order: the C++
kernel on the CPU, ``triton_grouped`` or ``triton`` on CUDA) that can compute the call, else,
on the CPU, ``grouped`` when at least :data:`GROUPED_MIN_INPUTS_PER_LEAF` inputs per leaf are
expected, else ``plain``. On CUDA it never picks ``grouped``, whose per-leaf loop reads the leaf
counts back to the host:
there the fallback (gradients required, an activation the kernel lacks, no triton) is ``plain``,
so every CUDA choice runs without a host synchronisation and can be captured in a CUDA graph.
The choice is a function of the layer, the input's shape, device and dtype and the grad mode,
never of values; whether the C++ kernel is usable is decided once per process (the first call it
could serve loads an existing build, synchronously) and never changes after that unless the user
builds or loads it explicitly; whether triton imports is decided once per process, at the first
CUDA call. No strategy, and no choice, starts a process or a thread.

Force a strategy per call with ``layer.hard_forward(x, strategy="grouped")`` or for the eval-mode
forward with ``layer.hard_strategy = "grouped"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fastff.layers.kernels import cpu_fused, gather, grouped, plain, triton_hard

if TYPE_CHECKING:
    from fastff.layers.fff import FFF

GROUPED_MIN_INPUTS_PER_LEAF = 32
"""``auto`` groups by leaf when batch / 2**depth reaches this many inputs per leaf."""


def _runs_everywhere(layer: FFF, x2d: torch.Tensor) -> str | None:
    return None


@dataclass(frozen=True)
class Strategy:
    """One hard-inference strategy.

    Attributes:
        name: what ``hard_forward(x, strategy=...)`` and ``layer.hard_strategy`` accept.
        forward: ``(layer, x2d (B, D)) -> (B, O)``.
        unsupported: ``(layer, x2d) -> reason or None``: why it cannot compute this call.
        preferred: ``auto`` runs it wherever it can (compiled kernels).
        auto_unsupported: for a preferred strategy, why ``auto`` should not pick it for this call
            (None: ``unsupported`` decides), e.g. ``triton`` on CPU tensors.
    """

    name: str
    forward: Callable[[FFF, torch.Tensor], torch.Tensor]
    unsupported: Callable[[FFF, torch.Tensor], str | None] = _runs_everywhere
    preferred: bool = False
    auto_unsupported: Callable[[FFF, torch.Tensor], str | None] | None = None


REGISTRY: dict[str, Strategy] = {}
"""Registered strategies by name, in registration order."""


def register(strategy: Strategy) -> Strategy:
    """Add a strategy (a new name; ``"auto"`` is reserved) and return it."""
    if strategy.name == "auto" or strategy.name in REGISTRY:
        raise ValueError(f"hard strategy name {strategy.name!r} is taken")
    REGISTRY[strategy.name] = strategy
    return strategy


register(Strategy("plain", plain.hard_forward))
register(Strategy("grouped", grouped.hard_forward))
register(Strategy("fused_cpu", cpu_fused.hard_forward, cpu_fused.unsupported_reason, True))
register(Strategy("gather", gather.hard_forward))
register(  # before `triton`: auto takes it where enough rows share each leaf
    Strategy(
        "triton_grouped",
        triton_hard.grouped_hard_forward,
        triton_hard.unsupported_reason,
        preferred=True,
        auto_unsupported=triton_hard.grouped_auto_unsupported,
    )
)
register(
    Strategy(
        "triton",
        triton_hard.hard_forward,
        triton_hard.unsupported_reason,
        preferred=True,
        auto_unsupported=triton_hard.auto_unsupported,
    )
)


def strategy_names() -> tuple[str, ...]:
    """``"auto"`` and every registered strategy."""
    return ("auto", *REGISTRY)


def check_strategy(name: object) -> str:
    """``name`` if it is a strategy name, else ValueError listing them."""
    if not isinstance(name, str) or (name != "auto" and name not in REGISTRY):
        raise ValueError(f"hard strategy must be one of {list(strategy_names())}, got {name!r}")
    return name


def select(layer: FFF, x2d: torch.Tensor) -> str:
    """The strategy ``auto`` runs for ``layer`` on the flat batch ``x2d`` (B, D): ``gather``
    while ``torch.jit.trace``, ``torch.compile`` or ``torch.export`` traces (no data-dependent
    shapes or custom ops, so the traced graph serves any batch size)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return "gather"
    for strategy in REGISTRY.values():
        check = strategy.auto_unsupported or strategy.unsupported
        if strategy.preferred and check(layer, x2d) is None:
            return strategy.name
    if x2d.device.type != "cuda" and x2d.shape[0] >= GROUPED_MIN_INPUTS_PER_LEAF * layer.n_leaves:
        return "grouped"
    return "plain"


def hard_forward_2d(layer: FFF, x2d: torch.Tensor, strategy: str = "auto") -> torch.Tensor:
    """Hard forward of ``layer`` on a flat batch (B, D) -> (B, O) with ``strategy``.

    Raises:
        ValueError: an unknown strategy, or one that cannot compute this call (e.g.
            ``fused_cpu`` with gradients required, on CUDA, or without a build).
    """
    if strategy == "auto":
        return REGISTRY[select(layer, x2d)].forward(layer, x2d)
    chosen = REGISTRY[check_strategy(strategy)]
    reason = chosen.unsupported(layer, x2d)
    if reason is not None:
        raise ValueError(f"hard strategy {strategy!r} cannot run this call: {reason}")
    return chosen.forward(layer, x2d)


__all__ = [
    "GROUPED_MIN_INPUTS_PER_LEAF",
    "REGISTRY",
    "Strategy",
    "check_strategy",
    "hard_forward_2d",
    "register",
    "select",
    "strategy_names",
]
