"""Mixture of experts with noisy top-k gating (Shazeer et al. 2017), the paper's MoE baseline."""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fastff.layers import moe_dispatch
from fastff.layers.activations import ActivationSpec, make_activation
from fastff.layers.moe_gating import (
    NOISE_STD_EPS,
    TopK,
    cv_squared,
    keep_top_k,
    prob_in_top_k,
)
from fastff.layers.tracing import fx_call_module, refuse_script
from fastff.layers.validation import (
    check_bool,
    check_floating_dtype,
    check_input,
    check_int,
    check_nonnegative_number,
    check_probability,
)

# Dispatch groups experts whose pair counts are within this factor of the group's busiest expert
# and pads them to that count: padding stays below 25 % of the pairs while the number of groups,
# and hence of Python iterations, stays logarithmic in the batch.
CAPACITY_GROWTH = 1.25

# Elements of temporaries (gathered expert weights and padded activations) per dispatch chunk.
DISPATCH_CHUNK_ELEMENTS = 2**22


class MoE(nn.Module):
    """Mixture of ``num_experts`` small FFs with noisy top-k gating (Shazeer et al. 2017).

    Each expert is ``in -> expert_width -> out``: ``W2_e^T dropout(act(W1_e^T x + b1_e)) + b2_e``
    (no softmax at the end). Per input x (N rows after flattening the leading dimensions):

    - ``H(x) = x W_g + N(0, 1) * softplus(x W_noise)``; the noise term only in training and only
      with ``noisy_gating`` (the noise scale gets ``NOISE_STD_EPS = 1e-6`` added, a floor against
      dividing by zero). ``W_g`` and ``W_noise`` are zero-initialised, so training starts from
      uniformly random routing and eval from ties (broken by ``torch.topk``).
    - ``G(x)``: softmax over the k largest ``H(x)_i``, zero for the other experts.
    - ``y = sum_i G(x)_i * expert_i(x)``, evaluating only the k selected experts per input.

    Balancing losses (``aux_loss``, training forwards only; add it to the task loss):

    - ``importance = sum_x G(x)``; ``L_importance = w_importance * CV(importance)^2``.
    - ``load = sum_x P(x, .)`` with ``P(x, i) = Phi(((x W_g)_i - kth_excluding(H(x), k, i)) /
      softplus((x W_noise)_i))``, the probability that expert i stays in the top k when only its
      own noise is redrawn; ``L_load = w_load * CV(load)^2``. Zero with ``noisy_gating=False``
      and whenever ``k == num_experts`` (every expert is always kept: P = 1).
    - ``CV^2 = population variance / (mean^2 + 1e-10)`` (tensor2tensor's cv_squared).

    k = 1: the softmax over a single kept logit is exactly 1, so neither the task loss nor the
    importance loss (the importance is then a count of inputs) gives the router any gradient;
    only the load loss trains ``W_g`` and ``W_noise``. With ``noisy_gating=False`` and k = 1 the
    router never changes from its initialisation (zero weights: every input goes to the same
    expert). The paper uses k = 1 only as a speed baseline.

    Dispatch: the (input, slot) pairs are sorted by expert; experts with similar pair counts
    (within ``CAPACITY_GROWTH`` of the group's busiest) form a group that runs as one padded
    batched matmul (``baddbmm`` over its experts), split into chunks of about
    ``DISPATCH_CHUNK_ELEMENTS`` temporary elements. Work is the k N selected pairs plus < 25 %
    padding, never all E experts per input; the number of groups grows only logarithmically with
    the batch. Costs one host synchronisation per forward (the per-expert pair counts).

    Args:
        in_features: D, size of the last input dimension.
        out_features: O, size of the last output dimension.
        num_experts: E >= 1.
        expert_width: hidden neurons per expert.
        k: experts evaluated per input, 1 <= k <= E.
        activation: a name from ``fastff.layers.activations.ACTIVATIONS``, a module instance or
            a module class such as ``nn.GELU`` (see ``make_activation``).
        noisy_gating: add the trainable gating noise in training (and the load loss).
        w_importance: weight of the importance loss, >= 0.
        w_load: weight of the load loss, >= 0.
        dropout: probability of dropping expert hidden activations, training only.
        device: where the parameters are created (as ``nn.Linear``; ``"meta"`` allocates
            nothing, for reading sizes).
        dtype: dtype the parameters are created in (default: torch's default dtype). Routing
            and the balancing losses run in float32 whatever this dtype.

    Shapes:
        input (..., D) -> output (..., O).

    Parameters (init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like the FFF leaves; gate weights zero):
        ``w_gate`` (D, E), ``w_noise`` (D, E) (None without noisy_gating), ``w1s`` (E, D, W),
        ``b1s`` (E, W), ``w2s`` (E, W, O), ``b2s`` (E, O).
    """

    _dispatch: str = "auto"  # not in the state_dict; the class value is the default

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_experts: int,
        expert_width: int,
        k: int = 2,
        activation: ActivationSpec = "relu",
        noisy_gating: bool = True,
        w_importance: float = 0.1,
        w_load: float = 0.1,
        dropout: float = 0.0,
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
        self.noisy_gating = check_bool("noisy_gating", noisy_gating)
        self.w_importance = check_nonnegative_number("w_importance", w_importance)
        self.w_load = check_nonnegative_number("w_load", w_load)
        self.dropout = check_probability("dropout", dropout)
        check_floating_dtype("dtype", dtype)
        self.activation = make_activation(activation)
        self.expert_dropout = nn.Dropout(self.dropout)

        d, e, w, o = in_features, num_experts, expert_width, out_features
        factory = {"device": device, "dtype": dtype}
        self.w_gate = nn.Parameter(torch.zeros(d, e, **factory))
        self.w_noise = nn.Parameter(torch.zeros(d, e, **factory)) if noisy_gating else None
        self.w1s = _uniform_parameter((e, d, w), fan_in=d, **factory)
        self.b1s = _uniform_parameter((e, w), fan_in=d, **factory)
        self.w2s = _uniform_parameter((e, w, o), fan_in=w, **factory)
        self.b2s = _uniform_parameter((e, o), fan_in=w, **factory)

        self._aux_loss: torch.Tensor | None = None
        self._importance_loss: torch.Tensor | None = None
        self._load_loss: torch.Tensor | None = None
        self._importance: torch.Tensor | None = None
        self._load: torch.Tensor | None = None
        self._top: TopK | None = None
        self._lead_shape: tuple[int, ...] = ()

    # ----------------------------------------------------------------------------------- sizes
    @property
    def training_width(self) -> int:
        """Expert neurons of the whole layer: E * expert_width."""
        return self.num_experts * self.expert_width

    @property
    def inference_width(self) -> int:
        """Expert neurons evaluated per input: k * expert_width."""
        return self.k * self.expert_width

    @property
    def training_size(self) -> int:
        """All expert neurons plus the E gate neurons."""
        return self.training_width + self.num_experts

    @property
    def inference_size(self) -> int:
        """Neurons evaluated per input: k experts plus the E gate neurons."""
        return self.inference_width + self.num_experts

    # --------------------------------------------------------------------- losses and logging
    @property
    def aux_loss(self) -> torch.Tensor:
        """``L_importance + L_load`` of the last forward if it ran in training (differentiable
        scalar, float32), else a zero scalar."""
        if self._aux_loss is None:
            return torch.zeros((), device=self.w_gate.device)
        return self._aux_loss

    @property
    def importance_loss(self) -> torch.Tensor | None:
        """Detached ``w_importance * CV(importance)^2`` of the last training forward, else None."""
        return self._importance_loss

    @property
    def load_loss(self) -> torch.Tensor | None:
        """Detached ``w_load * CV(load)^2`` of the last training forward (0 without noise)."""
        return self._load_loss

    @property
    def importance(self) -> torch.Tensor | None:
        """Detached (E,) sum of the gates over the last batch; None before any forward."""
        return self._importance

    @property
    def load(self) -> torch.Tensor | None:
        """Detached (E,) load of the last batch: ``sum_x P(x, .)`` after a noisy training forward,
        otherwise the number of inputs each expert received. None before any forward."""
        return self._load

    @property
    def gates(self) -> torch.Tensor | None:
        """Detached (..., E) gates G(x) of the last forward (exactly k non-zeros per input)."""
        if self._top is None:
            return None
        indices, values = self._top.indices, self._top.gates
        dense = values.new_zeros(indices.shape[0], self.num_experts).scatter(1, indices, values)
        return dense.reshape(*self._lead_shape, self.num_experts)

    def __getstate__(self) -> dict[str, Any]:
        # The last aux_loss is part of an autograd graph, which cannot be copied or pickled
        # (copy.deepcopy, timm's ModelEmaV3, SWA): copies start without one.
        state = super().__getstate__()
        return {**state, "_aux_loss": None}

    def __prepare_scriptable__(self) -> MoE:
        refuse_script(self)  # torch.jit.script: one line naming fastff.export
        return self

    # --------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., O); records aux_loss, importance, load and gates.

        The experts run by :attr:`dispatch`; with ``"auto"``, while ``torch.jit.trace``
        traces, or ``torch.compile`` / ``torch.export`` trace an eval-mode forward, they run
        gathered per input (``gathered_fixed``: :meth:`gathered_forward`'s fixed shapes, one
        chunk) so the traced graph serves any batch size; under torch.fx the layer is one
        ``call_module`` node (see :mod:`fastff.layers.tracing`).
        """
        if isinstance(x, torch.fx.Proxy):
            return fx_call_module(self, x)
        check_input(x, self.in_features, "MoE")
        x2d = x.reshape(-1, self.in_features)
        top = self._route(x2d)
        pair_outputs = moe_dispatch.run_experts(self, x2d, top.indices, self.dispatch)  # (N*k, O)
        k, out = self.k, self.out_features
        y = (pair_outputs.view(-1, k, out) * top.gates.to(pair_outputs.dtype).unsqueeze(-1)).sum(1)
        self._lead_shape = tuple(x.shape[:-1])
        return y.reshape(*self._lead_shape, out)

    @property
    def dispatch(self) -> str:
        """How ``forward`` evaluates the selected pairs, default ``"auto"`` (see
        :mod:`fastff.layers.moe_dispatch`: ``"sorted"``, ``"gathered"``, ``"triton"``,
        ``"gathered_fixed"``). Assign a name to force one (ValueError if unknown). Not part of
        the state_dict."""
        return self._dispatch

    @dispatch.setter
    def dispatch(self, name: str) -> None:
        self._dispatch = moe_dispatch.check_dispatch(name)

    def gathered_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The eval-mode forward with fixed shapes: the path ``fastff.export`` traces.

        Top-k gating without noise, then the k selected experts' weights gathered per input
        ((N * k, D, W) and (N * k, W, O)) and applied with batched matmuls: no host
        synchronisation and no data-dependent shapes (``forward`` dispatches by expert counts),
        so ``torch.export`` traces it with a dynamic batch. Equals ``forward(x)`` in eval mode;
        no dropout, records nothing (``aux_loss``, ``gates``, ... stay as they were).

        Shapes: (..., D) -> (..., O).
        """
        check_input(x, self.in_features, "MoE")
        x2d = x.reshape(-1, self.in_features)
        top = keep_top_k((x2d @ self.w_gate).float(), self.k)
        pairs = self._gathered_pairs(x2d, top.indices).view(-1, self.k, self.out_features)
        y = (pairs * top.gates.to(pairs.dtype).unsqueeze(-1)).sum(1)  # (N, O)
        return y.reshape(*x.shape[:-1], self.out_features)

    def _gathered_pairs(
        self, x2d: torch.Tensor, indices: torch.Tensor, dropout: nn.Module | None = None
    ) -> torch.Tensor:
        """Expert ``indices[n, j]`` on ``x2d[n]`` for every pair, each pair's expert weights
        gathered at once ((N * k, D, W) and (N * k, W, O)): fixed shapes, no host
        synchronisation, no batch-dependent chunking. (N, D), (N, k) -> (N * k, O) in pair
        order p = n * k + j; ``dropout`` on the hidden units (None: none)."""
        experts = indices.reshape(-1)  # (N * k,)
        inputs = x2d.unsqueeze(1).expand(-1, self.k, -1).reshape(-1, 1, self.in_features)
        w1, b1 = self.w1s.index_select(0, experts), self.b1s.index_select(0, experts)
        hidden = self.activation(torch.baddbmm(b1.unsqueeze(1), inputs, w1))  # (N * k, 1, W)
        if dropout is not None:
            hidden = dropout(hidden)
        w2, b2 = self.w2s.index_select(0, experts), self.b2s.index_select(0, experts)
        return torch.baddbmm(b2.unsqueeze(1), hidden, w2).view(-1, self.out_features)

    def _route(self, x2d: torch.Tensor) -> TopK:
        """Noisy top-k gating of (N, D) inputs (float32); records the balancing losses."""
        num_experts = self.num_experts
        clean = (x2d @ self.w_gate).float()
        noisy = self.training and self.noisy_gating
        if noisy:
            noise_std = F.softplus((x2d @ self.w_noise).float()) + NOISE_STD_EPS
            top = keep_top_k(clean + torch.randn_like(clean) * noise_std, self.k)
        else:
            top = keep_top_k(clean, self.k)

        flat_indices = top.indices.reshape(-1)
        importance = clean.new_zeros(num_experts).index_add(0, flat_indices, top.gates.reshape(-1))
        if noisy:
            load = prob_in_top_k(clean, noise_std, top, self.k).sum(0)
        else:
            # inputs per expert; index_add, unlike bincount on CUDA, never waits for the host
            load = clean.new_zeros(num_experts).index_add(
                0, flat_indices, top.gates.new_ones(1).expand(flat_indices.shape)
            )

        if self.training:
            importance_loss = self.w_importance * cv_squared(importance)
            self._importance_loss = importance_loss.detach()
            if noisy:
                load_loss = self.w_load * cv_squared(load)
                self._aux_loss = importance_loss + load_loss
                self._load_loss = load_loss.detach()
            else:  # no load loss (and no zero added: compiled backwards trip over it)
                self._aux_loss = importance_loss
                self._load_loss = torch.zeros_like(self._importance_loss)
        else:
            self._aux_loss = self._importance_loss = self._load_loss = None
        self._importance = importance.detach()
        self._load = load.detach()
        self._top = TopK(top.values.detach(), top.indices, top.gates.detach())
        return top

    def _run_experts(self, x2d: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Evaluate expert ``indices[n, j]`` on ``x2d[n]`` for every pair; (N * k, O) in pair order.

        Args:
            x2d: (N, D) inputs.
            indices: (N, k) selected experts; pair p = n * k + j.
        """
        n_pairs, num_experts = indices.numel(), self.num_experts
        if n_pairs == 0:
            return x2d.new_zeros(0, self.out_features)
        expert_of_pair = indices.reshape(-1)
        counts = torch.bincount(expert_of_pair, minlength=num_experts)  # (E,)
        pairs_by_expert = torch.argsort(expert_of_pair, stable=True)  # (P,)
        starts = counts.cumsum(0) - counts  # (E,) first position of each expert's pairs
        negated_counts, experts_by_count = (-counts).sort(stable=True)  # busiest expert first
        row = self.in_features + self.expert_width + self.out_features
        per_expert = self.in_features * self.expert_width + self.expert_width * self.out_features

        outputs: torch.Tensor | None = None
        for first, stop, capacity in _capacity_groups(negated_counts.tolist()):
            if stop - first == num_experts:  # every expert: use the weights in place
                group: torch.Tensor | slice = slice(0, num_experts)
            else:
                group = experts_by_count[first:stop]
            chunk = max(1, DISPATCH_CHUNK_ELEMENTS // (per_expert + capacity * row))
            for chunk_start in range(0, stop - first, chunk):
                experts = _chunk(group, chunk_start, chunk)
                slots = torch.arange(capacity, device=counts.device)
                valid = slots < counts[experts, None]  # (G, C)
                position = (starts[experts, None] + slots).clamp_max(n_pairs - 1)
                pairs = pairs_by_expert[position]  # (G, C); padding repeats a real pair
                inputs = x2d.index_select(0, (pairs // self.k).reshape(-1))
                result = self._expert_group(inputs.view(*pairs.shape, -1), experts)  # (G, C, O)
                if outputs is None:
                    # one spare row collects the padding; dtype follows autocast if active
                    outputs = result.new_zeros(n_pairs + 1, self.out_features)
                target = torch.where(valid, pairs, n_pairs).reshape(-1)
                outputs.index_put_((target,), result.reshape(-1, self.out_features))
        assert outputs is not None  # n_pairs > 0, so some expert received pairs
        return outputs[:n_pairs]

    def _expert_group(self, inputs: torch.Tensor, experts: torch.Tensor | slice) -> torch.Tensor:
        """Run G experts (ids, or a slice of consecutive ids) on padded inputs: (G, C, D) ->
        (G, C, O)."""
        if isinstance(experts, slice):
            w1, b1, w2, b2 = (
                self.w1s[experts],
                self.b1s[experts],
                self.w2s[experts],
                self.b2s[experts],
            )
        else:
            w1, b1 = self.w1s.index_select(0, experts), self.b1s.index_select(0, experts)
            w2, b2 = self.w2s.index_select(0, experts), self.b2s.index_select(0, experts)
        hidden = self.expert_dropout(self.activation(torch.baddbmm(b1.unsqueeze(1), inputs, w1)))
        return torch.baddbmm(b2.unsqueeze(1), hidden, w2)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_experts={self.num_experts}, expert_width={self.expert_width}, k={self.k}, "
            f"noisy_gating={self.noisy_gating}, w_importance={self.w_importance}, "
            f"w_load={self.w_load}, dropout={self.dropout}"
        )


def _capacity_groups(negated_counts: list[int]) -> list[tuple[int, int, int]]:
    """Split experts sorted by descending pair count into (first, stop, capacity) groups.

    ``negated_counts`` holds -count per expert in ascending order (busiest first). Each group
    pads its experts to the count of its busiest one, ``capacity``, and only takes experts with
    at least ``capacity / CAPACITY_GROWTH`` pairs, so padding stays below 25 % of the pairs and the
    number of groups is logarithmic in the largest count. Experts without pairs are left out.
    """
    n_active = bisect.bisect_left(negated_counts, 0)
    groups, first = [], 0
    while first < n_active:
        capacity = -negated_counts[first]
        stop = min(bisect.bisect_right(negated_counts, -capacity / CAPACITY_GROWTH), n_active)
        groups.append((first, stop, capacity))
        first = stop
    return groups


def _chunk(group: torch.Tensor | slice, start: int, size: int) -> torch.Tensor | slice:
    """Experts ``start:start + size`` of a group: a slice for a slice, else an index tensor."""
    if isinstance(group, slice):
        return slice(start, min(start + size, group.stop))
    return group[start : start + size]


def _uniform_parameter(
    shape: tuple[int, ...],
    fan_in: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Parameter:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights of ``shape``, created on ``device`` in
    ``dtype`` (torch's defaults for None)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape, device=device, dtype=dtype).uniform_(-bound, bound))
