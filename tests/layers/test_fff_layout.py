"""w1s keeps the reference's shape but neuron-major memory; every path accepts either layout."""

from __future__ import annotations

import pytest
import torch
from fastfeedforward import FFF as ReferenceFFF
from oracles import fff_hard_oracle
from torch import nn

from fastff.layers import FFF


def _neuron_major(t: torch.Tensor) -> bool:
    return t.transpose(1, 2).is_contiguous()


def test_w1s_is_neuron_major_and_stays_so():
    layer = FFF(12, 3, leaf_width=4, depth=2)
    assert layer.w1s.shape == (4, 12, 4) and _neuron_major(layer.w1s)
    assert _neuron_major(layer.to(torch.float64).w1s)
    reference = ReferenceFFF(12, 4, 3, 2)
    layer.to(torch.float32).load_reference_state_dict(reference.state_dict())
    assert _neuron_major(layer.w1s)
    assert torch.equal(layer.w1s, reference.w1s)
    loss = layer.train()(torch.randn(5, 12)).sum()
    loss.backward()
    assert layer.w1s.grad.stride() == layer.w1s.stride()


@pytest.mark.parametrize("strategy", ["plain", "grouped", "fused_cpu"])
def test_row_major_w1s_gives_the_same_outputs(request, strategy):
    if strategy == "fused_cpu":
        request.getfixturevalue("fused_kernel")
    torch.manual_seed(0)
    layer = FFF(20, 5, leaf_width=8, depth=3).eval()
    row_major = FFF(20, 5, leaf_width=8, depth=3).eval()
    row_major.load_state_dict(layer.state_dict())
    row_major.w1s = nn.Parameter(row_major.w1s.detach().contiguous())
    x = torch.randn(33, 20)
    with torch.no_grad():
        expected = fff_hard_oracle(layer, x)
        for module in (layer, row_major):
            module.hard_strategy = strategy
            torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(row_major.train()(x), layer.train()(x))


def test_node_and_leaf_weights_share_one_matrix_through_conversions_and_copies():
    """w1s and node_weights are views of one (H + P, D) matrix (the fused step's single first
    product) after construction, .double(), deepcopy and load_state_dict; after
    load_state_dict(assign=True) they are not, and the step still matches the composite path."""
    import copy

    torch.manual_seed(0)
    fff = FFF(6, 3, 2, 3, hardening=1.0)
    matrix = fff.packed_first_layer
    assert matrix is not None and matrix.shape == (16 + 16, 6)  # H = 16 leaf neurons, P = 16
    torch.testing.assert_close(
        matrix[:16], fff.w1s.detach().transpose(1, 2).reshape(16, 6), rtol=0, atol=0
    )
    torch.testing.assert_close(matrix[16:23], fff.node_weights.detach(), rtol=0, atol=0)
    assert torch.count_nonzero(matrix[23:]) == 0
    for copied in (fff.double(), copy.deepcopy(fff)):
        assert copied.packed_first_layer is not None
    other = FFF(6, 3, 2, 3, hardening=1.0).double()
    other.load_state_dict(fff.state_dict())
    assert other.packed_first_layer is not None
    other.load_state_dict(fff.state_dict(), assign=True)
    assert other.packed_first_layer is None
    x = torch.randn(9, 6, dtype=torch.float64)
    steps = []
    for implementation in ("fused", "composite"):
        other.soft_implementation = implementation
        other.zero_grad(set_to_none=True)
        y = other.train()(x)
        (y.sum() + other.aux_loss).backward()
        steps.append([y.detach()] + [p.grad.clone() for p in other.parameters()])
    for left, right in zip(*steps, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-10, atol=1e-12)
