"""Compact weight storage shared by the quantized layers: bfloat16, or int8 with float32 scales.

Weight-only and symmetric: activations, biases and node weights keep their dtype; a weight
matrix is stored either as bfloat16 (round to nearest even; widening back to float32 is exact)
or as int8 ``q = round(w / s)`` in [-127, 127] with one float32 scale ``s = max|w| / 127`` per
output channel (per hidden unit of a first layer, per output feature of a second layer), so
``w ~= q * s`` with an error of at most ``s / 2`` per weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

FORMATS = ("bf16", "int8")
"""Compact weight formats: ``"bf16"`` (bfloat16 weights) and ``"int8"`` (int8 weights with
symmetric float32 scales)."""
STORAGE_DTYPES = {"bf16": torch.bfloat16, "int8": torch.int8}
INT8_MAX = 127


def check_format(value: object, name: str = "quantize") -> str:
    """``value`` if it is a compact format, else ValueError naming ``name`` and the formats."""
    if not isinstance(value, str) or value not in FORMATS:
        raise ValueError(f"{name} must be one of {list(FORMATS)}, got {value!r}")
    return value


def check_finite(name: str, weight: torch.Tensor) -> None:
    """ValueError naming ``name`` unless every weight is finite (int8 scales need finite
    maxima, and the kernels skip zero activations, which is exact only for finite weights)."""
    if not bool(torch.isfinite(weight).all()):
        raise ValueError(f"quantize: {name} holds non-finite values (inf or NaN); refused")


def int8_symmetric(weight: torch.Tensor, reduce_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8, scale float32) with ``weight ~= q * scale.unsqueeze(reduce_dim)``.

    One scale per slice along ``reduce_dim`` (the dimension the channel's weights lie along):
    ``scale = max|w| / 127`` over that dimension, 1 where the slice is all zero. ``q`` has
    ``weight``'s shape, ``scale`` the shape without ``reduce_dim``.
    """
    magnitude = weight.detach().float().abs().amax(dim=reduce_dim)
    scale = torch.where(magnitude > 0, magnitude / INT8_MAX, torch.ones_like(magnitude))
    q = torch.round(weight.detach().float() / scale.unsqueeze(reduce_dim))
    return q.clamp_(-INT8_MAX, INT8_MAX).to(torch.int8), scale


def compact(
    weight: torch.Tensor, format: str, reduce_dim: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(compact weight, int8 scales or None) of ``weight`` in ``format``; see
    :func:`int8_symmetric`."""
    if format == "bf16":
        return weight.detach().to(torch.bfloat16), None
    return int8_symmetric(weight, reduce_dim)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor | None, reduce_dim: int, dtype: torch.dtype
) -> torch.Tensor:
    """``q`` widened to ``dtype``, times ``scale`` (broadcast along ``reduce_dim``) if given."""
    values = q.to(dtype)
    if scale is None:
        return values
    return values * scale.to(dtype).unsqueeze(reduce_dim)


class CompactBuffers(nn.Module):
    """A module whose compact buffers (named in :attr:`compact_buffer_names`) keep their dtype
    under ``.to(dtype)``, ``.float()``, ``.half()`` and the like: those move them to the new
    device only, so bfloat16 weights stay bfloat16 and int8 scales stay float32. The other
    floating buffers (biases, node weights) follow the module's dtype as usual."""

    compact_buffer_names: tuple[str, ...] = ()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True):
        kept = {
            name: self._buffers.pop(name)
            for name in self.compact_buffer_names
            if self._buffers.get(name) is not None
        }
        try:
            super()._apply(fn, recurse)
        finally:
            for name, tensor in kept.items():
                self._buffers[name] = _device_only(fn, tensor)
        return self


def _device_only(fn: Callable[[torch.Tensor], torch.Tensor], tensor: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to ``tensor`` seen as integers (which dtype changes skip), then seen back."""
    if not tensor.is_floating_point():
        return fn(tensor)
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]
    return fn(tensor.view(as_int)).view(tensor.dtype)
