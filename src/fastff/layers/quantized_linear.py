"""A weight-only quantized ``nn.Linear``: the dense FF's counterpart of :class:`QuantizedFFF`.

``fastff.quantize`` puts one in place of each of an FF's two linear layers, so FF and FFF are
compared with the same treatment: compact weights, activations, biases and sums in the layer's
dtype (float32).

- ``int8``: weights (O, I) int8 with one symmetric float32 scale per output feature. On the CPU
  the product is ``torch.ops.aten._weight_int8pack_mm`` (PyTorch's int8 weight-only matmul, the
  one torchao's int8 weight-only CPU path runs: float32 activations, int8 weights, scales applied
  to the float32 sums). Elsewhere, and while ``torch.export`` traces (the ONNX file then holds
  the int8 initializer, a Cast and a Mul), the weights are widened and scaled first.
- ``bf16``: weights (O, I) bfloat16, widened to the input's dtype for each call (PyTorch has no
  float32 x bfloat16 matmul; one that rounded the activations to bfloat16 would no longer be
  weight-only). A dense layer at a large batch is bound by its multiply-adds, not by reading its
  weights, so compact weights are not expected to make it faster.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fastff.layers.quantized_storage import (
    STORAGE_DTYPES,
    CompactBuffers,
    check_finite,
    check_format,
    compact,
    dequantize,
)

INT8_MM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""Input dtypes ``_weight_int8pack_mm`` takes on the CPU."""


class QuantizedLinear(CompactBuffers):
    """``y = x @ dequantize(weight).T + bias`` with the weight stored as bfloat16 or int8.

    Args:
        in_features, out_features: as ``nn.Linear``.
        format: ``"bf16"`` or ``"int8"``.
        bias: whether there is a bias.
        device, dtype: where and in what the bias is created (the layer computes in this dtype).

    Buffers: ``weight`` (O, I) compact, ``weight_scale`` (O,) float32 (int8 only), ``bias`` (O,).

    Shapes:
        input (..., I) -> output (..., O), in the input's dtype.
    """

    compact_buffer_names = ("weight", "weight_scale")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        format: str,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.format = check_format(format, "format")
        storage = {"device": device, "dtype": STORAGE_DTYPES[format]}
        self.register_buffer("weight", torch.zeros(out_features, in_features, **storage))
        scale = torch.ones(out_features, device=device) if format == "int8" else None
        self.register_buffer("weight_scale", scale)
        floats = {"device": device, "dtype": dtype}
        self.register_buffer("bias", torch.zeros(out_features, **floats) if bias else None)
        self._dtype = torch.empty(0, dtype=dtype).dtype

    @classmethod
    def from_float(cls, linear: nn.Linear, format: str) -> QuantizedLinear:
        """The quantized copy of ``linear`` (unchanged), on its device; one int8 scale per
        output feature. ValueError for an unknown format or non-finite weights."""
        check_format(format)
        check_finite("a linear layer's weight", linear.weight)
        with torch.device("meta"):
            quantized = cls(
                linear.in_features,
                linear.out_features,
                format,
                bias=linear.bias is not None,
                dtype=linear.weight.dtype,
            )
        weight, scale = compact(linear.weight, format, reduce_dim=1)
        quantized._buffers["weight"] = weight.contiguous()
        quantized._buffers["weight_scale"] = scale
        quantized._buffers["bias"] = None if linear.bias is None else linear.bias.detach().clone()
        return quantized

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the bias (the float dtype the layer was made from)."""
        return self.bias.dtype if self.bias is not None else self._dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., I) -> (..., O) in ``x``'s dtype."""
        dtype = self.compute_dtype
        inputs = x.to(dtype)
        if (
            self.format == "int8"
            and inputs.device.type == "cpu"
            and dtype in INT8_MM_DTYPES
            and not torch.compiler.is_compiling()
            and not (torch.is_grad_enabled() and inputs.requires_grad)
        ):
            flat = inputs.reshape(-1, self.in_features).contiguous()
            y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.weight_scale.to(dtype))
            if self.bias is not None:
                y = y + self.bias
            y = y.reshape(*x.shape[:-1], self.out_features)
        else:
            weight = dequantize(self.weight, self.weight_scale, 1, dtype)
            y = F.linear(inputs, weight, self.bias)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"format={self.format!r}, bias={self.bias is not None}"
        )
