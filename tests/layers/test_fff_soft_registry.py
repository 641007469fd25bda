"""FFF's soft-implementation registry (``fastff.layers.fff_soft_registry``): every entry can be
forced and computes the oracle's mixture, each says why it cannot run a call, ``auto`` picks by
the documented rule, and ``"fused"`` is an alias of ``auto``."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from oracles import fff_soft_oracle
from torch import nn

from fastff.layers import FFF, fff_soft_registry
from fastff.layers.kernels import cpu_build

IN, OUT = 7, 3


def _fff(depth: int = 3, **kwargs) -> FFF:
    torch.manual_seed(0)
    return FFF(IN, OUT, 2, depth, hardening=1.5, **kwargs).double().train()


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the implementations whose forward ran, in call order."""
    calls: list[str] = []
    for name, entry in list(fff_soft_registry.REGISTRY.items()):

        def spy(layer, x2d, _name=name, _forward=entry.forward):
            calls.append(_name)
            return _forward(layer, x2d)

        monkeypatch.setitem(
            fff_soft_registry.REGISTRY, name, dataclasses.replace(entry, forward=spy)
        )
    return calls


@pytest.fixture
def kernel_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if the C++ kernel had been refused by FASTFF_FUSED_CPU=0; restored after."""
    monkeypatch.setattr(cpu_build, "_loaded", None)
    monkeypatch.setattr(cpu_build, "_refusal", None)
    monkeypatch.setenv(cpu_build.DISABLE_ENV, "0")


def test_names_default_and_alias():
    assert fff_soft_registry.implementation_names() == (
        "auto", "fused_cpu", "fused_torch", "composite", "fused",
    )  # fmt: skip
    layer = _fff()
    assert layer.soft_implementation == "auto"
    layer.soft_implementation = "fused"
    assert layer.soft_implementation == "auto"
    with pytest.raises(ValueError, match=r"soft_implementation must be one of \['auto'"):
        layer.soft_implementation = "fast"
    for taken in ("auto", "fused", "composite"):
        with pytest.raises(ValueError, match="taken"):
            fff_soft_registry.register(fff_soft_registry.SoftImplementation(taken, print))


@pytest.mark.parametrize("name", list(fff_soft_registry.REGISTRY))
def test_each_implementation_is_selectable_and_equals_the_oracle(name, ran, fused_kernel):
    layer = _fff()
    layer.soft_implementation = name
    x = torch.randn(2, 5, IN, dtype=torch.float64)
    y = layer(x)
    assert ran == [name]
    expected, entropies = fff_soft_oracle(layer, x)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.node_entropy, entropies.mean(0), rtol=1e-10, atol=1e-12)
    expected_aux = 1.5 * entropies.mean()
    torch.testing.assert_close(layer.aux_loss, expected_aux, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _fff(depth=0), "depth 0"),
        (lambda: _fff(dropout=0.2), "dropout"),
        (lambda: _fff(activation=nn.PReLU()), "PReLU has parameters"),
        (lambda: _fff(activation=nn.LeakyReLU(inplace=True)), "in-place activation LeakyReLU"),
    ],
)
def test_fused_implementations_say_why_they_cannot_run(make, reason, ran):
    layer = make()
    x = torch.randn(4, IN, dtype=torch.float64)
    for name in ("fused_cpu", "fused_torch"):
        assert reason in fff_soft_registry.REGISTRY[name].unsupported(layer, x)
        layer.soft_implementation = name
        with pytest.raises(ValueError, match=f"soft_implementation '{name}' cannot run") as error:
            layer(x)
        assert reason in str(error.value) and "\n" not in str(error.value)
    assert ran == []
    layer.soft_implementation = "auto"
    assert fff_soft_registry.select(layer, x) == "composite"
    layer(x)
    assert ran == ["composite"]


def test_dropout_blocks_the_fused_path_in_training_only(fused_kernel):
    layer = _fff(dropout=0.2)
    x = torch.randn(4, IN, dtype=torch.float64)
    assert fff_soft_registry.select(layer, x) == "composite"
    assert fff_soft_registry.select(layer.eval(), x) == "fused_cpu"


def test_fused_cpu_needs_cpu_inputs_and_no_compile(monkeypatch: pytest.MonkeyPatch, fused_kernel):
    fused_cpu = fff_soft_registry.REGISTRY["fused_cpu"]
    layer = FFF(IN, OUT, 2, 3, device="meta").train()
    x = torch.empty(4, IN, device="meta")
    assert "needs CPU" in fused_cpu.unsupported(layer, x)
    assert fff_soft_registry.select(layer, x) == "fused_torch"
    layer, x = _fff(), torch.randn(4, IN, dtype=torch.float64)
    assert fused_cpu.unsupported(layer, x) is None
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert "torch.compile" in fused_cpu.unsupported(layer, x)
    assert fff_soft_registry.select(layer, x) == "fused_torch"


def test_fused_cpu_without_the_kernel_names_the_reason(kernel_disabled, ran):
    layer, x = _fff(), torch.randn(4, IN, dtype=torch.float64)
    assert "FASTFF_FUSED_CPU=0" in fff_soft_registry.REGISTRY["fused_cpu"].unsupported(layer, x)
    layer(x)  # auto
    assert ran == ["fused_torch"]
    layer.soft_implementation = "fused_cpu"
    with pytest.raises(ValueError, match=r"fused_cpu' cannot run this call: .*FASTFF_FUSED_CPU=0"):
        layer(x)


def test_auto_and_its_alias_run_the_kernel_where_it_is_loaded(ran, fused_kernel):
    layer, x = _fff(), torch.randn(4, IN, dtype=torch.float64)
    layer(x)
    layer.soft_implementation = "fused"
    layer(x.float().double())
    assert ran == ["fused_cpu", "fused_cpu"]


def test_auto_traces_the_composite_path_under_jit_trace(ran, fused_kernel):
    layer, x = _fff(), torch.randn(4, IN, dtype=torch.float64)
    traced = torch.jit.trace(layer, (x,), check_trace=False)
    assert ran == ["composite"]
    torch.testing.assert_close(traced(x), fff_soft_oracle(layer, x)[0], rtol=1e-10, atol=1e-12)
    layer.soft_implementation = "fused_torch"
    with pytest.raises(ValueError, match=r"torch\.jit\.trace"):
        torch.jit.trace(layer, (x,), check_trace=False)
