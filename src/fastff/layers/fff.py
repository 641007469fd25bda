"""Fast feedforward layer (FFF): a balanced binary tree of sigmoid nodes over small FF leaves.

Notation used in shapes: B inputs (all leading dimensions flattened), D = in_features,
O = out_features, l = leaf_width, d = depth, L = 2**d leaves, N = 2**d - 1 nodes.
Nodes are stored in heap order: level m starts at index 2**m - 1 and node k has the children
2k + 1 (left) and 2k + 2 (right). Leaf j is the tree position N + j.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from fastff.layers import fff_soft_registry, kernels
from fastff.layers.activations import ActivationSpec, make_activation
from fastff.layers.fff_soft import (
    leaf_mixture,
    node_entropy_from_logits,
    region_leak_logits,
    region_leak_swaps,
    routing_dtype,
)
from fastff.layers.fff_soft_fused import soft_fff
from fastff.layers.tracing import fx_call_module, refuse_script
from fastff.layers.validation import (
    check_bool,
    check_choice,
    check_floating_dtype,
    check_input,
    check_int,
    check_probability,
)

HARDENING_REDUCTIONS = ("mean", "sum")
EVAL_PATHS = ("hard", "soft")
SOFT_IMPLEMENTATIONS = fff_soft_registry.implementation_names()
"""What ``FFF.soft_implementation`` accepts (see :mod:`fastff.layers.fff_soft_registry`)."""
PARAMETER_NAMES = ("node_weights", "node_biases", "w1s", "b1s", "w2s", "b2s")
REFERENCE_IGNORED_KEYS = ("node_usage", "leaf_usage")


class FFF(nn.Module):
    """Fast feedforward layer (Belcak & Wattenhofer, 2023), interoperable with ``fastfeedforward``.

    Training (``train()``, :meth:`soft_forward`): every node k gives c_k = sigmoid(w_k . x + b_k),
    the probability of going right, and the output is the mixture of all 2**depth leaves weighted
    by the product of the decisions on each leaf's path. Each leaf is an FF network
    ``act(x @ w1s[j] + b1s[j]) @ w2s[j] + b2s[j]``. Inference (``eval()``, :meth:`hard_forward`):
    at each level go right where the node logit is >= 0 (a logit of exactly 0 goes right), then
    evaluate only the leaf reached.

    Argument order follows ``nn.Linear``: ``FFF(in_features, out_features, leaf_width, depth)``.
    The reference package's order is ``fastfeedforward.FFF(input_width, leaf_width, output_width,
    depth)``, so pass keyword arguments when porting code. Parameter names, shapes and
    initialisation equal the reference's (with the same seed both draw the same weights), so
    :meth:`from_reference` and :meth:`load_reference_state_dict` load its weights directly.
    Unlike the reference's ``eval_forward``, the hard path keeps the leaf output bias ``b2s``
    and agrees with the reference's ``training_forward(use_hard_decisions=True)``.

    Args:
        in_features: D, size of the last input dimension.
        out_features: O, size of the last output dimension.
        leaf_width: l >= 1, hidden width of every leaf.
        depth: d >= 0; the tree has 2**d leaves and 2**d - 1 nodes (depth 0 is one plain FF leaf).
        activation: leaf activation, a name from ``fastff.layers.activations.ACTIVATIONS``, a
            module instance or a module class such as ``nn.GELU`` (see ``make_activation``).
        dropout: probability of dropping leaf hidden activations, training only.
        region_leak: probability of a randomized child transposition: independently per input
            and per node, the soft decision <1 - c, c> is swapped to <c, 1 - c>. Training only.
        hardening: weight h of the entropy term in :attr:`aux_loss` (finite, >= 0).
        hardening_reduction: ``"mean"`` (default, as the official example) averages the per-input,
            per-node entropies over inputs and nodes; ``"sum"`` (the paper's formula) sums them.
        frozen_tree: the paper's h = infinity: node weights and biases are not trainable. The
            entropy is still computed for :attr:`node_entropy`; with ``hardening > 0`` the
            entropy term then has no trainable parameter in this layer, but its gradient still
            reaches layers before it through the input.
        device: where the parameters are created (as ``nn.Linear``; ``"meta"`` allocates
            nothing, for reading sizes).
        dtype: dtype the parameters are created in (default: torch's default dtype). The weights
            are drawn in that dtype on that device, so only CPU float32 reproduces the
            reference's draws for a given seed.

    Shapes:
        input (..., D) -> output (..., O); every leading dimension is a batch dimension.
    """

    # Settings and records that are not in the state_dict; the class values are the defaults
    # (also for layers pickled before an attribute existed).
    _eval_path: str = "hard"
    _hard_strategy: str = "auto"
    _soft_implementation: str = "auto"
    _packed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    _aux_loss: torch.Tensor | None = None
    _node_entropy: torch.Tensor | None = None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        leaf_width: int,
        depth: int,
        activation: ActivationSpec = "relu",
        dropout: float = 0.0,
        region_leak: float = 0.0,
        hardening: float = 0.0,
        hardening_reduction: str = "mean",
        frozen_tree: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.leaf_width = check_int("leaf_width", leaf_width, 1)
        self.depth = check_int("depth", depth, 0)
        self.dropout = check_probability("dropout", dropout)
        check_floating_dtype("dtype", dtype)
        self.region_leak = check_probability("region_leak", region_leak)
        self.hardening = _check_hardening(hardening)
        self.hardening_reduction = check_choice(
            "hardening_reduction", hardening_reduction, HARDENING_REDUCTIONS
        )
        self.frozen_tree = check_bool("frozen_tree", frozen_tree)
        self.activation = make_activation(activation)
        self.leaf_dropout = nn.Dropout(self.dropout)

        self.n_leaves = 2**self.depth
        self.n_nodes = self.n_leaves - 1
        # Same creation order, dtype and bounds as the reference, so equal seeds give equal weights.
        in_bound = 1.0 / math.sqrt(self.in_features)
        leaf_bound = 1.0 / math.sqrt(self.leaf_width)
        n, d, l, o = self.n_nodes, self.in_features, self.leaf_width, self.out_features
        factory = {"device": device, "dtype": dtype}
        self.node_weights = _uniform_parameter((n, d), in_bound, **factory)
        self.node_biases = _uniform_parameter((n, 1), in_bound, **factory)
        # Shape (L, D, l) as the reference, stored neuron-major ((L, l, D) in memory): the soft
        # path then multiplies by a (L*l, D) view with no copy, and the fused kernel reads each
        # leaf neuron's weights contiguously.
        self.w1s = _uniform_parameter((self.n_leaves, d, l), in_bound, True, **factory)
        self.b1s = _uniform_parameter((self.n_leaves, l), in_bound, **factory)
        self.w2s = _uniform_parameter((self.n_leaves, l, o), leaf_bound, **factory)
        self.b2s = _uniform_parameter((self.n_leaves, o), leaf_bound, **factory)
        if frozen_tree:
            self.node_weights.requires_grad_(False)
            self.node_biases.requires_grad_(False)
        self._pack_parameters()

    # ----------------------------------------------------------------------------------- sizes
    @staticmethod
    def depth_for(width: int, leaf_width: int) -> int:
        """Depth d with ``width == leaf_width * 2**d``; ValueError if no integer d >= 0 exists."""
        check_int("width", width, 1)
        check_int("leaf_width", leaf_width, 1)
        ratio, remainder = divmod(width, leaf_width)
        if remainder or ratio & (ratio - 1):
            raise ValueError(
                "width must be leaf_width * 2**depth for an integer depth >= 0, "
                f"got width={width}, leaf_width={leaf_width}"
            )
        return ratio.bit_length() - 1

    @property
    def training_width(self) -> int:
        """Neurons evaluated per input in training: all leaves, 2**d * l."""
        return self.n_leaves * self.leaf_width

    @property
    def inference_width(self) -> int:
        """Leaf neurons evaluated per input at inference: l."""
        return self.leaf_width

    @property
    def training_size(self) -> int:
        """All nodes and leaf neurons: (2**d - 1) + 2**d * l."""
        return self.n_nodes + self.training_width

    @property
    def inference_size(self) -> int:
        """Neurons on one root-to-leaf path: d + l."""
        return self.depth + self.leaf_width

    # ------------------------------------------------------------------ first-layer storage
    def _pack_parameters(self) -> None:
        """Store the parameters as views of three tensors: ``first`` (H + P, D) holds the H leaf
        neurons (w1s's neuron-major (L*l, D) view), the N node rows and zero rows up to H + P
        (P = N rounded up to a multiple of 16); ``first_bias`` (H + P) holds b1s, the node
        biases and zeros the same way; ``second`` (H + L, O) holds w2s as (H, O) and then b2s.
        The fused soft step on the CPU then computes hidden units and node logits with one matrix
        product, their weight gradients with another, and the leaf outputs with their biases
        with a third, without concatenating anything per step. Values, shapes and strides are
        unchanged; the parameters stay the same objects."""
        if self.depth == 0:
            self._packed = None
            return
        nodes, hidden, leaves = self.n_nodes, self.training_width, self.n_leaves
        padded = -(-nodes // 16) * 16
        factory = {"device": self.w1s.device, "dtype": self.w1s.dtype}
        first = torch.zeros(hidden + padded, self.in_features, **factory)
        first_bias = torch.zeros(hidden + padded, **factory)
        second = torch.empty(hidden + leaves, self.out_features, **factory)
        with torch.no_grad():
            first[:hidden].copy_(self.w1s.transpose(1, 2).reshape(hidden, self.in_features))
            first[hidden : hidden + nodes].copy_(self.node_weights)
            first_bias[:hidden].copy_(self.b1s.reshape(-1))
            first_bias[hidden : hidden + nodes].copy_(self.node_biases.reshape(-1))
            second[:hidden].copy_(self.w2s.reshape(hidden, self.out_features))
            second[hidden:].copy_(self.b2s)
        neurons = first[:hidden].view(leaves, self.leaf_width, self.in_features)
        self.w1s.data = neurons.transpose(1, 2)
        self.node_weights.data = first[hidden : hidden + nodes]
        self.b1s.data = first_bias[:hidden].view(leaves, self.leaf_width)
        self.node_biases.data = first_bias[hidden : hidden + nodes].view(nodes, 1)
        self.w2s.data = second[:hidden].view(leaves, self.leaf_width, self.out_features)
        self.b2s.data = second[hidden:]
        self._packed = (first, first_bias, second)

    @property
    def packed_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(first (H + P, D), first_bias (H + P,), second (H + L, O)), the tensors the
        parameters are views of (see :meth:`_pack_parameters`), or None where they no longer
        are (e.g. after ``load_state_dict(assign=True)`` or a parametrization; also while
        torch.compile traces, which runs the torch-op path)."""
        packed = self._packed
        if packed is None or torch.compiler.is_compiling():
            return None
        first, first_bias, second = packed
        hidden, features, out = self.training_width, self.in_features, self.out_features
        views = (
            (self.w1s, first, 0, (self.leaf_width * features, 1, features)),
            (self.node_weights, first, hidden * features, (features, 1)),
            (self.b1s, first_bias, 0, (self.leaf_width, 1)),
            (self.node_biases, first_bias, hidden, (1, 1)),
            (self.w2s, second, 0, (self.leaf_width * out, out, 1)),
            (self.b2s, second, hidden * out, (out, 1)),
        )
        for parameter, base, offset, strides in views:
            if (
                parameter.dtype != base.dtype
                or parameter.stride() != strides
                or parameter.data_ptr() != base.data_ptr() + offset * base.element_size()
            ):
                return None
        return packed

    def __setstate__(self, state: dict[str, Any]) -> None:
        # unpickling and copy.deepcopy rebuild each parameter on its own storage
        super().__setstate__(state)
        if self.packed_parameters is None:
            self._pack_parameters()

    def _apply(self, fn: Any, recurse: bool = True) -> FFF:
        # .to(), .double(), .cuda() ... give the parameters new storage: pack them again
        module = super()._apply(fn, recurse)
        if self.packed_parameters is None:
            self._pack_parameters()
        return module

    # ----------------------------------------------------------------------------- regulariser
    @property
    def aux_loss(self) -> torch.Tensor:
        """hardening * entropy term of the last soft forward (differentiable, scalar).

        A zero scalar after a hard forward, before any forward, and at depth 0 (no nodes).
        """
        if self._aux_loss is None:
            return torch.zeros((), device=self.w1s.device)
        return self._aux_loss

    @property
    def node_entropy(self) -> torch.Tensor | None:
        """Detached batch-mean decision entropy per node, shape (2**d - 1,), of the last soft
        forward (natural log, at most ln 2); None before the first soft forward."""
        return self._node_entropy

    def __getstate__(self) -> dict[str, Any]:
        # The last aux_loss is part of an autograd graph, which cannot be copied or pickled.
        state = super().__getstate__()
        return {**state, "_aux_loss": None}

    def __prepare_scriptable__(self) -> FFF:
        refuse_script(self)  # torch.jit.script: one line naming fastff.export
        return self

    # -------------------------------------------------------------------------------- forwards
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., O): :meth:`soft_forward` when training, else :meth:`hard_forward`
        (or the soft mixture where :attr:`eval_path` is ``"soft"``). Under torch.fx the layer
        is one ``call_module`` node (see :mod:`fastff.layers.tracing`)."""
        if isinstance(x, torch.fx.Proxy):
            return fx_call_module(self, x)
        if self.training or self.eval_path == "soft":
            return self.soft_forward(x)
        return self.hard_forward(x)

    @property
    def eval_path(self) -> str:
        """What the eval-mode forward computes: ``"hard"`` (default: one leaf per input) or
        ``"soft"`` (the mixture of all leaves without dropout or region leak, e.g. to measure how
        much accuracy hardening keeps)."""
        return self._eval_path

    @eval_path.setter
    def eval_path(self, path: str) -> None:
        self._eval_path = check_choice("eval_path", path, EVAL_PATHS)

    def soft_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Soft mixture of all leaves, (..., D) -> (..., O); records aux_loss and node_entropy.

        Region leak and dropout apply only in training mode. Computed by
        :attr:`soft_implementation`.

        Raises:
            ValueError: a forced :attr:`soft_implementation` that cannot compute this call.
        """
        check_input(x, self.in_features, "FFF")
        x2d = x.reshape(-1, self.in_features)
        implementation = fff_soft_registry.resolve(self, x2d, self.soft_implementation)
        if not torch.jit.is_tracing() and not x2d.shape[0]:  # traced: no shape-dependent branch
            return self._empty_soft_forward(x2d).view(*x.shape[:-1], self.out_features)
        y = implementation.forward(self, x2d)
        return y.view(*x.shape[:-1], self.out_features)

    def _empty_soft_forward(self, x2d: torch.Tensor) -> torch.Tensor:
        """The soft forward of no inputs, (0, D) -> (0, O): node_entropy zeros (a mean over no
        inputs would be NaN) and aux_loss a zero scalar."""
        y = self._composite_soft_forward(x2d)
        self._node_entropy = x2d.new_zeros(self.n_nodes, dtype=routing_dtype(x2d.dtype))
        self._aux_loss = None
        return y

    @property
    def soft_implementation(self) -> str:
        """How the soft forward is computed (see :mod:`fastff.layers.fff_soft_registry`):
        ``"auto"`` (default; ``"fused"`` is an alias and reads back as ``"auto"``) picks per
        call, ``"fused_cpu"``, ``"fused_torch"`` or ``"composite"`` force one (a forced one that
        cannot compute a call raises ValueError with the reason). All give the same outputs
        and gradients. Not part of the state_dict."""
        return self._soft_implementation

    @soft_implementation.setter
    def soft_implementation(self, name: str) -> None:
        self._soft_implementation = fff_soft_registry.check_implementation(name)

    def _fused_soft_forward(self, x2d: torch.Tensor, routing_kernel: bool) -> torch.Tensor:
        """The soft forward through :func:`soft_fff`, (B, D) -> (B, O); depth >= 1.
        ``routing_kernel``: use the C++ kernels (the caller checked that they can run)."""
        node_weights, node_biases = self._node_parameters()
        swap = None
        if self.training and self.region_leak > 0.0:
            swap = region_leak_swaps(
                x2d.shape[0], self.n_nodes, self.region_leak, routing_dtype(x2d.dtype), x2d.device
            )
        # the hardening term: hardening * mean (or sum * B) of the mean node entropies
        aux_scale = self.hardening * (
            1.0 / self.n_nodes if self.hardening_reduction == "mean" else len(x2d)
        )
        y, aux, entropy = soft_fff(
            x2d, node_weights, node_biases, self.w1s, self.b1s, self.w2s, self.b2s,
            self.activation, swap, routing_kernel, aux_scale,
            self._packed,  # the op checks that the parameters still view these
        )  # fmt: skip
        self._node_entropy = entropy
        self._aux_loss = aux
        return y

    def _composite_soft_forward(self, x2d: torch.Tensor) -> torch.Tensor:
        """The soft forward as torch ops under standard autograd, (B, D) -> (B, O)."""
        n_inputs, n_leaves = x2d.shape[0], self.n_leaves
        mixture = self._soft_routing(x2d).to(x2d.dtype)  # (B, L)

        # Row j*l + k is leaf j's hidden unit k: one product for all leaves. With w1s stored
        # neuron-major (see __init__) this is a view; otherwise reshape copies.
        first = self.w1s.transpose(1, 2).reshape(self.training_width, self.in_features)
        hidden = nn.functional.linear(x2d, first, self.b1s.reshape(-1))  # (B, L*l)
        hidden = hidden.view(n_inputs, n_leaves, self.leaf_width)
        hidden = self.leaf_dropout(self.activation(hidden))  # (B, L, l)
        weighted = (hidden * mixture.unsqueeze(-1)).view(n_inputs, self.training_width)
        return torch.addmm(mixture @ self.b2s, weighted, self.w2s.reshape(-1, self.out_features))

    def hard_forward(self, x: torch.Tensor, strategy: str | None = None) -> torch.Tensor:
        """Hard routing to one leaf per input, (..., D) -> (..., O); no dropout or region leak.

        Args:
            x: input (..., D).
            strategy: how to compute it: ``"auto"``, ``"plain"``, ``"grouped"`` or
                ``"fused_cpu"`` (see :mod:`fastff.layers.kernels`); None (default) uses
                :attr:`hard_strategy`, as the eval-mode forward does.

        Raises:
            ValueError: an unknown strategy, or a forced one that cannot compute this call.
        """
        check_input(x, self.in_features, "FFF")
        self._aux_loss = None
        x2d = x.reshape(-1, self.in_features)
        y = kernels.hard_forward_2d(self, x2d, self.hard_strategy if strategy is None else strategy)
        return y.reshape(*x.shape[:-1], self.out_features)

    @property
    def hard_strategy(self) -> str:
        """Strategy of the eval-mode forward and of ``hard_forward(x)``, default ``"auto"``.

        Assign ``"plain"``, ``"grouped"`` or ``"fused_cpu"`` to force one (ValueError if
        unknown). Not part of the state_dict.
        """
        return self._hard_strategy

    @hard_strategy.setter
    def hard_strategy(self, name: str) -> None:
        self._hard_strategy = kernels.check_strategy(name)

    @contextlib.contextmanager
    def hard_path(self, strategy: str) -> Iterator[FFF]:
        """Within the block the eval-mode forward is the hard path on ``strategy``
        (:attr:`eval_path` ``"hard"``, :attr:`hard_strategy` ``strategy``); the previous
        settings come back on exit. ``fastff.export`` traces with ``"gather"``."""
        saved = self.eval_path, self.hard_strategy
        self.hard_strategy = strategy
        self.eval_path = "hard"
        try:
            yield self
        finally:
            self.eval_path, self.hard_strategy = saved

    def leaf_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Index in [0, 2**d) of the leaf each input reaches by hard routing, (..., D) -> (...)."""
        check_input(x, self.in_features, "FFF")
        return self._route(x.reshape(-1, self.in_features)).view(x.shape[:-1])

    def _route(self, x2d: torch.Tensor) -> torch.Tensor:
        """Leaf reached by each input, (B, D) -> (B,) long; right where the node logit is >= 0."""
        node_weights, node_biases = self._node_parameters()
        if torch.is_autocast_enabled(x2d.device.type):
            # node logits in float32 (at least): autocast would run the einsum in its lower
            # precision, and a rounded logit near 0 can flip a decision
            dtype = routing_dtype(torch.promote_types(x2d.dtype, node_weights.dtype))
            x2d, node_weights = x2d.to(dtype), node_weights.to(dtype)
            node_biases = node_biases.to(dtype)
            with torch.autocast(x2d.device.type, enabled=False):
                return self._walk(x2d, node_weights, node_biases)
        return self._walk(x2d, node_weights, node_biases)

    def _walk(
        self, x2d: torch.Tensor, node_weights: torch.Tensor, node_biases: torch.Tensor
    ) -> torch.Tensor:
        """Leaf reached by each input (B, D) -> (B,) long, given node_weights (N, D) and
        node_biases (N, 1) in x2d's dtype."""
        node = torch.zeros(x2d.shape[0], dtype=torch.long, device=x2d.device)  # (B,)
        for _ in range(self.depth):
            logits = torch.einsum("bd,bd->b", x2d, node_weights[node]) + node_biases[node, 0]
            node = 2 * node + 1 + (logits >= 0).long()
        return node - self.n_nodes

    def _node_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(node_weights (N, D), node_biases (N, 1)), detached when the tree is frozen."""
        if self.frozen_tree:
            return self.node_weights.detach(), self.node_biases.detach()
        return self.node_weights, self.node_biases

    def _soft_routing(self, x2d: torch.Tensor) -> torch.Tensor:
        """Leaf mixture weights (B, L) in the routing dtype; records aux_loss and node_entropy.

        Region leak applies only in training mode.
        """
        if self.depth == 0:
            self._record_entropy(None)
            return x2d.new_ones((x2d.shape[0], 1), dtype=routing_dtype(x2d.dtype))
        node_weights, node_biases = self._node_parameters()
        logits = nn.functional.linear(x2d, node_weights, node_biases.view(-1))  # (B, N)
        logits = logits.to(routing_dtype(logits.dtype))
        self._record_entropy(logits)
        if self.training and self.region_leak > 0.0:
            logits = region_leak_logits(logits, self.region_leak)
        return leaf_mixture(logits, self.depth)

    def _record_entropy(self, logits: torch.Tensor | None) -> None:
        """Store node_entropy and aux_loss from the node logits (B, N); None at depth 0."""
        if logits is None:
            self._node_entropy = torch.zeros(0, device=self.w1s.device)
            self._aux_loss = None
            return
        entropies = node_entropy_from_logits(logits)  # (B, N)
        self._node_entropy = entropies.detach().mean(dim=0)
        term = entropies.mean() if self.hardening_reduction == "mean" else entropies.sum()
        self._aux_loss = self.hardening * term

    # ------------------------------------------------------------------- reference interop
    @classmethod
    def from_reference(
        cls,
        module: nn.Module,
        *,
        hardening: float = 0.0,
        hardening_reduction: str = "mean",
        frozen_tree: bool = False,
    ) -> FFF:
        """An FFF equal to a ``fastfeedforward.FFF``: its weights, activation, dropout, region_leak.

        The result is on the reference's device and dtype and in its training mode. The
        reference's ``train_hardened`` and usage counters have no counterpart and are ignored.
        """
        layer = cls(
            in_features=module.input_width,
            out_features=module.output_width,
            leaf_width=module.leaf_width,
            depth=int(module.depth),
            activation=copy.deepcopy(module.activation),
            dropout=module.dropout,
            region_leak=module.region_leak,
            hardening=hardening,
            hardening_reduction=hardening_reduction,
            frozen_tree=frozen_tree,
        )
        layer.to(device=module.w1s.device, dtype=module.w1s.dtype)
        layer.load_reference_state_dict(module.state_dict())
        return layer.train(module.training)

    def load_reference_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a ``fastfeedforward.FFF`` state_dict (also accepts this layer's own state_dict).

        The reference's stored ``depth`` must equal this layer's depth; ``node_usage`` and
        ``leaf_usage`` are ignored. Raises ValueError naming the offending key.
        """
        if "depth" in state_dict and int(state_dict["depth"]) != self.depth:
            raise ValueError(
                f"state_dict depth must equal this layer's depth={self.depth}, "
                f"got {int(state_dict['depth'])}"
            )
        allowed = {*PARAMETER_NAMES, "depth", *REFERENCE_IGNORED_KEYS}
        unexpected = sorted(set(state_dict) - allowed)
        if unexpected:
            raise ValueError(
                f"state_dict has unexpected keys {unexpected}; allowed: {sorted(allowed)}"
            )
        for name in PARAMETER_NAMES:
            if name not in state_dict:
                raise ValueError(f"state_dict is missing the key {name!r}")
            expected = getattr(self, name).shape
            if tuple(state_dict[name].shape) != tuple(expected):
                raise ValueError(
                    f"state_dict[{name!r}] must have shape {tuple(expected)}, "
                    f"got {tuple(state_dict[name].shape)}"
                )
        with torch.no_grad():
            for name in PARAMETER_NAMES:
                getattr(self, name).copy_(state_dict[name])

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"leaf_width={self.leaf_width}, depth={self.depth}, dropout={self.dropout}, "
            f"region_leak={self.region_leak}, hardening={self.hardening}, "
            f"hardening_reduction={self.hardening_reduction!r}, frozen_tree={self.frozen_tree}"
        )


def _check_hardening(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            "hardening must be a finite number >= 0 (use frozen_tree=True for the paper's "
            f"h = infinity), got {value!r}"
        )
    return float(value)


def _uniform_parameter(
    shape: tuple[int, ...],
    bound: float,
    neuron_major: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Parameter:
    """U(-bound, bound) weights drawn in the reference's order; ``neuron_major`` keeps a 3-d
    (L, D, l) tensor in (L, l, D) memory order (same values, transposed strides).

    Created directly on ``device`` in ``dtype`` (torch's defaults for None: the reference draws
    CPU float32, which is what equal seeds reproduce).
    """
    values = torch.empty(shape, device=device, dtype=dtype).uniform_(-bound, bound)
    if neuron_major:
        values = values.transpose(1, 2).contiguous().transpose(1, 2)
    return nn.Parameter(values)
