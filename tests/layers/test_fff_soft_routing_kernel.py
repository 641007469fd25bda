"""The C++ soft routing kernels (``fastff.layers.kernels.cpu_soft_routing``) against the torch-op
path of the fused soft forward: the kernel ops alone, whole training steps through ``FFF``
(``soft_implementation`` "fused" vs "fused_torch" vs "composite"), finite differences, and the
fallback when the kernel is disabled or not built."""

from __future__ import annotations

import logging

import pytest
import torch
from test_fff_soft_fused import _assert_same_step, _step
from torch import nn

from fastff.layers import FFF
from fastff.layers import fff_soft_fused as fused
from fastff.layers.kernels import cpu_build, cpu_soft_routing

IN, OUT = 9, 4
TOLERANCE = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
}


KERNEL_ENTRY_POINTS = {
    "forward": "forward",  # the routing alone (other activations, bfloat16 layers)
    "backward": "backward",
    "train_step": "forward",  # the whole ReLU step; its backward runs in C++, uncounted
}


class KernelCalls(dict):
    """Counts of the forward and backward calls into the kernel (routing alone or whole step);
    ``by_name`` counts them per entry point of ``cpu_soft_routing``."""

    def __init__(self) -> None:
        super().__init__(forward=0, backward=0)
        self.by_name: dict[str, int] = {}


@pytest.fixture
def kernel_calls(fused_kernel, monkeypatch: pytest.MonkeyPatch) -> KernelCalls:
    """The kernel is loaded; counts the calls into it."""
    calls = KernelCalls()
    for name, direction in KERNEL_ENTRY_POINTS.items():
        original = getattr(cpu_soft_routing, name)

        def counted(*args, _original=original, _name=name, _direction=direction, **kwargs):
            calls[_direction] += 1
            calls.by_name[_name] = calls.by_name.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(cpu_soft_routing, name, counted)
    return calls


def _logits(batch: int, depth: int, dtype: torch.dtype) -> torch.Tensor:
    """Logits (B, N) with every regime: small, beyond the entropy clamp, huge, exact zeros."""
    generator = torch.Generator().manual_seed(depth)
    logits = 4 * torch.randn(batch, 2**depth - 1, generator=generator, dtype=torch.float64)
    logits[0] = 0.0
    logits[1, ::2] = 20.0
    logits[2, ::3] = -60.0
    return logits.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_swap", [False, True])
@pytest.mark.parametrize("depth", range(1, 9))
def test_kernel_ops_equal_the_torch_ops(fused_kernel, depth, with_swap, dtype):
    batch = 131  # several row blocks, the last one partial
    logits = _logits(batch, depth, dtype)
    swap = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    swap = swap if with_swap else None
    tolerance = TOLERANCE[dtype]

    mixture, entropy = cpu_soft_routing.forward(logits, swap, depth)
    expected_mixture, expected_entropy = fused._routing_forward(logits, swap, depth)
    assert mixture.dtype == entropy.dtype == dtype
    torch.testing.assert_close(mixture, expected_mixture, **tolerance)
    torch.testing.assert_close(entropy, expected_entropy, **tolerance)

    leaf_grad = torch.randn(batch, 2**depth, dtype=dtype)
    grad_entropy = torch.randn(2**depth - 1, dtype=dtype)
    for leaf, ent in [(leaf_grad, grad_entropy), (leaf_grad, None), (None, grad_entropy)]:
        grad = cpu_soft_routing.backward(logits, swap, leaf, mixture, ent, depth)
        expected = fused._routing_backward(
            logits, swap, None if leaf is None else leaf.clone(), expected_mixture, ent, depth
        )
        torch.testing.assert_close(grad, expected, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("loss", ["both", "output", "aux"])
@pytest.mark.parametrize("leak", [0.0, 0.4])
@pytest.mark.parametrize("depth", range(1, 9))
def test_kernel_step_equals_torch_routing(kernel_calls, depth, leak, loss, dtype):
    torch.manual_seed(depth)
    fff = FFF(IN, OUT, 2, depth, region_leak=leak, hardening=2.5).to(dtype).train()
    x = 3 * torch.randn(70, IN, dtype=dtype)
    with_kernel = _step(fff, x, "fused", loss=loss)
    assert kernel_calls.by_name == {"train_step": 1}  # ReLU: the whole step
    tolerance = TOLERANCE[dtype] if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    _assert_same_step(with_kernel, _step(fff, x, "fused_torch", loss=loss), **tolerance)
    _assert_same_step(with_kernel, _step(fff, x, "composite", loss=loss), **tolerance)
    assert kernel_calls.by_name == {"train_step": 1}  # neither of them used it


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("activation", ["gelu", "tanh"])
def test_kernel_step_with_other_activations(kernel_calls, activation, dtype):
    torch.manual_seed(4)
    fff = FFF(IN, OUT, 3, 4, activation=activation, region_leak=0.2, hardening=1.5)
    fff = fff.to(dtype).train()
    x = 2 * torch.randn(40, IN, dtype=dtype)
    with_kernel = _step(fff, x, "fused")
    assert kernel_calls.by_name == {"forward": 1, "backward": 1}  # the routing alone
    tolerance = TOLERANCE[dtype] if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    _assert_same_step(with_kernel, _step(fff, x, "fused_torch"), **tolerance)


def test_frozen_tree_without_input_gradient_skips_the_routing_backward(kernel_calls):
    fff = FFF(IN, OUT, 2, 3, "gelu", hardening=1.0, frozen_tree=True).double().train()
    y = fff(torch.randn(5, IN, dtype=torch.float64))
    (y.sum() + fff.aux_loss).backward()
    assert kernel_calls.by_name == {"forward": 1}
    assert fff.w1s.grad is not None and fff.node_weights.grad is None


@pytest.mark.parametrize("needs_input_grad", [False, True])
def test_whole_step_computes_only_the_gradients_asked_for(kernel_calls, needs_input_grad):
    torch.manual_seed(3)
    fff = FFF(IN, OUT, 2, 3, hardening=1.0, frozen_tree=True).double().train()
    x = torch.randn(5, IN, dtype=torch.float64, requires_grad=needs_input_grad)
    y = fff(x)
    (y.sum() + fff.aux_loss).backward()
    assert kernel_calls.by_name == {"train_step": 1}
    assert fff.node_weights.grad is None and fff.node_biases.grad is None
    assert (x.grad is not None) == needs_input_grad
    reference = FFF(IN, OUT, 2, 3, hardening=1.0, frozen_tree=True).double().train()
    reference.load_state_dict(fff.state_dict())
    reference.soft_implementation = "composite"
    x_reference = x.detach().clone().requires_grad_(needs_input_grad)
    (reference(x_reference).sum() + reference.aux_loss).backward()
    for name in ("w1s", "b1s", "w2s", "b2s"):
        torch.testing.assert_close(
            getattr(fff, name).grad, getattr(reference, name).grad, rtol=1e-10, atol=1e-12
        )
    if needs_input_grad:
        torch.testing.assert_close(x.grad, x_reference.grad, rtol=1e-10, atol=1e-12)


def test_low_precision_layers_route_in_float32_with_the_kernel(kernel_calls):
    torch.manual_seed(2)
    fff = FFF(IN, OUT, 4, 4, hardening=1.0).to(torch.bfloat16).train()
    x = torch.randn(32, IN, dtype=torch.bfloat16)
    with_kernel = _step(fff, x, "fused")
    assert kernel_calls.by_name == {"forward": 1, "backward": 1}  # float32 routing only
    _assert_same_step(with_kernel, _step(fff, x, "fused_torch"), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("with_swap", [False, True])
def test_kernel_path_passes_gradcheck(kernel_calls, with_swap, activation):
    """Finite differences through the kernel paths: the whole ReLU step (y and the hardening
    loss) and, for GELU, the fused function with the kernel routing (y and every node's
    entropy)."""
    torch.manual_seed(1)
    depth, leaf, n = 4, 2, 7
    nodes, leaves = 2**depth - 1, 2**depth

    def parameter(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    w1s = (torch.randn(leaves, leaf, IN, dtype=torch.float64) * 0.3).transpose(1, 2)
    b1s = torch.sign(torch.randn(leaves, leaf, dtype=torch.float64)) * 5  # away from ReLU kinks
    swap = torch.rand(n, nodes) < 0.5 if with_swap else None
    inputs = (
        parameter(n, IN), parameter(nodes, IN), parameter(nodes, 1), w1s.requires_grad_(True),
        b1s.requires_grad_(True), parameter(leaves, leaf, OUT), parameter(leaves, OUT),
    )  # fmt: skip

    def function(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if activation == "relu":
            return fused.soft_fff(*tensors, nn.ReLU(), swap, routing_kernel=True, aux_scale=0.7)
        return fused.SoftFFFFunction.apply(*tensors, nn.GELU(), swap, True)

    assert torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-5)
    entry_point = "train_step" if activation == "relu" else "backward"
    assert kernel_calls.by_name[entry_point] > 0


def _uses_kernel(fff: FFF, x: torch.Tensor, calls: dict[str, int]) -> bool:
    before = dict(calls)
    y = fff(x)
    (y.sum() + fff.aux_loss).backward()
    return calls != before


@pytest.fixture
def undecided_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """This process as if no FFF had run yet, with an empty extensions cache; restored after."""
    monkeypatch.setattr(cpu_build, "_loaded", None)
    monkeypatch.setattr(cpu_build, "_refusal", None)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    return tmp_path


def test_fused_torch_never_uses_the_kernel(kernel_calls):
    fff = FFF(IN, OUT, 2, 3, hardening=1.0).train()
    fff.soft_implementation = "fused_torch"
    assert not _uses_kernel(fff, torch.randn(6, IN), kernel_calls)
    fff.soft_implementation = "fused"
    assert _uses_kernel(fff, torch.randn(6, IN), kernel_calls)


def test_disabled_kernel_falls_back_to_torch_ops(kernel_calls, undecided_kernel, monkeypatch):
    monkeypatch.setenv(cpu_build.DISABLE_ENV, "0")
    fff = FFF(IN, OUT, 2, 3, hardening=1.0).train()
    assert not _uses_kernel(fff, torch.randn(6, IN), kernel_calls)
    assert "FASTFF_FUSED_CPU=0" in cpu_build.status().reason


def test_missing_build_falls_back_builds_nothing_and_warns_once(
    kernel_calls, undecided_kernel, caplog
):
    fff = FFF(IN, OUT, 2, 3, hardening=1.0).train()
    x = torch.randn(6, IN, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="fastff.kernels"):
        for _ in range(3):
            assert not _uses_kernel(fff.double(), x, kernel_calls)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "kernels build" in warnings[0]
    assert list(undecided_kernel.iterdir()) == []  # nothing was built or even started


def test_kernel_results_do_not_depend_on_the_thread_count(fused_kernel):
    logits, threads = _logits(1000, 6, torch.float32), torch.get_num_threads()
    swap = torch.rand(logits.shape) < 0.3
    leaf_grad, grad_entropy = torch.randn(1000, 64), torch.randn(63)
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            mixture, entropy = cpu_soft_routing.forward(logits, swap, 6)
            grad = cpu_soft_routing.backward(logits, swap, leaf_grad, mixture, grad_entropy, 6)
            results.append((mixture, entropy, grad))
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


def test_kernel_ops_refuse_bad_inputs(fused_kernel):
    logits = torch.randn(4, 7)
    with pytest.raises(RuntimeError, match="2\\*\\*depth - 1"):
        cpu_soft_routing.forward(logits, None, 2)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        cpu_soft_routing.forward(logits.half(), None, 3)
    with pytest.raises(RuntimeError, match="swap"):
        cpu_soft_routing.forward(logits, torch.zeros(4, 7), 3)
    assert not cpu_soft_routing.usable(logits.half())


def test_whole_step_refuses_double_backward_clearly(fused_kernel):
    """The fused step's backward is hand-written (no graph of its own): create_graph=True gets
    one error naming the way out, and the composite path computes the double backward."""
    torch.manual_seed(0)
    fff = FFF(IN, OUT, 2, 3, hardening=1.0).double().train()
    x = torch.randn(4, IN, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="soft_implementation to 'composite'"):
        torch.autograd.grad(fff(x).sum() + fff.aux_loss, x, create_graph=True)
    fff.soft_implementation = "composite"
    (grad,) = torch.autograd.grad(fff(x).sum() + fff.aux_loss, x, create_graph=True)
    assert grad.requires_grad


def test_whole_step_runs_under_inference_mode(kernel_calls):
    """The soft eval path (eval_path="soft") under torch.inference_mode, where the op's autograd
    kernel is skipped, gives the composite path's output."""
    torch.manual_seed(5)
    fff = FFF(IN, OUT, 2, 4, hardening=1.0).double().eval()
    fff.eval_path = "soft"
    x = torch.randn(11, IN, dtype=torch.float64)
    with torch.inference_mode():
        fused_y = fff(x)
    assert kernel_calls.by_name == {"train_step": 1}
    fff.soft_implementation = "composite"
    with torch.inference_mode():
        composite_y = fff(x)
    torch.testing.assert_close(fused_y, composite_y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("leaf_width", "depth"), [(1, 3), (3, 3), (16, 3), (4, 5), (2, 6)])
def test_whole_step_equals_composite_for_leaf_widths(kernel_calls, leaf_width, depth, dtype):
    """The whole step's leaf passes at several leaf widths, input gradient included: per-leaf
    loops (3 leaves, or fewer leaves than a vector holds) and the vectorised rounds that spread
    mixture weights and sum per leaf (power-of-two widths, 32 or 64 leaves); batch 150 spans
    several row blocks of the bias sums."""
    torch.manual_seed(leaf_width)
    fff = FFF(IN, OUT, leaf_width, depth, hardening=1.5).to(dtype).train()
    x = torch.randn(150, IN, dtype=dtype)
    with_kernel = _step(fff, x, "fused")
    assert kernel_calls.by_name == {"train_step": 1}
    tolerance = TOLERANCE[dtype] if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    _assert_same_step(with_kernel, _step(fff, x, "composite"), **tolerance)
