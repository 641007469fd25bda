"""MoE's dispatch registry: ``gathered`` (no host synchronisation) equals ``sorted`` in values
and gradients, and ``auto`` chooses by device and mode only."""

from __future__ import annotations

import dataclasses

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


def _dense_oracle(moe: MoE, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """sum_e gates[:, e] * expert_e(x) over every expert, (N, D) -> (N, O)."""
    outputs = [
        moe.activation(x @ moe.w1s[e] + moe.b1s[e]) @ moe.w2s[e] + moe.b2s[e]
        for e in range(moe.num_experts)
    ]
    return (torch.stack(outputs, dim=1) * gates.unsqueeze(-1)).sum(1)


@pytest.mark.parametrize("name", list(moe_dispatch.REGISTRY))
def test_every_dispatch_is_selectable_and_equals_a_dense_oracle(name, monkeypatch):
    calls = []
    entry = moe_dispatch.REGISTRY[name]

    def spy(moe, x2d, indices):
        calls.append(name)
        return entry.run(moe, x2d, indices)

    monkeypatch.setitem(moe_dispatch.REGISTRY, name, dataclasses.replace(entry, run=spy))
    dtype = torch.float32 if name == "triton" else torch.float64  # triton: no float64
    moe = _moe(False).to(dtype)
    moe.dispatch = name
    x = torch.randn(13, 7, dtype=dtype)
    with torch.no_grad():
        y = moe(x)
        expected = _dense_oracle(moe, x, moe.gates)
    assert calls == [name]
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if name == "triton" else {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(y, expected, **tolerance)


@pytest.mark.parametrize("training", [True, False])
def test_gathered_fixed_equals_sorted_with_gradients(training):
    moe = _moe(training)
    x = torch.randn(4, 11, 7, dtype=torch.float64)
    fixed = _forward_and_grads(moe, x, "gathered_fixed")
    sorted_ = _forward_and_grads(moe, x, "sorted")
    for mine, theirs in zip(fixed, sorted_, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


def test_auto_takes_the_fixed_shapes_while_traced(monkeypatch):
    moe = _moe(False)
    x = torch.randn(3, 7, dtype=torch.float64)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert moe_dispatch.select(moe, x) == "gathered_fixed"
    assert moe_dispatch.select(moe.train(), x) == "sorted"  # compiled training: sorted
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    assert moe_dispatch.select(moe, x) == "gathered_fixed"


def test_registry_names_are_unique_and_a_preferred_one_is_cuda_eval_only(monkeypatch):
    for taken in ("auto", "sorted", "triton"):
        with pytest.raises(ValueError, match="taken"):
            moe_dispatch.register(moe_dispatch.Dispatch(taken, print))
    extra = moe_dispatch.Dispatch("extra", print, preferred=True)
    monkeypatch.setitem(moe_dispatch.REGISTRY, "extra", extra)
    x = torch.randn(3, 7, dtype=torch.float64)
    assert moe_dispatch.select(_moe(False), x) == "sorted"  # CPU
    assert "extra" in moe_dispatch.dispatch_names()


def test_a_forced_dispatch_that_cannot_run_names_the_reason():
    moe = _moe(True, dropout=0.5)
    moe.dispatch = "triton"
    with pytest.raises(ValueError, match="MoE dispatch 'triton' cannot run this call: it has no"):
        moe(torch.randn(3, 7, dtype=torch.float64))
