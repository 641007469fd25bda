"""MoE's dispatch registry: ``gathered`` (no host synchronisation) equals ``sorted`` in values
and gradients, and ``auto`` chooses by device and mode only."""

from __future__ import annotations

import pytest
import torch

from fastff.layers import MoE, moe_dispatch


def _moe(training: bool, dropout: float = 0.0) -> MoE:
    torch.manual_seed(0)
    moe = MoE(7, 5, 9, 6, k=3, activation="silu", dropout=dropout).double().train(training)
    with torch.no_grad():
        moe.w_gate.normal_()
        moe.w_noise.normal_()
    return moe


def _forward_and_grads(moe: MoE, x: torch.Tensor, dispatch: str):
    moe.dispatch = dispatch
    moe.zero_grad(set_to_none=True)
    inputs = x.clone().requires_grad_(True)
    torch.manual_seed(5)  # the same gate noise and dropout draws for every dispatch
    y = moe(inputs)
    (y.square().sum() + moe.aux_loss).backward()
    return [y.detach(), inputs.grad, *(p.grad for p in moe.parameters())]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("chunk", [moe_dispatch.GATHER_CHUNK_ELEMENTS, 1])
def test_gathered_equals_sorted_with_gradients(training, chunk, monkeypatch):
    monkeypatch.setattr(moe_dispatch, "GATHER_CHUNK_ELEMENTS", chunk)  # 1: one pair per chunk
    moe = _moe(training)
    x = torch.randn(4, 11, 7, dtype=torch.float64)
    gathered = _forward_and_grads(moe, x, "gathered")
    sorted_ = _forward_and_grads(moe, x, "sorted")
    for mine, theirs in zip(gathered, sorted_, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


def test_gathered_applies_dropout_in_training_only():
    moe = _moe(True, dropout=0.5)
    moe.dispatch = "gathered"
    x = torch.randn(30, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(1)
        first = moe(x)
        torch.manual_seed(2)
        second = moe(x)
        assert not torch.allclose(first, second)  # fresh dropout masks
        moe.eval()
        torch.testing.assert_close(moe(x), moe(x), rtol=0, atol=0)


def test_empty_batch():
    moe = _moe(False)
    for name in ("sorted", "gathered"):
        moe.dispatch = name
        assert moe(torch.zeros(0, 7, dtype=torch.float64)).shape == (0, 5)


def test_auto_on_cpu_is_sorted_and_validation():
    moe = _moe(False)
    x = torch.randn(3, 7, dtype=torch.float64)
    assert moe_dispatch.select(moe, x) == "sorted"
    assert moe_dispatch.select(moe.train(), x) == "sorted"
    assert moe.dispatch == "auto" and "dispatch" not in str(list(moe.state_dict()))
    with pytest.raises(ValueError, match=r"MoE dispatch must be one of \['auto', 'sorted'"):
        moe.dispatch = "fastest"
    assert moe.dispatch == "auto"


def test_eval_load_counts_inputs_per_expert():
    """The eval load is the number of pairs per expert (counted without a host sync)."""
    moe = _moe(False)
    x = torch.randn(40, 7, dtype=torch.float64)
    moe(x)
    counts = (moe.gates > 0).sum(0).to(moe.load.dtype)
    torch.testing.assert_close(moe.load, counts)
