"""The ``triton`` hard strategy (and MoE's ``triton`` dispatch) against ``plain`` and a per-row
float64 oracle.

Without CUDA these run on CPU tensors in Triton's interpreter: tests/conftest.py sets
``TRITON_INTERPRET=1`` before fastff's kernels are first imported. With CUDA they run the compiled
kernels on the GPU. They skip only where triton cannot be imported. Sizes are tiny: the
interpreter runs every program one after another in numpy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from oracles import fff_hard_oracle, fff_leaf_oracle, moe_gates_oracle
from torch import nn

from fastff.layers import FFF, MoE, kernels, moe_dispatch
from fastff.layers.kernels import plain

# triton is not a fastff dependency (pyproject.toml): it comes with CUDA builds of torch only, so
# these tests skip where it is not installed.
triton = pytest.importorskip("triton")

pytestmark = pytest.mark.triton
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REPO = Path(__file__).resolve().parents[2]
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _layer(in_f, out_f, leaf, depth, dtype=torch.float32, activation="relu", seed=0) -> FFF:
    torch.manual_seed(seed)
    layer = FFF(in_f, out_f, leaf, depth, activation=activation)
    with torch.no_grad():  # spread the node biases so that ties are rare at every level
        layer.node_biases.mul_(3.0)
    return layer.to(DEVICE, dtype).eval()


STRATEGIES = ("triton", "triton_grouped")


def _triton(layer: FFF, x: torch.Tensor, strategy: str = "triton") -> torch.Tensor:
    with torch.no_grad():
        return layer.hard_forward(x, strategy=strategy)


def _expected(layer: FFF, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(oracle output, oracle leaves, margins) in float64 on the CPU, from the same values."""
    layer64 = _layer(layer.in_features, layer.out_features, layer.leaf_width, layer.depth)
    layer64 = layer64.to("cpu", torch.float64)
    layer64.activation = layer.activation
    layer64.load_state_dict({k: v.double().cpu() for k, v in layer.state_dict().items()})
    x64 = x.detach().double().cpu()
    return fff_hard_oracle(layer64, x64), fff_leaf_oracle(layer64, x64), _margins(layer64, x64)


def _margins(layer: FFF, x: torch.Tensor) -> torch.Tensor:
    """Smallest |node logit| on each row's path, (..., D) -> (B,) (inf at depth 0)."""
    flat = x.reshape(-1, layer.in_features)
    margins = []
    for sample in flat:
        node, smallest = 0, float("inf")
        for _ in range(layer.depth):
            weight, bias = layer.node_weights[node].detach(), layer.node_biases[node, 0].detach()
            logit = float(weight @ sample + bias)
            smallest = min(smallest, abs(logit))
            node = 2 * node + 2 if logit >= 0 else 2 * node + 1
        margins.append(smallest)
    return torch.tensor(margins)


def _assert_matches(layer: FFF, x: torch.Tensor, y: torch.Tensor) -> None:
    """y equals the float64 oracle (and ``plain`` on float32 copies) wherever no node logit on
    the row's path is within rounding of 0."""
    assert y.shape == (*x.shape[:-1], layer.out_features) and y.dtype == x.dtype
    expected, _, margins = _expected(layer, x)
    clear = margins > 1e-3  # (B,) rows whose route no rounding can change
    assert clear.float().mean() >= 0.9, "the test inputs should be far from ties"
    tol = TOLERANCE[x.dtype]
    flat, expected = y.reshape(-1, layer.out_features), expected.reshape(-1, layer.out_features)
    torch.testing.assert_close(flat[clear].double().cpu(), expected[clear], rtol=tol, atol=tol)
    with torch.no_grad():  # plain on exact float32 copies: float32 sums as the kernel
        layer32 = _layer(layer.in_features, layer.out_features, layer.leaf_width, layer.depth)
        layer32.activation = layer.activation
        layer32.load_state_dict({k: v.float() for k, v in layer.state_dict().items()})
        reference = plain.hard_forward(layer32, x.reshape(-1, layer.in_features).float())
    tol = max(tol, 1e-4)
    torch.testing.assert_close(flat[clear].float(), reference[clear], rtol=tol, atol=tol)


# (depth, leaf width, batch, dtype, in, out): a covering subset of depths 0..8, leaf widths 1, 8
# and 33, batches 0, 1, 7 and 130, float32 and bfloat16; in/out sizes past one block (128) and
# off powers of two
CASES = [
    (0, 1, 7, torch.float32, 5, 3),
    (0, 33, 130, torch.bfloat16, 9, 4),
    (1, 33, 1, torch.bfloat16, 40, 9),
    (2, 8, 130, torch.float32, 12, 17),
    (3, 33, 7, torch.float32, 130, 150),
    (4, 1, 130, torch.bfloat16, 16, 8),
    (5, 8, 0, torch.float32, 7, 3),
    (5, 1, 7, torch.float32, 1, 1),
    (6, 8, 7, torch.bfloat16, 24, 5),
    (7, 1, 1, torch.float32, 8, 2),
    (8, 33, 7, torch.bfloat16, 10, 6),
    (8, 8, 130, torch.float32, 6, 3),
]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("depth", "leaf", "batch", "dtype", "in_f", "out_f"), CASES)
def test_triton_equals_plain_and_oracle(strategy, depth, leaf, batch, dtype, in_f, out_f):
    layer = _layer(in_f, out_f, leaf, depth, dtype)
    torch.manual_seed(1)
    x = torch.randn(batch, in_f, device=DEVICE).to(dtype)
    y = _triton(layer, x, strategy)
    if batch == 0:
        assert y.shape == (0, out_f)
        return
    _assert_matches(layer, x, y)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_non_contiguous_input_and_leading_dims(strategy):
    layer = _layer(20, 7, 8, 4)
    torch.manual_seed(2)
    wide = torch.randn(3, 40, 5, device=DEVICE)
    x = wide[:, ::2, :].transpose(1, 2)  # (3, 5, 20), strides (200, 1, 10)
    assert not x.is_contiguous()
    y = _triton(layer, x, strategy)
    assert y.shape == (3, 5, 7)
    _assert_matches(layer, x, y)
    torch.testing.assert_close(y, _triton(layer, x.contiguous(), strategy), rtol=0, atol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_non_contiguous_parameters(strategy):
    """The kernels read the parameters through their strides (here: w1s stored (L, D, l))."""
    layer = _layer(12, 5, 6, 3)
    with torch.no_grad():
        layer.w1s.data = layer.w1s.data.contiguous()
        layer.w2s.data = layer.w2s.data.transpose(1, 2).contiguous().transpose(1, 2)
    x = torch.randn(9, 12, device=DEVICE)
    _assert_matches(layer, x, _triton(layer, x, strategy))


@pytest.mark.parametrize(
    "activation",
    ["gelu", "gelu_tanh", "silu", "tanh", "sigmoid", "identity", nn.LeakyReLU(0.3)],
)
def test_activations(activation):
    layer = _layer(9, 4, 5, 2, activation=activation)
    x = torch.randn(7, 9, device=DEVICE)
    for strategy in STRATEGIES:
        _assert_matches(layer, x, _triton(layer, x, strategy))


def test_grouped_tiles_holding_many_leaves_and_leaves_over_many_tiles():
    """More rows than one tile per leaf at depth 1, and one row per leaf at depth 7: both ways
    a tile and the leaves can overlap."""
    for depth, batch in ((1, 300), (7, 130)):
        layer = _layer(10, 6, 4, depth)
        x = torch.randn(batch, 10, device=DEVICE)
        _assert_matches(layer, x, _triton(layer, x, "triton_grouped"))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_logit_exactly_zero_goes_right(strategy):
    layer = _layer(4, 3, 2, 3)
    with torch.no_grad():
        layer.node_biases.zero_()
        layer.node_biases[2] = -1.0  # the root's right child sends x = 0 left
    x = torch.zeros(5, 4, device=DEVICE)  # every logit equals the node's bias
    # root: 0 -> right (node 2); node 2: -1 -> left (node 5); node 5: 0 -> right (leaf 5)
    expected = layer.activation(layer.b1s[5]) @ layer.w2s[5] + layer.b2s[5]
    torch.testing.assert_close(_triton(layer, x, strategy), expected.detach().expand(5, 3))


def test_refusals_name_the_reason():
    layer = _layer(6, 3, 4, 2)
    x = torch.randn(5, 6, device=DEVICE)
    for strategy in STRATEGIES:
        with pytest.raises(ValueError, match="no autograd"):
            layer.hard_forward(x, strategy=strategy)  # parameters require grad
    with torch.no_grad():
        with pytest.raises(ValueError, match="float32/bfloat16/float16"):
            layer.double().hard_forward(x.double(), strategy="triton")
        layer.float().activation = nn.ELU()
        with pytest.raises(ValueError, match="lacks the activation ELU"):
            layer.hard_forward(x, strategy="triton")
        with pytest.raises(ValueError, match="input's dtype"):
            layer.hard_forward(x.bfloat16(), strategy="triton")


def test_auto_never_runs_the_interpreter_and_falls_back_with_grad():
    layer = _layer(6, 3, 4, 2)
    x = torch.randn(5, 6, device=DEVICE)
    with torch.no_grad():
        chosen = kernels.select(layer, x)
    assert chosen == "triton" if DEVICE == "cuda" else chosen not in STRATEGIES
    with torch.no_grad():  # many rows per leaf
        chosen = kernels.select(layer, torch.randn(200, 6, device=DEVICE))
    assert chosen == "triton_grouped" if DEVICE == "cuda" else chosen not in STRATEGIES
    assert kernels.select(layer, x) in ("plain", "grouped")  # grad required: autograd strategy
    layer(x).sum().backward()  # the eval forward with grad falls back and backpropagates
    assert layer.w1s.grad is not None


def test_cpu_without_interpreter_is_refused_and_fastff_never_imports_triton():
    """In a fresh process without TRITON_INTERPRET and without CUDA: importing fastff (and
    running a hard forward) imports no triton; forcing ``triton`` names the reason."""
    script = textwrap.dedent(
        """
        import sys, torch
        import fastff, fastff.layers
        from fastff.layers import FFF
        layer = FFF(6, 3, 4, 2).eval()
        with torch.no_grad():
            layer(torch.randn(5, 6))
        assert "triton" not in sys.modules, "importing fastff imported triton"
        try:
            with torch.no_grad():
                layer.hard_forward(torch.randn(5, 6), strategy="triton")
        except ValueError as error:
            print("REFUSED:", error)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", FASTFF_FUSED_CPU="0", PYTHONPATH=str(REPO / "src"))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "REFUSED:" in result.stdout and "TRITON_INTERPRET=1" in result.stdout, result.stdout


@pytest.mark.skipif(DEVICE == "cuda", reason="on CUDA the other tests compile for the device")
def test_kernels_compile_for_nvidia_gpus():
    """The interpreter does not check what the compiler does: compile both kernels to GPU
    machine code here (tests/layers/triton_aot.py, in a process without the interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO / "src")
    script = REPO / "tests/layers/triton_aot.py"
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled") == 20, result.stdout


# ------------------------------------------------------------------------------ MoE dispatch
def _pair_oracle(moe: MoE, x2d: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Expert ``indices[n, j]`` on ``x2d[n]`` per pair, a Python loop in float64: (N * k, O)."""
    rows = []
    for sample, experts in zip(x2d.double().cpu(), indices.cpu(), strict=True):
        for expert in experts.tolist():
            w1, b1 = moe.w1s[expert].double().cpu(), moe.b1s[expert].double().cpu()
            w2, b2 = moe.w2s[expert].double().cpu(), moe.b2s[expert].double().cpu()
            rows.append(moe.activation(sample @ w1 + b1) @ w2 + b2)
    if not rows:
        return torch.zeros(0, moe.out_features, dtype=torch.float64)
    return torch.stack(rows)


# (experts, expert width, k, N, dtype, in, out)
MOE_CASES = [
    (1, 1, 1, 7, torch.float32, 5, 3),
    (8, 33, 2, 130, torch.float32, 12, 9),
    (16, 8, 3, 1, torch.bfloat16, 40, 150),
    (4, 8, 2, 0, torch.float32, 6, 3),
    (64, 1, 2, 7, torch.bfloat16, 130, 5),
]


@pytest.mark.parametrize(("experts", "width", "k", "n", "dtype", "in_f", "out_f"), MOE_CASES)
def test_moe_triton_dispatch_equals_oracle_and_sorted(experts, width, k, n, dtype, in_f, out_f):
    torch.manual_seed(3)
    moe = MoE(in_f, out_f, experts, width, k=k).to(DEVICE, dtype).eval()
    x2d = torch.randn(n, in_f, device=DEVICE).to(dtype)
    indices = torch.randint(0, experts, (n, k), device=DEVICE)
    with torch.no_grad():
        pairs = moe_dispatch.run_experts(moe, x2d, indices, "triton")
        reference = moe_dispatch.run_experts(moe, x2d, indices, "sorted")
    assert pairs.shape == (n * k, out_f) and pairs.dtype == dtype
    tol = TOLERANCE[dtype]
    expected = _pair_oracle(moe, x2d, indices)
    torch.testing.assert_close(pairs.double().cpu(), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(pairs.float(), reference.float(), rtol=2 * tol, atol=2 * tol)


def test_moe_eval_forward_through_triton():
    torch.manual_seed(4)
    moe = MoE(10, 6, 12, 5, k=2, activation="gelu").to(DEVICE).eval()
    with torch.no_grad():
        moe.w_gate.normal_()
    x = torch.randn(3, 7, 10, device=DEVICE)
    moe.dispatch = "triton"
    with torch.no_grad():
        y = moe(x)
    gates = moe_gates_oracle(moe, x.cpu()).reshape(-1, 12)  # (N, E)
    indices = gates.topk(2, dim=-1).indices
    pairs = _pair_oracle(moe, x.reshape(-1, 10), indices).view(-1, 2, 6)
    expected = (pairs * gates.gather(1, indices).double().unsqueeze(-1)).sum(1)
    torch.testing.assert_close(y.reshape(-1, 6).double().cpu(), expected, rtol=1e-5, atol=1e-5)


def test_moe_triton_refusals():
    moe = MoE(6, 3, 4, 5, k=2, dropout=0.5).to(DEVICE)
    x = torch.randn(5, 6, device=DEVICE)
    moe.dispatch = "triton"
    with torch.no_grad(), pytest.raises(ValueError, match="no dropout"):
        moe.train()(x)
    with pytest.raises(ValueError, match="no autograd"):
        moe.eval()(x)
    moe.dispatch = "auto"
    assert moe_dispatch.select(moe.eval(), x) == ("gathered" if DEVICE == "cuda" else "sorted")
    with torch.no_grad():
        assert moe_dispatch.select(moe, x) == ("triton" if DEVICE == "cuda" else "sorted")
