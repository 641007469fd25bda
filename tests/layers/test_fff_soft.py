"""The vectorised soft-forward pieces in fastff.layers.fff_soft against direct formulas."""

import pytest
import torch
from oracles import bernoulli_entropy

from fastff.layers.fff_soft import leaf_mixture, node_entropy_from_logits, region_leak_logits


def path_product_mixture(logits: torch.Tensor, depth: int) -> torch.Tensor:
    """Leaf weights as the product of c or 1 - c along each root-to-leaf path, (B, N) -> (B, L)."""
    right = torch.sigmoid(logits)
    columns = []
    for leaf in range(2**depth):
        weight, node = torch.ones(logits.shape[0], dtype=logits.dtype), 0
        for level in reversed(range(depth)):
            goes_right = (leaf >> level) & 1
            weight = weight * (right[:, node] if goes_right else 1 - right[:, node])
            node = 2 * node + 1 + goes_right
        columns.append(weight)
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_leaf_mixture_equals_path_products_and_sums_to_one(depth):
    logits = torch.randn(7, 2**depth - 1, dtype=torch.float64) * 3
    mixture = leaf_mixture(logits, depth)
    torch.testing.assert_close(mixture, path_product_mixture(logits, depth))
    torch.testing.assert_close(mixture.sum(dim=1), torch.ones(7, dtype=torch.float64))


def test_leaf_mixture_of_saturated_logits_is_exact_with_finite_gradients():
    logits = torch.tensor([[1e4, -1e4, 1e4]], requires_grad=True)  # right, then right again
    mixture = leaf_mixture(logits, 2)
    assert mixture.tolist() == [[0.0, 0.0, 0.0, 1.0]]
    mixture.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_entropy_from_logits_equals_clamped_bernoulli_entropy_and_its_gradient():
    logits = torch.tensor([-40.0, -14.0, -3.0, 0.0, 0.5, 7.0, 13.0, 30.0], dtype=torch.float64)
    ours = logits.clone().requires_grad_(True)
    direct = logits.clone().requires_grad_(True)
    entropy = node_entropy_from_logits(ours)
    expected = bernoulli_entropy(torch.sigmoid(direct))
    torch.testing.assert_close(entropy, expected)
    entropy.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(ours.grad, direct.grad)
    # Symmetric in the decision: a transposed node has the same entropy.
    torch.testing.assert_close(node_entropy_from_logits(-logits), entropy.detach())


def test_region_leak_draws_per_level_in_the_reference_order():
    logits = torch.randn(5, 7)
    torch.manual_seed(3)
    swapped = region_leak_logits(logits, 0.5)
    torch.manual_seed(3)
    draws = torch.cat([torch.rand(5, 2**level) for level in range(3)], dim=1)
    torch.testing.assert_close(swapped, torch.where(draws < 0.5, -logits, logits))
