"""The FFF soft (training) forward as one autograd function with a hand-written backward.

Computes exactly what the composite soft path in ``fastff.layers.fff`` computes (the leaf mixture
of all leaves and the per-node decision entropy), but as one node of the autograd graph instead
of about forty, and without keeping (B, L, l) intermediates: the backward recomputes the weighted
hidden units from the saved hidden units and mixture, and sums the leaf gradients up the tree one
level at a time (O(B * L) work).

Notation as in ``fastff.layers.fff``: B inputs, D = in_features, O = out_features, l = leaf_width,
d = depth >= 1, L = 2**d leaves, N = 2**d - 1 nodes in heap order, H = L * l hidden units.

Gradients (c = sigmoid(z) of the mixture's node logits z, q_j = dLoss/dm_j * m_j):
- a leaf's mixture weight m_j is a product of c_n (went right) and 1 - c_n (went left) along its
  path, so dLoss/dz_n = R_n (1 - c_n) - L_n c_n = R_n - (L_n + R_n) c_n, where L_n and R_n sum q
  over the leaves below node n's left and right child;
- the entropy H(z) = softplus(zc) - zc * sigmoid(zc) of the clamped logit zc (see
  ``node_entropy_from_logits``) has dH/dz = -z c (1 - c) inside the clamp and 0 outside.

The routing (node logits (B, N) -> mixture (B, L) and mean entropy (N,), and its backward) runs
as the C++ kernel of :mod:`fastff.layers.kernels.cpu_soft_routing` on CPU float32/float64 where
that kernel is loaded and ``routing_kernel`` is set, else as the torch ops below (same math).
With a ReLU, :func:`soft_fff` runs the whole step (forward, backward and autograd node) as one
C++ op there instead of this function.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from fastff.layers.fff_soft import (
    ENTROPY_LOGIT_BOUND,
    leaf_mixture,
    node_entropy_from_logits,
    routing_dtype,
)
from fastff.layers.kernels import cpu_soft_routing


def _relu_like(activation: nn.Module) -> bool:
    return type(activation) is nn.ReLU


class SoftFFFFunction(torch.autograd.Function):
    """(x, parameters) -> (y (B, O), mean node entropy (N,) float32); see the module docstring.

    Non-tensor arguments: the activation module (elementwise, without parameters), ``swap``
    (B, N) bool or None: the region-leak transpositions (negated mixture logits), and
    ``routing_kernel``: use the C++ routing kernel where it can run.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        node_weights: torch.Tensor,
        node_biases: torch.Tensor,
        w1s: torch.Tensor,
        b1s: torch.Tensor,
        w2s: torch.Tensor,
        b2s: torch.Tensor,
        activation: nn.Module,
        swap: torch.Tensor | None,
        routing_kernel: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_inputs = x.shape[0]
        n_leaves, in_features, leaf_width = w1s.shape
        depth = n_leaves.bit_length() - 1
        hidden_width = n_leaves * leaf_width
        out_features = w2s.shape[-1]
        logits = torch.addmm(node_biases.view(-1), x, node_weights.t())
        logits = logits.to(routing_dtype(logits.dtype))  # (B, N)
        routing_kernel = routing_kernel and cpu_soft_routing.usable(logits)
        if routing_kernel:
            mixture, entropy_mean = cpu_soft_routing.forward(logits, swap, depth)
        else:
            mixture, entropy_mean = _routing_forward(logits, swap, depth)

        first = w1s.transpose(1, 2).reshape(hidden_width, in_features)
        pre = torch.addmm(b1s.view(-1), x, first.t())  # (B, H)
        mix = mixture.to(pre.dtype)
        # ReLU in place: one (B, H) buffer fewer (its backward needs only the output)
        hidden = torch.relu_(pre) if _relu_like(activation) else activation(pre)
        weighted = hidden.view(n_inputs, n_leaves, leaf_width) * mix.unsqueeze(-1)
        second = w2s.reshape(hidden_width, out_features)
        # accumulate in place into mix @ b2s: torch.addmm would copy it first
        y = (mix @ b2s).addmm_(weighted.view(n_inputs, hidden_width), second)

        ctx.activation = activation
        ctx.depth = depth
        ctx.routing_kernel = routing_kernel
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(
            x, node_weights, w1s, w2s, b2s, logits, mixture, hidden, swap,
            None if _relu_like(activation) else pre,
        )  # fmt: skip
        return y, entropy_mean

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_y: torch.Tensor | None, grad_entropy: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        x, node_weights, w1s, w2s, b2s, logits, mixture, hidden, swap, pre = ctx.saved_tensors
        needs = ctx.needs_input_grad
        n_inputs, depth = x.shape[0], ctx.depth
        n_leaves, in_features, leaf_width = w1s.shape
        hidden_width = n_leaves * leaf_width
        out_features = w2s.shape[-1]
        grad_x = grad_w1s = grad_b1s = grad_w2s = grad_b2s = None
        grad_mix = None  # dLoss/dm (B, L)
        if grad_y is not None:
            mix = mixture.to(hidden.dtype)
            hidden3 = hidden.view(n_inputs, n_leaves, leaf_width)
            second = w2s.reshape(hidden_width, out_features)
            grad_weighted = (grad_y @ second.t()).view(n_inputs, n_leaves, leaf_width)
            if needs[6]:
                grad_b2s = mix.t() @ grad_y
            # one (B, H) work buffer: the weighted hidden units (recomputed), then the
            # products of the mixture's gradient
            work = torch.mul(hidden3, mix.unsqueeze(-1))
            if needs[5]:
                grad_w2s = (work.view(n_inputs, hidden_width).t() @ grad_y).view_as(w2s)
            products = torch.mul(grad_weighted, hidden3, out=work)
            grad_mix = torch.addmm(products.sum(dim=-1), grad_y, b2s.t())  # (B, L)
            grad_hidden = grad_weighted.mul_(mix.unsqueeze(-1)).view(n_inputs, hidden_width)
            grad_pre = _activation_backward(ctx.activation, grad_hidden, hidden, pre)
            if needs[3]:
                grad_first = grad_pre.t() @ x  # (H, D), neuron-major like w1s's storage
                grad_w1s = grad_first.view(n_leaves, leaf_width, in_features).transpose(1, 2)
            if needs[4]:
                grad_b1s = grad_pre.sum(dim=0).view(n_leaves, leaf_width)
            if needs[0]:
                first = w1s.transpose(1, 2).reshape(hidden_width, in_features)
                grad_x = grad_pre @ first

        grad_node_weights = grad_node_biases = None
        has_grads = grad_mix is not None or grad_entropy is not None
        if has_grads and (needs[0] or needs[1] or needs[2]):
            routing_backward = (
                cpu_soft_routing.backward if ctx.routing_kernel else _routing_backward
            )
            grad_logits = routing_backward(logits, swap, grad_mix, mixture, grad_entropy, depth)
            grad_logits = grad_logits.to(x.dtype)  # (B, N)
            if needs[1]:
                grad_node_weights = grad_logits.t() @ x
            if needs[2]:
                grad_node_biases = grad_logits.sum(dim=0).unsqueeze(1)
            if needs[0]:
                if grad_x is None:
                    grad_x = grad_logits @ node_weights
                else:
                    grad_x.addmm_(grad_logits, node_weights)
        return (
            grad_x,
            grad_node_weights,
            grad_node_biases,
            grad_w1s,
            grad_b1s,
            grad_w2s,
            grad_b2s,
            None,
            None,
            None,
        )


def _routing_forward(
    logits: torch.Tensor, swap: torch.Tensor | None, depth: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixture (B, L), mean node entropy (N,)) from node logits (B, N) as torch ops; ``swap``
    (B, N) bool or None negates the mixture logits."""
    mixture_logits = logits if swap is None else torch.where(swap, -logits, logits)
    return leaf_mixture(mixture_logits, depth), node_entropy_from_logits(logits).mean(dim=0)


def _routing_backward(
    logits: torch.Tensor,
    swap: torch.Tensor | None,
    grad_mix: torch.Tensor | None,
    mixture: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    depth: int,
) -> torch.Tensor:
    """dLoss/dz (B, N) in the routing dtype as torch ops, from dLoss/dm (B, L) or None, the
    mixture (B, L) and dLoss/d(mean entropy) (N,) or None (not both None)."""
    decision = torch.sigmoid(logits)  # c (B, N)
    grad_logits = None
    if grad_mix is not None:
        leaf_terms = grad_mix.to(mixture.dtype).mul_(mixture)  # q of the module docstring
        grad_logits = _grad_mixture_logits(leaf_terms, decision, swap, depth)
    if grad_entropy is not None:
        # -dH/dz = z c (1 - c) inside the clamp, 0 outside; times dLoss/dH / B
        scaled = logits * (grad_entropy / logits.shape[0])
        term = torch.ops.aten.hardtanh_backward(
            torch.ops.aten.sigmoid_backward(scaled, decision),
            logits,
            -ENTROPY_LOGIT_BOUND,
            ENTROPY_LOGIT_BOUND,
        )
        grad_logits = term.neg_() if grad_logits is None else grad_logits.sub_(term)
    return grad_logits


def _activation_backward(
    activation: nn.Module,
    grad_hidden: torch.Tensor,
    hidden: torch.Tensor,
    pre: torch.Tensor | None,
) -> torch.Tensor:
    """dLoss/d(pre-activation) (B, H) from dLoss/d(hidden) (B, H)."""
    if pre is None:  # ReLU: hidden > 0 exactly where pre > 0
        return torch.ops.aten.threshold_backward(grad_hidden, hidden, 0)
    with torch.enable_grad():
        pre = pre.detach().requires_grad_(True)
        (grad_pre,) = torch.autograd.grad(activation(pre), pre, grad_hidden)
    return grad_pre


def _grad_mixture_logits(
    leaf_terms: torch.Tensor, decision: torch.Tensor, swap: torch.Tensor | None, depth: int
) -> torch.Tensor:
    """dLoss/dz (B, N) of the mixture from q = dLoss/dm * m (B, L) and c = sigmoid(z) (B, N),
    level by level up the tree."""
    if swap is not None:  # the mixture saw -z where swapped: its c is 1 - c there
        decision = torch.where(swap, 1 - decision, decision)
    levels = []  # deepest level first
    totals = leaf_terms
    n_inputs = decision.shape[0]
    for level in reversed(range(depth)):
        pairs = totals.view(n_inputs, 2**level, 2)  # (left, right) subtree sums of level's nodes
        totals = pairs.sum(dim=-1)
        nodes = decision[:, 2**level - 1 : 2 ** (level + 1) - 1]
        levels.append(torch.addcmul(pairs[..., 1], totals, nodes, value=-1))
    grad = torch.cat(levels[::-1], dim=1)  # heap order: level 0 first
    return grad if swap is None else torch.where(swap, -grad, grad)


def soft_fff(
    x: torch.Tensor,
    node_weights: torch.Tensor,
    node_biases: torch.Tensor,
    w1s: torch.Tensor,
    b1s: torch.Tensor,
    w2s: torch.Tensor,
    b2s: torch.Tensor,
    activation: nn.Module,
    swap: torch.Tensor | None = None,
    routing_kernel: bool = True,
    aux_scale: float = 1.0,
    packed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The FFF soft forward of (B, D) inputs: (y (B, O), aux (), mean node entropy (N,)), the
    last two in the routing dtype (at least float32). aux = ``aux_scale`` * the sum of the mean
    node entropies is the differentiable hardening loss; the returned entropies are detached.

    Parameters in the FFF's shapes: node_weights (N, D), node_biases (N, 1), w1s (L, D, l),
    b1s (L, l), w2s (L, l, O), b2s (L, O); depth = log2(L) >= 1. ``activation`` acts elementwise
    and has no parameters (see :func:`fusable`); ``swap`` (B, N) bool negates those mixture
    logits (region leak; the entropy is symmetric in the sign). No dropout.
    ``routing_kernel``: use the C++ kernels where they can run (kernel loaded, CPU, float32 or
    float64 routing, not traced): with a ReLU and x and the parameters in one dtype (autocast
    off) the whole step is one C++ autograd op (:func:`cpu_soft_routing.train_step`), else the
    routing runs as C++ inside :class:`SoftFFFFunction`; without them (or when False), torch
    ops. ``packed``: the tensors the parameters should be views of (``FFF.packed_parameters``;
    the whole step then needs fewer products and no concatenation, and checks that they are),
    or None.
    """
    parameters = (node_weights, node_biases, w1s, b1s, w2s, b2s)
    device_type = x.device.type  # autocast has no "meta" (shape tracing), so ask first
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return _soft_fff_autocast(x, parameters, activation, swap, routing_kernel, aux_scale)
    if (
        routing_kernel
        and _relu_like(activation)
        and cpu_soft_routing.usable(x)
        and cpu_soft_routing.runs_whole_step(x, parameters)
    ):
        depth = w1s.shape[0].bit_length() - 1
        return cpu_soft_routing.train_step(x, parameters, packed, swap, aux_scale, depth)
    y, entropy = SoftFFFFunction.apply(x, *parameters, activation, swap, routing_kernel)
    return y, entropy.sum() * aux_scale, entropy.detach()


def _soft_fff_autocast(
    x: torch.Tensor,
    parameters: tuple[torch.Tensor, ...],
    activation: nn.Module,
    swap: torch.Tensor | None,
    routing_kernel: bool,
    aux_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`soft_fff` under autocast: what autocast does to the matrix products, done up front.

    x and the parameters are cast to the autocast dtype (bfloat16 or float16; the casts are
    differentiable, so float32 parameters get float32 gradients) and the step runs with autocast
    off in that one dtype, as :class:`SoftFFFFunction` (its in-place products need one dtype; the
    C++ whole-step op takes float32/float64 only). The node logits are converted to the routing
    dtype (float32) before the mixture and the entropies, so those, their backward and ``aux``
    stay float32; the C++ routing kernel still runs on them where ``routing_kernel`` allows.
    """
    device_type = x.device.type
    dtype = torch.get_autocast_dtype(device_type)
    with torch.autocast(device_type, enabled=False):
        cast = tuple(p.to(dtype) for p in parameters)
        y, entropy = SoftFFFFunction.apply(x.to(dtype), *cast, activation, swap, routing_kernel)
    return y, entropy.sum() * aux_scale, entropy.detach()


def unfusable_reason(activation: nn.Module, dropout_active: bool, depth: int) -> str | None:
    """Why :func:`soft_fff` cannot compute this configuration, or None: it needs depth >= 1, no
    active dropout, and an activation without parameters that keeps its input (the backward
    recomputes its gradient from the pre-activations; an in-place ReLU is fine, its gradient
    needs only the output)."""
    name = type(activation).__name__
    if depth < 1:
        return "depth 0 has no tree to route (the composite path computes it)"
    if dropout_active:
        return "it has no dropout; use dropout=0 or eval mode"
    if next(activation.parameters(), None) is not None:
        return f"the activation {name} has parameters (they would get no gradient)"
    if not _relu_like(activation) and getattr(activation, "inplace", False):
        return f"the in-place activation {name} overwrites the input its backward needs"
    return None


def fusable(activation: nn.Module, dropout_active: bool, depth: int) -> bool:
    """Whether :func:`soft_fff` computes this configuration (see :func:`unfusable_reason`)."""
    return unfusable_reason(activation, dropout_active, depth) is None
