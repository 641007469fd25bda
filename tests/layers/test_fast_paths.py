"""Every FFF hard-inference strategy equals the per-sample oracle, on every shape and edge case;
the kernel is used only when built, chosen without starting any process or thread."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from oracles import fff_hard_oracle, fff_leaf_oracle
from torch import nn

import fastff.layers
from fastff.layers import FFF, MoE, kernels
from fastff.layers.kernels import cpu_build

TORCH_STRATEGIES = ("plain", "grouped")
ALL_STRATEGIES = (*TORCH_STRATEGIES, "fused_cpu", "auto")
REPO = Path(__file__).resolve().parents[2]


def _needs_kernel(strategy: str, request: pytest.FixtureRequest) -> None:
    if strategy == "fused_cpu":
        request.getfixturevalue("fused_kernel")


def _layer(in_f, out_f, leaf, depth, dtype=torch.float64, activation="relu", seed=0) -> FFF:
    torch.manual_seed(seed)
    return FFF(in_f, out_f, leaf, depth, activation=activation).to(dtype).eval()


def _run(layer: FFF, x: torch.Tensor, strategy: str) -> torch.Tensor:
    """The eval-mode forward with ``strategy`` forced, without gradients."""
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
        assert kernels.select(layer, x) != "fused_cpu"
        torch.testing.assert_close(_run(layer, x, "auto"), fff_hard_oracle(layer, x))
        with pytest.raises(ValueError, match=r"'fused_cpu' cannot run this call: .* ELU"):
            layer.hard_forward(x, "fused_cpu")


def test_auto_selection(fused_kernel):
    layer = _layer(8, 4, 4, 3, dtype=torch.float32)
    few, many = torch.randn(3, 8), torch.randn(32 * 8, 8)
    with torch.no_grad():
        assert kernels.select(layer, few) == "fused_cpu"
        assert kernels.select(layer, many) == "fused_cpu"
        assert kernels.select(layer.to(torch.bfloat16), few.bfloat16()) == "plain"
        assert kernels.select(layer, many.bfloat16()) == "grouped"
    layer.float()
    # With gradients required the kernel (no autograd) is never chosen.
    assert kernels.select(layer, few) == "plain"
    assert kernels.select(layer, many) == "grouped"


@pytest.mark.parametrize("strategy", TORCH_STRATEGIES)
def test_torch_strategies_support_autograd(strategy):
    layer = _layer(6, 3, 4, 2)
    x = torch.randn(70, 6, dtype=torch.float64, requires_grad=True)
    layer.hard_forward(x, strategy).square().sum().backward()
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
        layer.hard_forward(x, strategy)
    largest = max((event.cpu_memory_usage for event in profile.events()), default=0)
    per_input_copy = 4096 * 768 * 256 * 4  # 3.2 GB
    assert largest < 128 * 2**20 < per_input_copy


def test_forced_strategy_validation():
    layer = _layer(4, 2, 2, 1)
    assert layer.hard_strategy == "auto"
    with pytest.raises(ValueError, match="hard strategy must be one of"):
        layer.hard_strategy = "fastest"
    assert layer.hard_strategy == "auto"
    with pytest.raises(ValueError, match="hard strategy must be one of"):
        layer.hard_forward(torch.randn(3, 4, dtype=torch.float64), "fastest")
    with pytest.raises(ValueError, match=r"'fused_cpu' cannot run this call: .*no_grad"):
        layer.hard_forward(torch.randn(3, 4, dtype=torch.float64), "fused_cpu")
    layer.hard_strategy = "grouped"
    assert layer.hard_strategy == "grouped" and "hard_strategy" not in layer.state_dict()


@pytest.fixture
def undecided_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process as if no FFF had run yet, with an empty extensions cache; restored after."""
    monkeypatch.setattr(cpu_build, "_loaded", None)
    monkeypatch.setattr(cpu_build, "_refusal", None)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    return tmp_path


def test_missing_build_says_how_to_build_once_and_builds_nothing(undecided_kernel, caplog):
    layer = _layer(8, 4, 4, 3, dtype=torch.float32)
    x = torch.randn(5, 8)
    with caplog.at_level(logging.WARNING, logger="fastff.kernels"), torch.no_grad():
        for _ in range(3):
            assert kernels.select(layer, x) == "plain"
            torch.testing.assert_close(layer(x), fff_hard_oracle(layer, x))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert re.search(r"`python -m fastff\.layers\.kernels build`|no C\+\+ compiler", warnings[0])
    assert list(undecided_kernel.iterdir()) == []  # nothing was built or even started
    assert cpu_build.status().state == "unavailable"
    with (
        pytest.raises(ValueError, match=r"'fused_cpu' cannot run this call: .*not built"),
        torch.no_grad(),
    ):
        layer.hard_forward(x, "fused_cpu")


def test_disabled_kernel_is_never_used(undecided_kernel, monkeypatch, caplog):
    monkeypatch.setenv(cpu_build.DISABLE_ENV, "0")
    layer = _layer(8, 4, 4, 3, dtype=torch.float32)
    with caplog.at_level(logging.WARNING, logger="fastff.kernels"), torch.no_grad():
        assert kernels.select(layer, torch.randn(5, 8)) == "plain"
    assert not caplog.records  # the user chose it: nothing to warn about
    assert "FASTFF_FUSED_CPU=0" in cpu_build.status().reason


FRESH_PROCESS = """
import os, subprocess, threading
import torch
from torch.utils._python_dispatch import TorchDispatchMode
import fastff.layers
from fastff.layers import FFF, MoE, kernels

def refuse(*args, **kwargs):
    raise AssertionError("an eval-mode FFF forward started a process or a thread")

subprocess.Popen._execute_child = refuse
threading.Thread.start = refuse
os.fork = os.posix_spawn = os.posix_spawnp = os.system = refuse

class Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))

torch.manual_seed(0)
layer = FFF(16, 8, leaf_width=4, depth=3).eval()
x = torch.randn(6, 16)
with torch.no_grad(), Ops() as first:
    y = layer(x)
assert "fastff.fff_hard_forward.default" in first.ops, first.ops
with torch.inference_mode():
    assert torch.equal(layer(x), y)
layer(x).sum().backward()  # with gradients: a PyTorch strategy, still nothing started
torch.testing.assert_close(layer.hard_forward(x, "plain"), y)
with torch.no_grad():
    print("auto:", kernels.select(layer, x), [op for op in first.ops if op.startswith("fastff")])
"""


def test_fresh_process_uses_the_built_kernel_from_its_first_call(fused_kernel):
    """No eval-mode forward starts a process or thread; a fresh interpreter with a build uses
    the kernel from its very first call (no compiler run, no switch mid-run)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRESH_PROCESS)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "auto: fused_cpu ['fastff.fff_hard_forward.default']"
    assert "warning" not in result.stderr.lower(), result.stderr


def test_build_command_is_a_no_op_when_built(fused_kernel):
    command = [sys.executable, "-m", "fastff.layers.kernels"]
    built = subprocess.run([*command, "build"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    library = str(cpu_build.build_spec().library)
    assert built.stdout.strip() == f"fastff: the fused CPU kernel is built: {library}"
    status = subprocess.run([*command, "status"], capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr
    assert "fused_cpu: built" in status.stdout and library in status.stdout


def _layer_classes() -> set[type]:
    """Every nn.Module class defined in ``fastff.layers`` (FFF, FF, MoE, the quantized ones...)."""
    classes = set()
    for info in pkgutil.walk_packages(fastff.layers.__path__, "fastff.layers."):
        if not info.name.endswith("__main__"):
            module = importlib.import_module(info.name)
            classes |= {
                member
                for _, member in inspect.getmembers(module, inspect.isclass)
                if member.__module__.startswith("fastff.layers") and issubclass(member, nn.Module)
            }
    return classes


def _private_names(classes: set[type]) -> set[str]:
    """Private methods and attributes (``_name``, not dunder) of ``classes`` and of their bases
    in fastff.layers, including instance attributes their source assigns (``self._name = ``);
    nn.Module's own are left out."""
    names: set[str] = set()
    for cls in classes:
        for owner in cls.__mro__:
            if owner.__module__.startswith("fastff.layers"):
                names |= {n for n in vars(owner) if n.startswith("_") and not n.startswith("__")}
                source = inspect.getsource(owner)
                names |= set(re.findall(r"\bself\.(_[a-z]\w*)\s*(?::[^=\n]+)?=[^=]", source))
    return names - set(dir(nn.Module))


def _uses(names: set[str], files: list[Path], root: Path = REPO) -> list[str]:
    """``path:line`` of every attribute access ``x._name`` (not on ``self``/``cls``) and every
    quoted ``"_name"`` (a key of ``__dict__``, ``getattr``, ``setattr``) in ``files``."""
    alternatives = "|".join(map(re.escape, sorted(names)))
    pattern = re.compile(rf"(?<!self)(?<!cls)\.({alternatives})\b|[\"']({alternatives})[\"']")
    return [
        f"{path.relative_to(root)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]


def test_no_private_layer_member_is_used_outside_layers():
    """Outside ``layers/`` (every other module of fastff, and the tests of other packages) the
    layers are reached through their public methods and properties only: no private method,
    no private attribute, and no private ``__dict__`` key such as FFF's ``_hard_strategy``."""
    classes = _layer_classes()
    assert {FFF, MoE}.issubset(classes)
    names = _private_names(classes)
    assert {"_hard_strategy", "_eval_path", "_packed", "_run_experts"}.issubset(names)
    outside = [
        *(p for p in (REPO / "src" / "fastff").rglob("*.py") if "layers" not in p.parts),
        *(p for p in (REPO / "tests").rglob("*.py") if "layers" not in p.parts),
    ]
    offenders = _uses(names, outside)
    assert not offenders, f"private layer members {sorted(names)} used at {offenders}"


def test_no_private_fff_member_is_used_in_the_layer_tests():
    """The layers' own tests, too, reach FFF through its public methods only (this file names
    them, in the guard)."""
    names = _private_names({FFF})
    tests = [p for p in (REPO / "tests" / "layers").glob("*.py") if p != Path(__file__).resolve()]
    offenders = _uses(names, sorted(tests))
    assert not offenders, f"private FFF members {sorted(names)} used at {offenders}"


def test_the_private_member_guard_finds_method_calls_and_dict_keys(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "layer._route(x)\nself._route(x)\nlayer.__dict__['_hard_strategy'] = 'plain'\n"
        "layer.route(x)\n"
    )
    assert _uses({"_route", "_hard_strategy"}, [sample], tmp_path) == ["sample.py:1", "sample.py:3"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strategy", ("plain", "grouped", "auto"))
def test_cuda_strategies_equal_oracle(strategy):
    layer = _layer(24, 8, 8, 4)
    x = torch.randn(500, 24, dtype=torch.float64)
    expected = fff_hard_oracle(layer, x)
    y = _run(layer.cuda(), x.cuda(), strategy)
    torch.testing.assert_close(y.cpu(), expected)
