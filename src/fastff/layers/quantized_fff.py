"""An FFF for hard inference with compact leaf weights: bfloat16, or int8 with float32 scales.

Made from a trained :class:`fastff.layers.FFF` by :meth:`QuantizedFFF.from_float` (users call
``fastff.quantize``). Same notation as ``fff.py``: B inputs, D = in_features, O = out_features,
l = leaf_width, d = depth, L = 2**d leaves, N = 2**d - 1 nodes.

What is compact and what is not:

- leaf weights ``w1s`` (L, D, l) and ``w2s`` (L, l, O): bfloat16, or int8 with one symmetric
  float32 scale per hidden unit (``w1s_scale`` (L, l)) and per output feature (``w2s_scale``
  (L, O)); see :mod:`fastff.layers.quantized_storage`.
- node weights and biases, leaf biases: the FFF's dtype, unchanged, so every input reaches
  exactly the leaf the original layer's hard path reaches (the routing is the float32 one).
- activations are not quantized: inputs are cast to the layer's dtype (float32 for a float32
  FFF), everything is summed in it, and outputs come back in the caller's dtype.

Inference only (the buffers are not trainable): ``forward`` is the hard path in either mode.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch

from fastff.layers.activations import ActivationSpec, make_activation
from fastff.layers.fff import FFF
from fastff.layers.kernels import cpu_compact, gather
from fastff.layers.kernels.plain import HARD_GATHER_BUDGET_BYTES
from fastff.layers.quantized_storage import (
    STORAGE_DTYPES,
    CompactBuffers,
    check_finite,
    check_format,
    compact,
    dequantize,
)
from fastff.layers.validation import check_choice, check_input, check_int

STRATEGIES = ("auto", "fused_cpu", "plain", "gather")
"""Hard strategies of a quantized FFF: ``fused_cpu`` (the C++ kernel reading the compact weights,
:mod:`fastff.layers.kernels.cpu_compact`), ``plain`` (torch ops: gather the reached leaves'
compact weights in memory-bounded chunks, widen them, two batched matmuls; any device and dtype),
``gather`` (the same without chunks and with no data-dependent shapes: what export traces);
``auto`` runs ``fused_cpu`` where it can, else ``plain``."""


class QuantizedFFF(CompactBuffers):
    """Hard-inference FFF whose leaf weights are stored as bfloat16 or int8 (weight-only).

    Build one with :meth:`from_float` (or ``fastff.quantize(model, format)`` for a whole model);
    the constructor makes an empty layer of the given sizes (zeros, unit scales) that
    ``load_state_dict`` fills, e.g. when a quantized checkpoint is loaded.

    Args:
        in_features, out_features, leaf_width, depth: as :class:`fastff.layers.FFF`.
        format: ``"bf16"`` or ``"int8"``.
        activation: the leaf activation (as FFF).
        device: where the buffers are created.
        dtype: dtype of the node weights and all biases (the layer computes in it; default
            torch's default dtype). The compact weights and the int8 scales (float32) keep theirs.

    Buffers (the state_dict): ``node_weights`` (N, D), ``node_biases`` (N, 1), ``w1s`` (L, D, l)
    compact, stored neuron-major ((L, l, D) in memory, as FFF), ``b1s`` (L, l), ``w2s`` (L, l, O)
    compact, ``b2s`` (L, O), and for int8 ``w1s_scale`` (L, l) and ``w2s_scale`` (L, O) float32.
    A dequantized weight is ``w1s.float() * w1s_scale[:, None, :]`` and
    ``w2s.float() * w2s_scale[:, None, :]`` (bfloat16: ``w.float()``).

    Shapes:
        input (..., D) -> output (..., O), in the input's dtype.
    """

    compact_buffer_names = ("w1s", "w2s", "w1s_scale", "w2s_scale")
    _hard_strategy: str = "auto"  # not in the state_dict; the class value is the default

    def __init__(
        self,
        in_features: int,
        out_features: int,
        leaf_width: int,
        depth: int,
        format: str,
        activation: ActivationSpec = "relu",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.leaf_width = check_int("leaf_width", leaf_width, 1)
        self.depth = check_int("depth", depth, 0)
        self.format = check_format(format, "format")
        self.activation = make_activation(activation)
        self.n_leaves = 2**self.depth
        self.n_nodes = self.n_leaves - 1
        n, d, l, o, leaves = self.n_nodes, in_features, leaf_width, out_features, self.n_leaves
        floats = {"device": device, "dtype": dtype}
        storage = {"device": device, "dtype": STORAGE_DTYPES[format]}
        self.register_buffer("node_weights", torch.zeros(n, d, **floats))
        self.register_buffer("node_biases", torch.zeros(n, 1, **floats))
        self.register_buffer("w1s", torch.zeros(leaves, l, d, **storage).transpose(1, 2))
        self.register_buffer("b1s", torch.zeros(leaves, l, **floats))
        self.register_buffer("w2s", torch.zeros(leaves, l, o, **storage))
        self.register_buffer("b2s", torch.zeros(leaves, o, **floats))
        scales = {"device": device, "dtype": torch.float32}
        int8 = format == "int8"
        self.register_buffer("w1s_scale", torch.ones(leaves, l, **scales) if int8 else None)
        self.register_buffer("w2s_scale", torch.ones(leaves, o, **scales) if int8 else None)
        self.eval()

    @classmethod
    def from_float(cls, layer: FFF, format: str) -> QuantizedFFF:
        """The quantized copy of ``layer`` (an FFF; it is not changed), on its device.

        Raises:
            ValueError: an unknown format, or non-finite leaf weights.
        """
        check_format(format)
        check_finite("the FFF's w1s", layer.w1s)
        check_finite("the FFF's w2s", layer.w2s)
        with torch.device("meta"):
            quantized = cls(
                layer.in_features,
                layer.out_features,
                layer.leaf_width,
                layer.depth,
                format,
                activation=copy.deepcopy(layer.activation),
                dtype=layer.w1s.dtype,
            )
        # w1s (L, D, l): one scale per hidden unit, over D; w2s (L, l, O): per output, over l
        w1, w1_scale = compact(layer.w1s, format, reduce_dim=1)
        w2, w2_scale = compact(layer.w2s, format, reduce_dim=1)
        buffers = {
            "node_weights": layer.node_weights.detach().clone(),
            "node_biases": layer.node_biases.detach().clone(),
            "w1s": w1.transpose(1, 2).contiguous().transpose(1, 2),
            "b1s": layer.b1s.detach().clone(),
            "w2s": w2.contiguous(),
            "b2s": layer.b2s.detach().clone(),
            "w1s_scale": w1_scale,
            "w2s_scale": w2_scale,
        }
        for name, value in buffers.items():
            if value is not None:
                quantized._buffers[name] = value
        return quantized

    def dequantize(self) -> FFF:
        """An FFF (eval mode) holding this layer's dequantized weights: what the compact
        weights stand for, in the layer's dtype (e.g. to check a kernel against)."""
        dtype = self.node_weights.dtype
        layer = FFF(
            self.in_features,
            self.out_features,
            self.leaf_width,
            self.depth,
            activation=copy.deepcopy(self.activation),
            device=self.node_weights.device,
            dtype=dtype,
        )
        with torch.no_grad():
            layer.node_weights.copy_(self.node_weights)
            layer.node_biases.copy_(self.node_biases)
            layer.w1s.copy_(dequantize(self.w1s, self.w1s_scale, 1, dtype))
            layer.b1s.copy_(self.b1s)
            layer.w2s.copy_(dequantize(self.w2s, self.w2s_scale, 1, dtype))
            layer.b2s.copy_(self.b2s)
        return layer.eval()

    # ----------------------------------------------------------------------------------- sizes
    @property
    def training_width(self) -> int:
        """2**d * l, as the FFF it was made from."""
        return self.n_leaves * self.leaf_width

    @property
    def inference_width(self) -> int:
        return self.leaf_width

    @property
    def training_size(self) -> int:
        return self.n_nodes + self.training_width

    @property
    def inference_size(self) -> int:
        return self.depth + self.leaf_width

    @property
    def aux_loss(self) -> torch.Tensor:
        """Always a zero scalar: a quantized layer does not train."""
        return torch.zeros((), device=self.b1s.device)

    # -------------------------------------------------------------------------------- forwards
    @property
    def eval_path(self) -> str:
        """Always ``"hard"`` (one leaf per input); assigning anything else is refused."""
        return "hard"

    @eval_path.setter
    def eval_path(self, path: str) -> None:
        if path != "hard":
            raise ValueError(f"eval_path of a quantized FFF must be 'hard', got {path!r}")

    @property
    def hard_strategy(self) -> str:
        """Strategy of ``forward`` and ``hard_forward(x)``, one of :data:`STRATEGIES`
        (default ``"auto"``); not part of the state_dict."""
        return self._hard_strategy

    @hard_strategy.setter
    def hard_strategy(self, name: str) -> None:
        self._hard_strategy = check_choice("hard_strategy", name, STRATEGIES)

    @contextlib.contextmanager
    def hard_path(self, strategy: str) -> Iterator[QuantizedFFF]:
        """Within the block :attr:`hard_strategy` is ``strategy`` (as :meth:`FFF.hard_path`;
        the eval path is always hard); the previous one comes back on exit."""
        saved = self.hard_strategy
        self.hard_strategy = strategy
        try:
            yield self
        finally:
            self.hard_strategy = saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., O): :meth:`hard_forward` (in training mode too)."""
        return self.hard_forward(x)

    def hard_forward(self, x: torch.Tensor, strategy: str | None = None) -> torch.Tensor:
        """Route each input to one leaf and evaluate it from the compact weights.

        Args:
            x: input (..., D), any floating dtype (computed in the layer's dtype).
            strategy: one of :data:`STRATEGIES`; None uses :attr:`hard_strategy`.

        Returns:
            (..., O) in ``x``'s dtype.

        Raises:
            ValueError: an unknown strategy, or ``fused_cpu`` forced where it cannot run.
        """
        check_input(x, self.in_features, "QuantizedFFF")
        name = check_choice("strategy", self.hard_strategy if strategy is None else strategy,
                            STRATEGIES)  # fmt: skip
        x2d = x.reshape(-1, self.in_features).to(self.node_weights.dtype)
        y = self._strategy(name, x2d)(x2d)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _strategy(self, name: str, x2d: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        if name in ("auto", "fused_cpu"):
            reason = cpu_compact.unsupported_reason(self, x2d)
            if reason is None:
                return lambda inputs: cpu_compact.hard_forward(self, inputs)
            if name == "fused_cpu":
                raise ValueError(f"hard strategy 'fused_cpu' cannot run this call: {reason}")
        return self._gather_forward if name == "gather" else self._plain_forward

    def leaf_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Index in [0, 2**d) of the leaf each input reaches, (..., D) -> (...)."""
        check_input(x, self.in_features, "QuantizedFFF")
        x2d = x.reshape(-1, self.in_features).to(self.node_weights.dtype)
        return self._route(x2d).view(x.shape[:-1])

    def _route(self, x2d: torch.Tensor) -> torch.Tensor:
        return gather.route(x2d, self.node_weights, self.node_biases, self.depth)

    def _plain_forward(self, x2d: torch.Tensor) -> torch.Tensor:
        """:meth:`_gather_forward` over batch chunks whose widened leaf weights stay below
        ``HARD_GATHER_BUDGET_BYTES``, (B, D) -> (B, O)."""
        per_input = self.leaf_width * (self.in_features + self.out_features)
        chunk = max(1, HARD_GATHER_BUDGET_BYTES // (per_input * x2d.element_size()))
        if x2d.shape[0] <= chunk:
            return self._gather_forward(x2d)
        return torch.cat([self._gather_forward(part) for part in x2d.split(chunk)])

    def _gather_forward(self, x2d: torch.Tensor) -> torch.Tensor:
        """Fixed-shape hard forward (B, D) -> (B, O): one gather per level, then the reached
        leaves' compact weights gathered, widened (times their scales) and applied."""
        dtype = x2d.dtype
        leaf = self._route(x2d)  # (B,)
        w1 = self.w1s.index_select(0, leaf)  # (B, D, l) compact
        s1 = None if self.w1s_scale is None else self.w1s_scale.index_select(0, leaf)  # (B, l)
        w1 = dequantize(w1, s1, 1, dtype)
        hidden = torch.bmm(x2d.unsqueeze(1), w1).squeeze(1) + self.b1s.index_select(0, leaf)
        hidden = self.activation(hidden)  # (B, l)
        w2 = self.w2s.index_select(0, leaf)  # (B, l, O) compact
        s2 = None if self.w2s_scale is None else self.w2s_scale.index_select(0, leaf)  # (B, O)
        w2 = dequantize(w2, s2, 1, dtype)
        return torch.bmm(hidden.unsqueeze(1), w2).squeeze(1) + self.b2s.index_select(0, leaf)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"leaf_width={self.leaf_width}, depth={self.depth}, format={self.format!r}"
        )
