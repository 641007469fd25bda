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


def test_parameters_are_views_of_the_packed_tensors_through_conversions_and_copies():
    """The six parameters are views of the packed tensors (the fused step's fewer products)
    after construction, .double(), deepcopy and load_state_dict; after
    load_state_dict(assign=True) they are not, and the step still matches the composite path."""
    import copy

    torch.manual_seed(0)
    fff = FFF(6, 3, 2, 3, hardening=1.0)
    packed = fff.packed_parameters
    assert packed is not None
    first, first_bias, second = (t.detach() for t in packed)
    assert first.shape == (16 + 16, 6) and first_bias.shape == (32,) and second.shape == (24, 3)
    exact = {"rtol": 0, "atol": 0}
    torch.testing.assert_close(first[:16], fff.w1s.detach().transpose(1, 2).reshape(16, 6), **exact)
    torch.testing.assert_close(first[16:23], fff.node_weights.detach(), **exact)
    assert torch.count_nonzero(first[23:]) == 0 and torch.count_nonzero(first_bias[23:]) == 0
    torch.testing.assert_close(first_bias[:16], fff.b1s.detach().reshape(-1), **exact)
    torch.testing.assert_close(first_bias[16:23], fff.node_biases.detach().reshape(-1), **exact)
    torch.testing.assert_close(second[:16], fff.w2s.detach().reshape(16, 3), **exact)
    torch.testing.assert_close(second[16:], fff.b2s.detach(), **exact)
    for copied in (fff.double(), copy.deepcopy(fff)):
        assert copied.packed_parameters is not None
    other = FFF(6, 3, 2, 3, hardening=1.0).double()
    other.load_state_dict(fff.state_dict())
    assert other.packed_parameters is not None
    other.load_state_dict(fff.state_dict(), assign=True)
    assert other.packed_parameters is None
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
