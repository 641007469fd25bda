"""An MoE for inference with compact expert weights: bfloat16, or int8 with float32 scales.

The MoE counterpart of :class:`fastff.layers.quantized_fff.QuantizedFFF`, made by
:meth:`QuantizedMoE.from_float` (users call ``fastff.quantize``). Notation as ``moe.py``: N
inputs, D = in_features, O = out_features, E experts of width W, top-k.

- expert weights ``w1s`` (E, D, W) and ``w2s`` (E, W, O): bfloat16, or int8 with one symmetric
  float32 scale per hidden unit (``w1s_scale`` (E, W)) and per output feature (``w2s_scale``
  (E, O)); see :mod:`fastff.layers.quantized_storage`.
- the gate ``w_gate`` (D, E) and all biases: the MoE's dtype, unchanged, so every input selects
  exactly the experts (and gates) the original MoE selects in eval mode (top-k of ``x @ w_gate``
  in float32, no noise).
- activations are not quantized; sums are in the layer's dtype; outputs in the caller's dtype.

The forward is the eval-mode MoE with fixed shapes (as ``MoE.gathered_forward``): the k selected
experts' compact weights gathered per input, widened, two batched matmuls, in batch chunks that
keep the widened weights below ``GATHER_BUDGET_BYTES`` (one chunk while ``torch.export``
traces). Inference only (in either mode); no balancing losses.
"""

from __future__ import annotations

import copy

import torch

from fastff.layers.activations import ActivationSpec, make_activation
from fastff.layers.moe import MoE
from fastff.layers.moe_gating import keep_top_k
from fastff.layers.quantized_storage import (
    STORAGE_DTYPES,
    CompactBuffers,
    check_finite,
    check_format,
    compact,
    dequantize,
)
from fastff.layers.validation import check_input, check_int

GATHER_BUDGET_BYTES = 64 * 2**20
"""Upper bound on the widened expert weights gathered at once."""


class QuantizedMoE(CompactBuffers):
    """Eval-mode MoE whose expert weights are stored as bfloat16 or int8 (weight-only).

    Args:
        in_features, out_features, num_experts, expert_width, k, activation: as
            :class:`fastff.layers.MoE`.
        format: ``"bf16"`` or ``"int8"``.
        device, dtype: where and in what the gate and biases are created (the layer computes
            in this dtype; the compact weights and the int8 scales keep theirs).

    Buffers (the state_dict): ``w_gate`` (D, E), ``w1s`` (E, D, W) compact, ``b1s`` (E, W),
    ``w2s`` (E, W, O) compact, ``b2s`` (E, O), and for int8 ``w1s_scale`` (E, W) and ``w2s_scale``
    (E, O) float32.

    Shapes:
        input (..., D) -> output (..., O), in the input's dtype.
    """

    compact_buffer_names = ("w1s", "w2s", "w1s_scale", "w2s_scale")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_experts: int,
        expert_width: int,
        k: int,
        format: str,
        activation: ActivationSpec = "relu",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.num_experts = check_int("num_experts", num_experts, 1)
        self.expert_width = check_int("expert_width", expert_width, 1)
        check_int("k", k, 1)
        if k > num_experts:
            raise ValueError(f"k must be an integer in [1, num_experts={num_experts}], got {k!r}")
        self.k = k
        self.format = check_format(format, "format")
        self.activation = make_activation(activation)
        d, e, w, o = in_features, num_experts, expert_width, out_features
        floats = {"device": device, "dtype": dtype}
        storage = {"device": device, "dtype": STORAGE_DTYPES[format]}
        self.register_buffer("w_gate", torch.zeros(d, e, **floats))
        self.register_buffer("w1s", torch.zeros(e, d, w, **storage))
        self.register_buffer("b1s", torch.zeros(e, w, **floats))
        self.register_buffer("w2s", torch.zeros(e, w, o, **storage))
        self.register_buffer("b2s", torch.zeros(e, o, **floats))
        scales = {"device": device, "dtype": torch.float32}
        int8 = format == "int8"
        self.register_buffer("w1s_scale", torch.ones(e, w, **scales) if int8 else None)
        self.register_buffer("w2s_scale", torch.ones(e, o, **scales) if int8 else None)
        self.eval()

    @classmethod
    def from_float(cls, moe: MoE, format: str) -> QuantizedMoE:
        """The quantized copy of ``moe`` (unchanged), on its device. ValueError for an unknown
        format or non-finite expert weights."""
        check_format(format)
        check_finite("the MoE's w1s", moe.w1s)
        check_finite("the MoE's w2s", moe.w2s)
        with torch.device("meta"):
            quantized = cls(
                moe.in_features,
                moe.out_features,
                moe.num_experts,
                moe.expert_width,
                moe.k,
                format,
                activation=copy.deepcopy(moe.activation),
                dtype=moe.w1s.dtype,
            )
        w1, w1_scale = compact(moe.w1s, format, reduce_dim=1)  # per hidden unit, over D
        w2, w2_scale = compact(moe.w2s, format, reduce_dim=1)  # per output feature, over W
        buffers = {
            "w_gate": moe.w_gate.detach().clone(),
            "w1s": w1.contiguous(),
            "b1s": moe.b1s.detach().clone(),
            "w2s": w2.contiguous(),
            "b2s": moe.b2s.detach().clone(),
            "w1s_scale": w1_scale,
            "w2s_scale": w2_scale,
        }
        for name, value in buffers.items():
            if value is not None:
                quantized._buffers[name] = value
        return quantized

    # ----------------------------------------------------------------------------------- sizes
    @property
    def training_width(self) -> int:
        return self.num_experts * self.expert_width

    @property
    def inference_width(self) -> int:
        return self.k * self.expert_width

    @property
    def training_size(self) -> int:
        return self.training_width + self.num_experts

    @property
    def inference_size(self) -> int:
        return self.inference_width + self.num_experts

    @property
    def aux_loss(self) -> torch.Tensor:
        """Always a zero scalar: a quantized layer does not train."""
        return torch.zeros((), device=self.b1s.device)

    # --------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., O) in ``x``'s dtype: top-k gates of ``x @ w_gate`` (float32, no
        noise), the k experts per input from their compact weights, weighted by the gates."""
        check_input(x, self.in_features, "QuantizedMoE")
        x2d = x.reshape(-1, self.in_features).to(self.w_gate.dtype)
        row = self.in_features * self.expert_width + self.expert_width * self.out_features
        chunk = max(1, GATHER_BUDGET_BYTES // (self.k * row * x2d.element_size()))
        if torch.compiler.is_compiling() or x2d.shape[0] <= chunk:
            y = self._gathered(x2d)
        else:
            y = torch.cat([self._gathered(part) for part in x2d.split(chunk)])
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _gathered(self, x2d: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, O): gates, then each pair's expert weights gathered and widened."""
        dtype = x2d.dtype
        top = keep_top_k((x2d @ self.w_gate).float(), self.k)
        experts = top.indices.reshape(-1)  # (N * k,) pair p = n * k + j
        inputs = x2d.unsqueeze(1).expand(-1, self.k, -1).reshape(-1, 1, self.in_features)
        s1 = None if self.w1s_scale is None else self.w1s_scale.index_select(0, experts)
        w1 = dequantize(self.w1s.index_select(0, experts), s1, 1, dtype)  # (N * k, D, W)
        b1 = self.b1s.index_select(0, experts).unsqueeze(1)
        hidden = self.activation(torch.baddbmm(b1, inputs, w1))  # (N * k, 1, W)
        s2 = None if self.w2s_scale is None else self.w2s_scale.index_select(0, experts)
        w2 = dequantize(self.w2s.index_select(0, experts), s2, 1, dtype)  # (N * k, W, O)
        b2 = self.b2s.index_select(0, experts).unsqueeze(1)
        pairs = torch.baddbmm(b2, hidden, w2).view(-1, self.k, self.out_features)
        return (pairs * top.gates.to(dtype).unsqueeze(-1)).sum(1)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_experts={self.num_experts}, expert_width={self.expert_width}, k={self.k}, "
            f"format={self.format!r}"
        )
