"""How :class:`fastff.layers.MoE` sends its (input, slot) pairs to their experts: the dispatch
registry ``MoE.dispatch`` (default ``"auto"``) picks from.

A dispatch computes the pair outputs (N * k, O), pair p = n * k + j being expert
``indices[n, j]`` applied to input ``x2d[n]`` (the layer weights them by the gates afterwards):

- ``sorted`` (the layer's own :meth:`MoE._run_experts`): pairs sorted by expert, experts of
  similar load run as one padded batched matmul. Any device and dtype, autograd, dropout; reads
  the per-expert pair counts on the host (one synchronisation per forward).
- ``gathered``: each pair's expert weights gathered, two batched matmuls per chunk of
  :data:`GATHER_CHUNK_ELEMENTS` temporary elements (the chunk size follows the layer's sizes
  only): no host synchronisation and no data-dependent shapes. Any device and dtype, autograd,
  dropout; it moves every pair's weights, so it suits small batches or a GPU.
- ``gathered_fixed`` (:meth:`MoE._gathered_pairs`, as :meth:`MoE.gathered_forward`): every
  pair's expert weights gathered at once, no chunks: fixed shapes that serve any batch size once
  traced. Any device and dtype, autograd, dropout; memory grows with the batch.
- ``triton`` (:func:`fastff.layers.kernels.triton_hard.pair_forward`): one Triton launch, one
  program per pair, nothing gathered. CUDA (CPU tensors only in Triton's interpreter),
  float32/bfloat16/float16 with float32 sums, inference only, no active dropout.

``auto`` (:func:`select`): while ``torch.jit.trace`` traces, or torch.compile / torch.export
trace an eval-mode forward, ``gathered_fixed`` (the traced graph serves any batch size); else on
the CPU and in training ``sorted`` (autograd through padded matmul groups); else (CUDA, eval) the
first *preferred* dispatch, in registration order, that can compute the call (``triton``), else
``gathered``: an eval forward on CUDA never waits for the host, so it can be captured in a CUDA
graph. The choice depends on the device, dtype, grad mode, training mode and trace state, never
on values. Force one with ``moe.dispatch = "gathered"``; a forced dispatch that cannot compute a
call raises ValueError naming the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fastff.layers.kernels import triton_hard

if TYPE_CHECKING:
    from fastff.layers.moe import MoE

GATHER_CHUNK_ELEMENTS = 2**22
"""Elements of gathered expert weights per ``gathered`` chunk."""


def _runs_everywhere(moe: MoE, x2d: torch.Tensor) -> str | None:
    return None


@dataclass(frozen=True)
class Dispatch:
    """One way to evaluate the selected (input, expert) pairs.

    Attributes:
        name: what ``moe.dispatch`` accepts.
        run: ``(moe, x2d (N, D), indices (N, k)) -> pair outputs (N * k, O)``.
        unsupported: ``(moe, x2d) -> reason or None``: why it cannot compute this call.
        preferred: ``auto`` runs it in eval mode on CUDA wherever it can (compiled kernels).
    """

    name: str
    run: Callable[[MoE, torch.Tensor, torch.Tensor], torch.Tensor]
    unsupported: Callable[[MoE, torch.Tensor], str | None] = _runs_everywhere
    preferred: bool = False


REGISTRY: dict[str, Dispatch] = {}
"""Registered dispatches by name, in registration order."""


def register(dispatch: Dispatch) -> Dispatch:
    """Add a dispatch (a new name; ``"auto"`` is reserved) and return it."""
    if dispatch.name == "auto" or dispatch.name in REGISTRY:
        raise ValueError(f"MoE dispatch name {dispatch.name!r} is taken")
    REGISTRY[dispatch.name] = dispatch
    return dispatch


def _sorted(moe: MoE, x2d: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return moe._run_experts(x2d, indices)


def _gathered(moe: MoE, x2d: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Every pair's expert weights gathered, in chunks: (N, D), (N, k) -> (N * k, O)."""
    n_pairs, features = indices.numel(), moe.in_features
    if n_pairs == 0:
        return x2d.new_zeros(0, moe.out_features)
    experts = indices.reshape(-1)  # (P,)
    inputs = x2d.unsqueeze(1).expand(-1, indices.shape[1], -1).reshape(n_pairs, 1, features)
    per_pair = moe.expert_width * (features + moe.out_features)
    chunk = max(1, GATHER_CHUNK_ELEMENTS // per_pair)
    outputs = []
    for part, rows in zip(experts.split(chunk), inputs.split(chunk), strict=True):
        w1, b1 = moe.w1s.index_select(0, part), moe.b1s.index_select(0, part)
        hidden = torch.baddbmm(b1.unsqueeze(1), rows, w1)  # (C, 1, W)
        hidden = moe.expert_dropout(moe.activation(hidden))
        w2, b2 = moe.w2s.index_select(0, part), moe.b2s.index_select(0, part)
        outputs.append(torch.baddbmm(b2.unsqueeze(1), hidden, w2).squeeze(1))  # (C, O)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _gathered_fixed(moe: MoE, x2d: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return moe._gathered_pairs(x2d, indices, moe.expert_dropout)


def _expert_weights(moe: MoE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return moe.w1s, moe.b1s, moe.w2s, moe.b2s


def _triton_unsupported(moe: MoE, x2d: torch.Tensor) -> str | None:
    if moe.training and moe.dropout > 0.0:
        return "it has no dropout; use it in eval mode or with dropout=0"
    return triton_hard.unsupported_for(x2d, _expert_weights(moe), moe.activation)


def _triton(moe: MoE, x2d: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return triton_hard.pair_forward(x2d, indices, _expert_weights(moe), moe.activation)


register(Dispatch("sorted", _sorted))
register(Dispatch("gathered", _gathered))
register(Dispatch("triton", _triton, _triton_unsupported, preferred=True))
register(Dispatch("gathered_fixed", _gathered_fixed))


def dispatch_names() -> tuple[str, ...]:
    """``"auto"`` and every dispatch."""
    return ("auto", *REGISTRY)


def check_dispatch(name: object) -> str:
    """``name`` if it is a dispatch name, else ValueError listing them."""
    if not isinstance(name, str) or (name != "auto" and name not in REGISTRY):
        raise ValueError(f"MoE dispatch must be one of {list(dispatch_names())}, got {name!r}")
    return name


def select(moe: MoE, x2d: torch.Tensor) -> str:
    """The dispatch ``auto`` runs for ``moe`` on the inputs ``x2d`` (N, D) (see the module
    docstring)."""
    if torch.jit.is_tracing() or (not moe.training and torch.compiler.is_compiling()):
        return "gathered_fixed"
    if x2d.device.type != "cuda" or moe.training:
        return "sorted"
    for dispatch in REGISTRY.values():
        if dispatch.preferred and dispatch.unsupported(moe, x2d) is None:
            return dispatch.name
    return "gathered"


def run_experts(moe: MoE, x2d: torch.Tensor, indices: torch.Tensor, name: str) -> torch.Tensor:
    """Pair outputs (N * k, O) of the experts ``indices`` (N, k) on ``x2d`` (N, D) by ``name``.

    Raises:
        ValueError: an unknown dispatch, or a forced one that cannot compute this call.
    """
    if name == "auto":
        return REGISTRY[select(moe, x2d)].run(moe, x2d, indices)
    chosen = REGISTRY[check_dispatch(name)]
    reason = chosen.unsupported(moe, x2d)
    if reason is not None:
        raise ValueError(f"MoE dispatch {name!r} cannot run this call: {reason}")
    return chosen.run(moe, x2d, indices)
