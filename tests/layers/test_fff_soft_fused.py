"""The fused soft forward (one autograd function with a hand-written backward) against standard
autograd over the composite soft path, against finite differences (gradcheck) and against the
reference package's training forward: outputs, entropies and every gradient."""

from __future__ import annotations

import itertools

import fastfeedforward
import pytest
import torch
from torch import nn

from fastff.layers import FFF
from fastff.layers.fff_soft_fused import SoftFFFFunction, fusable

IN, OUT = 9, 4


def _step(fff: FFF, x: torch.Tensor, implementation: str, *, seed: int = 5, loss: str = "both"):
    """One soft forward + backward; returns the output, node entropies, aux loss and gradients."""
    fff.soft_implementation = implementation
    fff.zero_grad(set_to_none=True)
    inputs = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = fff(inputs)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    total = {"both": (y * weights).sum() + fff.aux_loss, "output": (y * weights).sum()}.get(
        loss, fff.aux_loss
    )
    total.backward()
    grads = {name: p.grad for name, p in fff.named_parameters() if p.grad is not None}
    grads["x"] = inputs.grad
    return y.detach(), fff.node_entropy, fff.aux_loss.detach(), grads


def _assert_same_step(a, b, **tolerance):
    for left, right in zip(a[:3], b[:3], strict=True):
        torch.testing.assert_close(left, right, **tolerance)
    assert a[3].keys() == b[3].keys()
    for name in a[3]:
        if a[3][name] is None or b[3][name] is None:
            assert a[3][name] is None and b[3][name] is None, name
        else:
            torch.testing.assert_close(a[3][name], b[3][name], **tolerance, msg=name)


CONFIGS = list(
    itertools.product(
        [1, 2, 5],  # depth
        ["relu", "gelu", "tanh"],
        [0.0, 0.4],  # region leak
        ["mean", "sum"],
        [False, True],  # frozen tree
    )
)


@pytest.mark.parametrize(("depth", "activation", "leak", "reduction", "frozen"), CONFIGS)
def test_fused_equals_composite_autograd(depth, activation, leak, reduction, frozen):
    torch.manual_seed(depth)
    fff = FFF(IN, OUT, 3, depth, activation=activation, region_leak=leak, hardening=2.5,
              hardening_reduction=reduction, frozen_tree=frozen).double().train()  # fmt: skip
    x = 3 * torch.randn(2, 6, IN, dtype=torch.float64)
    fused, composite = _step(fff, x, "fused"), _step(fff, x, "composite")
    _assert_same_step(fused, composite, rtol=1e-10, atol=1e-12)
    assert ("node_weights" in fused[3]) is not frozen


@pytest.mark.parametrize("loss", ["output", "aux"])
def test_fused_gradients_of_one_output_alone(loss):
    torch.manual_seed(0)
    fff = FFF(IN, OUT, 2, 4, hardening=1.5).double().train()
    x = torch.randn(11, IN, dtype=torch.float64)
    fused = _step(fff, x, "fused", loss=loss)
    composite = _step(fff, x, "composite", loss=loss)
    _assert_same_step(fused, composite, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("with_swap", [False, True])
def test_fused_function_passes_gradcheck(activation, with_swap):
    """Finite differences: independent of both implementations' backward formulas."""
    torch.manual_seed(1)
    depth, leaf, n = 3, 2, 5
    nodes, leaves = 2**depth - 1, 2**depth

    def parameter(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    # ReLU kinks are not differentiable: keep the hidden pre-activations away from zero
    w1s = (torch.randn(leaves, leaf, IN, dtype=torch.float64) * 0.3).transpose(1, 2)
    x = parameter(n, IN)
    with torch.no_grad():
        b1s = torch.sign(torch.randn(leaves, leaf, dtype=torch.float64)) * 5
    swap = torch.rand(n, nodes) < 0.5 if with_swap else None
    act = nn.ReLU() if activation == "relu" else nn.GELU()
    inputs = (
        x, parameter(nodes, IN), parameter(nodes, 1), w1s.requires_grad_(True),
        b1s.requires_grad_(True), parameter(leaves, leaf, OUT), parameter(leaves, OUT),
    )  # fmt: skip

    def function(*tensors):  # the torch-op function, with the per-node entropies' gradients
        return SoftFFFFunction.apply(*tensors, act, swap, False)

    assert torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-5)


def test_fused_in_float32_agrees_with_the_reference_package_gradients():
    torch.manual_seed(3)
    reference = fastfeedforward.FFF(IN, 4, OUT, 5)
    ours = FFF.from_reference(reference, hardening=2.0).train()
    x = torch.randn(64, IN)
    y, entropies = reference.training_forward(x, return_entropies=True)
    ((y * y).sum() + 2.0 * entropies.mean()).backward()
    ours.soft_implementation = "fused"
    mine = ours(x)
    ((mine * mine).sum() + ours.aux_loss).backward()
    torch.testing.assert_close(mine, y, rtol=1e-5, atol=1e-5)
    for name, parameter in reference.named_parameters():
        if parameter.grad is not None:
            ours_grad = getattr(ours, name).grad
            torch.testing.assert_close(ours_grad, parameter.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_dropout_parametric_and_inplace_activations_take_the_composite_path():
    relu_inplace, prelu = nn.ReLU(inplace=True), nn.PReLU()
    assert fusable(relu_inplace, False, 3) and fusable(nn.GELU(), False, 3)
    assert not fusable(nn.GELU(), True, 3)  # dropout in training
    assert not fusable(prelu, False, 3)  # its weight would get no gradient
    assert not fusable(nn.LeakyReLU(inplace=True), False, 3)  # overwrites its input
    assert not fusable(nn.ReLU(), False, 0)
    fff = FFF(IN, OUT, 2, 3, activation=prelu).train()
    fff(torch.randn(5, IN)).sum().backward()
    assert prelu.weight.grad is not None and prelu.weight.grad.abs().sum() > 0


def test_dropout_draws_are_unchanged_by_the_switch():
    fff = FFF(IN, OUT, 3, 3, dropout=0.3, hardening=1.0).double().train()
    x = torch.randn(7, IN, dtype=torch.float64)
    _assert_same_step(_step(fff, x, "fused"), _step(fff, x, "composite"), rtol=0, atol=0)


def test_inplace_relu_fused_equals_composite():
    fff = FFF(IN, OUT, 3, 4, activation=nn.ReLU(inplace=True), hardening=1.0).double().train()
    x = torch.randn(13, IN, dtype=torch.float64)
    _assert_same_step(_step(fff, x, "fused"), _step(fff, x, "composite"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_low_precision_matches_composite(dtype):
    torch.manual_seed(2)
    fff = FFF(IN, OUT, 4, 4, hardening=1.0).to(dtype).train()
    x = torch.randn(32, IN, dtype=dtype)
    fused, composite = _step(fff, x, "fused"), _step(fff, x, "composite")
    assert fused[0].dtype == dtype and fused[2].dtype == torch.float32
    _assert_same_step(fused, composite, rtol=0.02, atol=0.02)


def test_soft_implementation_is_checked_and_not_saved():
    fff = FFF(IN, OUT, 2, 2)
    with pytest.raises(ValueError, match="soft_implementation"):
        fff.soft_implementation = "fast"
    fff.soft_implementation = "composite"
    assert "soft_implementation" not in str(list(fff.state_dict()))
    assert FFF(IN, OUT, 2, 2).soft_implementation == "auto"


@pytest.mark.slow
def test_fused_soft_step_compiles_and_matches_eager():
    """Traced code (torch.compile, torch.export) runs the fused function's torch ops, never the
    C++ routing kernel, which has no fake implementation: compiling must work whether or not
    the kernel is built, and give the eager results."""
    torch.manual_seed(4)
    fff = FFF(IN, OUT, 2, 4, hardening=1.0).train()
    x = torch.randn(16, IN)
    eager_y = fff(x)
    eager_aux = fff.aux_loss.detach()
    compiled = torch.compile(fff, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    torch.testing.assert_close(y, eager_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fff.aux_loss.detach(), eager_aux, rtol=1e-5, atol=1e-6)
    (y.sum() + fff.aux_loss).backward()
    assert fff.node_weights.grad is not None and fff.w1s.grad is not None
