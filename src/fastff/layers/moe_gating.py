"""Noisy top-k gating and its balancing losses (Shazeer et al. 2017), as pure tensor functions.

Shapes: N inputs, E experts, k kept experts per input. Every function works on float tensors of
shape (N, E); the MoE layer calls them in float32 whatever its own dtype.

    H(x)_i  = (x W_g)_i + N(0, 1) * softplus((x W_noise)_i)       (noise in training only)
    G(x)    = softmax over the k largest H(x)_i, zeros elsewhere
    P(x, i) = Phi(((x W_g)_i - kth_excluding(H(x), k, i)) / softplus((x W_noise)_i))
    L       = w_importance * CV(sum_x G(x))^2 + w_load * CV(sum_x P(x, .))^2
"""

from __future__ import annotations

from typing import NamedTuple

import torch

# Added to softplus((x W_noise)_i) so P(x, i) never divides by zero (softplus underflows to 0 for
# logits below about -100). Shazeer's tensor2tensor code adds 1e-2; 1e-6 keeps the formula exact
# for every practical noise scale.
NOISE_STD_EPS = 1e-6

# Added to mean^2 in CV^2, as tensor2tensor's cv_squared (makes an all-zero vector give 0).
CV_EPS = 1e-10


class TopK(NamedTuple):
    """Result of :func:`keep_top_k` for logits of shape (N, E).

    values: (N, min(k + 1, E)) the largest logits per row, descending; column k (when it exists)
        is the (k+1)-th largest, which :func:`prob_in_top_k` needs.
    indices: (N, k) expert ids of the kept logits, in descending logit order.
    gates: (N, k) softmax over the kept logits (each row sums to 1).
    """

    values: torch.Tensor
    indices: torch.Tensor
    gates: torch.Tensor


def keep_top_k(logits: torch.Tensor, k: int) -> TopK:
    """KeepTopK then softmax over the k kept logits: ``G(x)`` in compact form.

    Args:
        logits: (N, E) gate logits H(x).
        k: experts kept per row, 1 <= k <= E.
    """
    num_experts = logits.shape[-1]
    values, indices = logits.topk(min(k + 1, num_experts), dim=-1)
    return TopK(values, indices[:, :k], torch.softmax(values[:, :k], dim=-1))


def in_top_k_mask(top: TopK, num_experts: int) -> torch.Tensor:
    """(N, E) bool: True where the expert is among the row's k kept experts."""
    mask = torch.zeros(
        top.indices.shape[0], num_experts, dtype=torch.bool, device=top.indices.device
    )
    # a tensor source (not a Python True): torch.jit.trace records that scatter
    return mask.scatter(1, top.indices, torch.ones_like(top.indices, dtype=torch.bool))


def prob_in_top_k(
    clean_logits: torch.Tensor, noise_std: torch.Tensor, top: TopK, k: int
) -> torch.Tensor:
    """P(x, i): probability that expert i stays in the top k when only its own noise is redrawn.

    P(x, i) = Phi((clean_i - kth_excluding(H, k, i)) / noise_std_i), where kth_excluding is the
    k-th largest noisy logit among the other experts: the (k+1)-th largest overall if i is in the
    top k, else the k-th largest. With k == E every expert is always kept and P == 1.

    Args:
        clean_logits: (N, E) x W_g.
        noise_std: (N, E) softplus(x W_noise) (+ NOISE_STD_EPS), > 0.
        top: :func:`keep_top_k` of the noisy logits H.
        k: experts kept per row.

    Returns:
        (N, E) probabilities, differentiable in clean_logits, noise_std and the thresholds.
    """
    num_experts = clean_logits.shape[-1]
    if k >= num_experts:
        return torch.ones_like(clean_logits)
    threshold_if_in = top.values[:, k : k + 1]
    threshold_if_out = top.values[:, k - 1 : k]
    threshold = torch.where(in_top_k_mask(top, num_experts), threshold_if_in, threshold_if_out)
    return torch.special.ndtr((clean_logits - threshold) / noise_std)


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation of a 1-d tensor: population variance / (mean^2 + eps).

    Population variance (divide by E, as tensor2tensor) so a single expert gives 0, not NaN.
    Zero for a uniform vector (and for all zeros), growing with imbalance up to E - 1.
    """
    values = values.float()
    mean = values.mean()
    return (values - mean).square().mean() / (mean.square() + CV_EPS)
