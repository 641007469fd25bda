"""Mixture of experts with noisy top-k gating (Shazeer et al. 2017), the paper's MoE baseline."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fastff.layers._validation import check_input, check_int, check_probability
from fastff.layers.activations import make_activation
from fastff.layers.moe_gating import (
    NOISE_STD_EPS,
    TopK,
    cv_squared,
    keep_top_k,
    prob_in_top_k,
)

# Dispatch pads each expert's inputs to a capacity from a geometric ladder (1, 2, ..., 8, 10, 13,
# ...): padding stays below 25 % of the pairs while the number of capacity classes, and hence of
# Python iterations, stays logarithmic in the batch.
CAPACITY_GROWTH = 1.25

# Elements of temporaries (gathered expert weights and padded activations) per dispatch chunk.
DISPATCH_CHUNK_ELEMENTS = 2**24


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

    Dispatch: the (input, slot) pairs are sorted by expert; experts are grouped by how many pairs
    they received (capacity classes growing by ``CAPACITY_GROWTH``) and each group runs as one
    padded batched matmul over its experts, in chunks of at most ``DISPATCH_CHUNK_ELEMENTS``
    temporary elements. Work is O(k N) expert evaluations (plus < 25 % padding), never O(E N).

    Args:
        in_features: D, size of the last input dimension.
        out_features: O, size of the last output dimension.
        num_experts: E >= 1.
        expert_width: hidden neurons per expert.
        k: experts evaluated per input, 1 <= k <= E.
        activation: a name from ``fastff.layers.activations.ACTIVATIONS`` or a module.
        noisy_gating: add the trainable gating noise in training (and the load loss).
        w_importance: weight of the importance loss, >= 0.
        w_load: weight of the load loss, >= 0.
        dropout: probability of dropping expert hidden activations, training only.

    Shapes:
        input (..., D) -> output (..., O).

    Parameters (init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like the FFF leaves; gate weights zero):
        ``w_gate`` (D, E), ``w_noise`` (D, E) (None without noisy_gating), ``w1s`` (E, D, W),
        ``b1s`` (E, W), ``w2s`` (E, W, O), ``b2s`` (E, O).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_experts: int,
        expert_width: int,
        k: int = 2,
        activation: str | nn.Module = "relu",
        noisy_gating: bool = True,
        w_importance: float = 0.1,
        w_load: float = 0.1,
        dropout: float = 0.0,
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
        if not isinstance(noisy_gating, bool):
            raise ValueError(f"noisy_gating must be a bool, got {noisy_gating!r}")
        self.noisy_gating = noisy_gating
        self.w_importance = _check_loss_weight("w_importance", w_importance)
        self.w_load = _check_loss_weight("w_load", w_load)
        self.dropout = check_probability("dropout", dropout)
        self.activation = make_activation(activation)
        self.expert_dropout = nn.Dropout(self.dropout)

        d, e, w, o = in_features, num_experts, expert_width, out_features
        self.w_gate = nn.Parameter(torch.zeros(d, e))
        self.w_noise = nn.Parameter(torch.zeros(d, e)) if noisy_gating else None
        self.w1s = _uniform_parameter((e, d, w), fan_in=d)
        self.b1s = _uniform_parameter((e, w), fan_in=d)
        self.w2s = _uniform_parameter((e, w, o), fan_in=w)
        self.b2s = _uniform_parameter((e, o), fan_in=w)

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

    # --------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., O); records aux_loss, importance, load and gates."""
        check_input(x, self.in_features, "MoE")
        x2d = x.reshape(-1, self.in_features)
        top = self._route(x2d)
        pair_outputs = self._run_experts(x2d, top.indices)  # (N * k, O)
        k, out = self.k, self.out_features
        y = (pair_outputs.view(-1, k, out) * top.gates.to(pair_outputs.dtype).unsqueeze(-1)).sum(1)
        self._lead_shape = tuple(x.shape[:-1])
        return y.reshape(*self._lead_shape, out)

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
            load = torch.bincount(flat_indices, minlength=num_experts).float()

        if self.training:
            importance_loss = self.w_importance * cv_squared(importance)
            load_loss = self.w_load * cv_squared(load) if noisy else importance_loss.new_zeros(())
            self._aux_loss = importance_loss + load_loss
            self._importance_loss = importance_loss.detach()
            self._load_loss = load_loss.detach()
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

        capacities = _capacity_ladder(n_pairs)
        ladder = torch.tensor(capacities, device=counts.device)
        capacity_class = torch.searchsorted(ladder, counts)  # smallest capacity >= count
        capacity_class = torch.where(counts > 0, capacity_class, len(capacities))  # idle: last
        experts_by_class = torch.argsort(capacity_class, stable=True)
        class_sizes = torch.bincount(capacity_class, minlength=len(capacities) + 1).tolist()

        groups = torch.split(experts_by_class, class_sizes)[:-1]  # drop the idle experts
        per_expert = self.in_features * self.expert_width + self.expert_width * self.out_features
        row = self.in_features + self.expert_width + self.out_features
        outputs: torch.Tensor | None = None
        for capacity, group in zip(capacities, groups, strict=True):
            if group.numel() == 0:
                continue
            chunk = max(1, DISPATCH_CHUNK_ELEMENTS // (per_expert + capacity * row))
            for experts in torch.split(group, chunk):
                slots = torch.arange(capacity, device=counts.device)
                valid = slots < counts[experts, None]  # (G, C)
                position = (starts[experts, None] + slots).clamp_max(n_pairs - 1)
                pairs = pairs_by_expert[position]  # (G, C), padding repeats a real pair
                result = self._expert_group(x2d[pairs // self.k], experts)  # (G, C, O)
                if outputs is None:
                    # one spare row collects the padding; dtype follows autocast if active
                    outputs = result.new_zeros(n_pairs + 1, self.out_features)
                target = torch.where(valid, pairs, n_pairs).reshape(-1)
                outputs.index_put_((target,), result.reshape(-1, self.out_features))
        assert outputs is not None  # n_pairs > 0 means some expert received pairs
        return outputs[:n_pairs]

    def _expert_group(self, inputs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Run G experts on their padded inputs: (G, C, D) -> (G, C, O)."""
        if experts.numel() == self.num_experts:  # all experts, ascending: no gather needed
            w1, b1, w2, b2 = self.w1s, self.b1s, self.w2s, self.b2s
        else:
            w1, b1 = self.w1s[experts], self.b1s[experts]
            w2, b2 = self.w2s[experts], self.b2s[experts]
        hidden = self.expert_dropout(self.activation(torch.baddbmm(b1.unsqueeze(1), inputs, w1)))
        return torch.baddbmm(b2.unsqueeze(1), hidden, w2)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_experts={self.num_experts}, expert_width={self.expert_width}, k={self.k}, "
            f"noisy_gating={self.noisy_gating}, w_importance={self.w_importance}, "
            f"w_load={self.w_load}, dropout={self.dropout}"
        )


def _capacity_ladder(max_count: int) -> list[int]:
    """Increasing capacities 1, 2, ... growing by at least 1 and by CAPACITY_GROWTH, the last one
    >= max_count."""
    capacities = [1]
    while capacities[-1] < max_count:
        capacities.append(max(capacities[-1] + 1, math.ceil(capacities[-1] * CAPACITY_GROWTH)))
    return capacities


def _check_loss_weight(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _uniform_parameter(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
