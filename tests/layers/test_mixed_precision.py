"""FF, FFF and MoE under torch.autocast (bfloat16 and float16), against float64 eager results.

Every comparison runs the same weights twice: once under ``torch.autocast("cpu", dtype)`` with
float32 parameters and inputs (what Lightning's ``bf16-mixed`` does), once in float64 without
autocast. The soft forward, its gradients, ``aux_loss`` and ``node_entropy`` must agree within
the autocast dtype's rounding; the routing quantities (node entropies, the hardening loss) must
come out float32; hard routing must reach the same leaves as float64.
"""

from __future__ import annotations

import copy

import pytest
import torch
from oracles import fff_hard_oracle, fff_leaf_oracle

from fastff.layers import FF, FFF, MoE

DTYPES = [torch.bfloat16, torch.float16]
BATCHES = [5, 96]
IN, OUT = 24, 6
# relative error of one autocast product: bfloat16 keeps 8 significant bits, float16 11
TOLERANCE = {torch.bfloat16: 4e-2, torch.float16: 6e-3}


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-12))


def _fff() -> FFF:
    return FFF(IN, OUT, leaf_width=4, depth=3, hardening=0.5)


def _moe() -> MoE:
    moe = MoE(IN, OUT, num_experts=4, expert_width=8, k=2, noisy_gating=False)
    with torch.no_grad():  # random gates, far from ties (zero init ties every expert)
        moe.w_gate.copy_(torch.randn(IN, 4) * 2)
    return moe


def _train_step(layer: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None):
    """(output, aux_loss, parameter gradients) of one training forward and backward; under
    autocast when ``dtype`` is given."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        y = layer(x)
        aux = layer.aux_loss
    loss = (y.double() * torch.linspace(-1, 1, y.shape[-1], dtype=torch.float64)).sum()
    (loss + aux).backward()
    grads = {name: p.grad for name, p in layer.named_parameters() if p.grad is not None}
    return y, aux, grads, x.grad


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("implementation", ["fused", "fused_torch", "composite"])
def test_fff_soft_training_step_under_autocast_matches_float64(
    implementation, dtype, batch, fused_kernel
):
    layer = _fff().train()
    layer.soft_implementation = implementation
    reference = copy.deepcopy(layer).double()
    x = torch.randn(batch, IN)
    y, aux, grads, grad_x = _train_step(layer, x, dtype)
    y64, aux64, grads64, grad_x64 = _train_step(reference, x.double(), None)

    assert y.dtype == dtype
    assert aux.dtype == torch.float32 and layer.node_entropy.dtype == torch.float32
    tolerance = TOLERANCE[dtype]
    assert _relative_error(y, y64) < tolerance
    assert abs(float(aux) - float(aux64)) < tolerance * float(aux64)
    assert _relative_error(layer.node_entropy, reference.node_entropy) < tolerance
    assert grads.keys() == grads64.keys() and len(grads) == 6
    for name, grad in grads.items():
        assert grad.dtype == torch.float32, name  # float32 parameters get float32 gradients
        assert torch.isfinite(grad).all(), name
        assert _relative_error(grad, grads64[name]) < 2 * tolerance, name
    assert _relative_error(grad_x, grad_x64) < 2 * tolerance


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fff_with_region_leak_and_dropout_trains_under_autocast(dtype):
    layer = FFF(IN, OUT, 4, 3, dropout=0.2, region_leak=0.1, hardening=1.0).train()
    _, aux, grads, _ = _train_step(layer, torch.randn(32, IN), dtype)
    assert aux.dtype == torch.float32 and torch.isfinite(aux)
    assert all(torch.isfinite(g).all() for g in grads.values()) and len(grads) == 6


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("strategy", ["auto", "plain", "grouped", "gather", "fused_cpu"])
def test_fff_hard_forward_under_autocast_reaches_the_float64_leaves(
    strategy, dtype, batch, fused_kernel
):
    layer = _fff().eval()
    reference = copy.deepcopy(layer).double()
    x = torch.randn(batch, IN)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        leaves = layer.leaf_indices(x)
        y = layer.hard_forward(x, strategy=strategy)
    assert torch.equal(leaves, fff_leaf_oracle(reference, x.double()))
    assert _relative_error(y, fff_hard_oracle(reference, x.double())) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fff_node_logits_stay_float32_under_autocast(dtype):
    # 4096 inputs put many node logits within autocast's rounding of 0: rounded logits would
    # send some of them the other way
    layer = _fff().eval()
    x = torch.randn(4096, IN)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        leaves = layer.leaf_indices(x)
    assert torch.equal(leaves, fff_leaf_oracle(layer, x))


def test_forced_cpu_kernel_refuses_low_precision_inputs_in_one_line():
    layer = _fff().eval()
    with (
        torch.no_grad(),
        torch.autocast("cpu", dtype=torch.bfloat16),
        pytest.raises(ValueError, match=r"fused_cpu.*float32/float64") as error,
    ):
        layer.hard_forward(torch.randn(4, IN, dtype=torch.bfloat16), strategy="fused_cpu")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ff_under_autocast_matches_float64(dtype, batch):
    layer = FF(IN, OUT, 32).train()
    reference = copy.deepcopy(layer).double()
    x = torch.randn(batch, IN)
    y, _, grads, _ = _train_step(layer, x, dtype)
    y64, _, grads64, _ = _train_step(reference, x.double(), None)
    assert y.dtype == dtype and _relative_error(y, y64) < TOLERANCE[dtype]
    for name, grad in grads.items():
        assert _relative_error(grad, grads64[name]) < 2 * TOLERANCE[dtype], name


def _top_k_margin(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """(N,) gap between the k-th and (k+1)-th gate logit in float64: small gaps may reorder
    under autocast's rounding."""
    values = (x.double() @ moe.w_gate.double()).topk(moe.k + 1, dim=-1).values
    return values[:, moe.k - 1] - values[:, moe.k]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_moe_under_autocast_matches_float64(mode, dtype, batch):
    layer = getattr(_moe(), mode)()
    reference = copy.deepcopy(layer).double()
    x = torch.randn(batch, IN)
    clear = _top_k_margin(layer, x) > 0.1  # inputs whose experts cannot change by rounding
    assert clear.sum() >= batch // 2
    y, aux, grads, _ = _train_step(layer, x, dtype)
    y64, aux64, _, _ = _train_step(reference, x.double(), None)
    assert y.dtype == dtype
    assert _relative_error(y[clear], y64[clear]) < TOLERANCE[dtype]
    assert aux.dtype == torch.float32 and torch.isfinite(aux)
    if mode == "train" and clear.all():
        assert abs(float(aux) - float(aux64)) < 0.05 * float(aux64) + 1e-6
    assert all(torch.isfinite(g).all() for g in grads.values())
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        gathered = layer.eval().gathered_forward(x)
    assert _relative_error(gathered[clear], reference.eval()(x.double())[clear]) < TOLERANCE[dtype]
