"""Every FFF hard-inference strategy equals the per-sample oracle, on every shape and edge case."""

from __future__ import annotations

import pytest
import torch
from oracles import fff_hard_oracle, fff_leaf_oracle
from torch import nn

from fastff.layers import FFF, fff_fast

TORCH_STRATEGIES = ("plain", "grouped")
ALL_STRATEGIES = (*TORCH_STRATEGIES, "fused_cpu", "auto")


@pytest.fixture(scope="session")
def fused_kernel() -> None:
    """Builds the C++ kernel once per session (cached across sessions); skips if impossible."""
    if not fff_fast.load_fused_kernel():
        pytest.skip(f"fused C++ kernel unavailable: {fff_fast.fused_kernel_state()[1]}")


def _needs_kernel(strategy: str, request: pytest.FixtureRequest) -> None:
    if strategy == "fused_cpu":
        request.getfixturevalue("fused_kernel")


def _layer(in_f, out_f, leaf, depth, dtype=torch.float64, activation="relu", seed=0) -> FFF:
    torch.manual_seed(seed)
    return FFF(in_f, out_f, leaf, depth, activation=activation).to(dtype).eval()


def _run(layer: FFF, x: torch.Tensor, strategy: str) -> torch.Tensor:
    layer.hard_strategy = strategy
    with torch.no_grad():
        return layer(x)


SHAPES = [
    # (in, out, leaf width, depth, input shape without the feature dim)
    (6, 3, 4, 2, (1,)),  # batch 1
    (9, 5, 3, 3, (7,)),  # odd batch, leaf width outside the specialised set
    (16, 33, 8, 4, (33,)),  # output width with a remainder past 32
    (12, 4, 2, 3, (3, 5)),  # (B, N, D) input
    (10, 7, 5, 0, (11,)),  # depth 0: a single leaf, no nodes
    (8, 2, 1, 5, (50,)),  # leaf width 1
    (20, 64, 70, 1, (9,)),  # leaf width past the kernel's 64-unit block
    (40, 16, 32, 2, (260,)),  # many inputs per leaf: auto groups or fuses
]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize(("in_f", "out_f", "leaf", "depth", "batch"), SHAPES)
def test_strategy_equals_oracle(request, strategy, in_f, out_f, leaf, depth, batch):
    _needs_kernel(strategy, request)
    layer = _layer(in_f, out_f, leaf, depth)
    x = torch.randn(*batch, in_f, dtype=torch.float64)
    y = _run(layer, x, strategy)
    assert y.shape == (*batch, out_f)
    torch.testing.assert_close(y, fff_hard_oracle(layer, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_empty_batch(request, strategy):
    _needs_kernel(strategy, request)
    layer = _layer(5, 3, 4, 3)
    for shape in ((0, 5), (2, 0, 5)):
        y = _run(layer, torch.zeros(shape, dtype=torch.float64), strategy)
        assert y.shape == (*shape[:-1], 3)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_logit_exactly_zero_goes_right(request, strategy):
    _needs_kernel(strategy, request)
    layer = _layer(4, 3, 2, 3)
    with torch.no_grad():
        layer.node_biases.zero_()
        layer.node_biases[2] = -1.0  # the root's right child sends x = 0 left
    x = torch.zeros(5, 4, dtype=torch.float64)  # every logit equals the node's bias
    # root: 0 -> right (node 2); node 2: -1 -> left (node 5); node 5: 0 -> right (leaf 12 - 7 = 5)
    assert fff_leaf_oracle(layer, x).tolist() == [5] * 5
    expected = layer.activation(layer.b1s[5]) @ layer.w2s[5] + layer.b2s[5]
    torch.testing.assert_close(_run(layer, x, strategy), expected.expand(5, 3))


@pytest.mark.parametrize("leaf", (1, 2, 4, 8, 16, 32))
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_float32_matches_oracle_up_to_near_ties(request, strategy, leaf):
    """In float32 a summation order may flip a logit within rounding of 0; nothing else differs."""
    _needs_kernel(strategy, request)
    layer = _layer(53, 40, leaf, 5, dtype=torch.float32)
    x = torch.randn(300, 53)
    y = _run(layer, x, strategy)
    expected = fff_hard_oracle(layer, x)
    differs = ~torch.isclose(y, expected, rtol=1e-4, atol=1e-5).all(dim=1)
    if differs.any():
        x64 = layer.double()
        margins = _route_margins(x64, x[differs].double())
        assert (margins < 1e-4).all(), f"rows differ without a near-tie: margins {margins}"
    assert differs.sum() <= 2


def _route_margins(layer: FFF, x: torch.Tensor) -> torch.Tensor:
    """Smallest |node logit| on each input's oracle path, (B, D) -> (B,)."""
    margins = []
    for sample in x:
        node, smallest = 0, float("inf")
        for _ in range(layer.depth):
            logit = float(layer.node_weights[node] @ sample + layer.node_biases[node, 0])
            smallest = min(smallest, abs(logit))
            node = 2 * node + 2 if logit >= 0 else 2 * node + 1
        margins.append(smallest)
    return torch.tensor(margins)


KERNEL_ACTIVATIONS = [
    "relu",
    "gelu",
    "gelu_tanh",
    "silu",
    "tanh",
    "sigmoid",
    "identity",
    nn.LeakyReLU(0.2),
]


@pytest.mark.parametrize("activation", KERNEL_ACTIVATIONS, ids=str)
def test_fused_kernel_activations(fused_kernel, activation):
    layer = _layer(10, 6, 5, 3, activation=activation)
    x = torch.randn(40, 10, dtype=torch.float64)
    torch.testing.assert_close(_run(layer, x, "fused_cpu"), fff_hard_oracle(layer, x))


def test_unsupported_activation_falls_back_and_refuses_fused(fused_kernel):
    layer = _layer(10, 6, 5, 3, activation="elu")
    x = torch.randn(40, 10, dtype=torch.float64)
    with torch.no_grad():
        assert fff_fast.select_strategy(layer, x) != "fused_cpu"
        torch.testing.assert_close(_run(layer, x, "auto"), fff_hard_oracle(layer, x))
        with pytest.raises(ValueError, match="fused_cpu"):
            fff_fast.hard_forward_2d(layer, x, "fused_cpu")


def test_auto_selection(fused_kernel):
    layer = _layer(8, 4, 4, 3, dtype=torch.float32)
    few, many = torch.randn(3, 8), torch.randn(32 * 8, 8)
    with torch.no_grad():
        assert fff_fast.select_strategy(layer, few) == "fused_cpu"
        assert fff_fast.select_strategy(layer.to(torch.bfloat16), few.bfloat16()) == "plain"
        assert fff_fast.select_strategy(layer, many.bfloat16()) == "grouped"
    layer.float()
    # With gradients required the kernel (no autograd) is never chosen.
    assert fff_fast.select_strategy(layer, few) == "plain"


@pytest.mark.parametrize("strategy", TORCH_STRATEGIES)
def test_torch_strategies_support_autograd(strategy):
    layer = _layer(6, 3, 4, 2)
    x = torch.randn(70, 6, dtype=torch.float64, requires_grad=True)
    fff_fast.hard_forward_2d(layer, x, strategy).square().sum().backward()
    leaves = fff_leaf_oracle(layer, x.detach())
    # Only reached leaves get gradient; inputs always do.
    reached = torch.zeros(layer.n_leaves, dtype=torch.bool)
    reached[leaves] = True
    assert (layer.w1s.grad.flatten(1).abs().sum(1) > 0).eq(reached).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("strategy", ("plain", "grouped"))
def test_bfloat16_close_to_float32(strategy):
    layer = _layer(32, 8, 8, 3, dtype=torch.float32)
    layer.node_biases.data += 10.0  # margins far from 0: bf16 routes like float32
    x = torch.randn(64, 32)
    expected = _run(layer, x, "plain")
    y = _run(layer.to(torch.bfloat16), x.bfloat16(), strategy)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "strategy", (pytest.param("plain", marks=pytest.mark.slow), "grouped", "fused_cpu")
)
def test_temporary_memory_is_bounded(request, strategy):
    """4,096 inputs of width 768 into leaves of width 256: no per-input copy of leaf weights."""
    _needs_kernel(strategy, request)
    layer = _layer(768, 16, 256, 2, dtype=torch.float32)
    x = torch.randn(4096, 768)
    with (
        torch.no_grad(),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile,
    ):
        fff_fast.hard_forward_2d(layer, x, strategy)
    largest = max((event.cpu_memory_usage for event in profile.events()), default=0)
    per_input_copy = 4096 * 768 * 256 * 4  # 3.2 GB
    assert largest < 128 * 2**20 < per_input_copy


def test_forced_strategy_validation():
    layer = _layer(4, 2, 2, 1)
    layer.hard_strategy = "fastest"
    with pytest.raises(ValueError, match="hard strategy must be one of"):
        layer(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="fused_cpu"), torch.enable_grad():
        fff_fast.hard_forward_2d(layer, torch.randn(3, 4, dtype=torch.float64), "fused_cpu")


def test_disabled_kernel_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setenv(fff_fast.DISABLE_ENV, "0")
    kernel = fff_fast._FusedKernel()
    with pytest.warns(RuntimeWarning, match="FASTFF_FUSED_CPU=0"):
        assert not kernel.ready_without_waiting()
    assert kernel.state == "failed"
    assert not kernel.ready_without_waiting()  # no second warning, no build


def test_background_build_makes_kernel_ready_without_blocking(fused_kernel):
    """The first auto call starts the (cached) build in another process and does not wait."""
    kernel = fff_fast._FusedKernel()
    assert not kernel.ready_without_waiting()
    assert kernel.state == "building"
    assert kernel._builder.wait(timeout=300) == 0
    assert kernel.ready_without_waiting()
    assert kernel.state == "ready"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strategy", ("plain", "grouped", "auto"))
def test_cuda_strategies_equal_oracle(strategy):
    layer = _layer(24, 8, 8, 4)
    x = torch.randn(500, 24, dtype=torch.float64)
    expected = fff_hard_oracle(layer, x)
    y = _run(layer.cuda(), x.cuda(), strategy)
    torch.testing.assert_close(y.cpu(), expected)
