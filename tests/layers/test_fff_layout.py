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
