"""Compact (bfloat16 / int8) leaf weights: the quantized FFF's strategies, the C++ kernel among
them, equal an independent dequantize-then-float32 computation written here; routing is exactly
the float layer's; storage, dtype moves and state dicts keep the compact tensors."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from oracles import fff_hard_oracle, fff_leaf_oracle, moe_gates_oracle
from torch import nn

from fastff import quantize
from fastff.layers import FF, FFF, MoE
from fastff.layers.quantized_fff import STRATEGIES, QuantizedFFF
from fastff.layers.quantized_linear import QuantizedLinear
from fastff.layers.quantized_moe import QuantizedMoE

FORMATS = ("bf16", "int8")
STORAGE = {"bf16": torch.bfloat16, "int8": torch.int8}

SHAPES = [
    # (in, out, leaf width, depth, batch)
    (6, 3, 4, 2, 1),  # batch 1
    (9, 5, 3, 3, 7),  # odd sizes everywhere
    (10, 7, 5, 0, 11),  # depth 0: one leaf, no nodes
    (33, 17, 1, 4, 0),  # empty batch, leaf width 1
    (20, 65, 70, 1, 9),  # leaf width past 64, output past 4 vectors with a remainder
    (37, 48, 8, 5, 33),
    (64, 32, 16, 6, 19),
    (19, 11, 2, 7, 65),
    (48, 29, 32, 8, 41),  # depth 8
]


def _fff(in_f, out_f, leaf, depth, activation="relu", seed=0) -> FFF:
    torch.manual_seed(seed)
    layer = FFF(in_f, out_f, leaf, depth, activation=activation).eval()
    with torch.no_grad():  # leaf biases of the size of the products, so they matter too
        layer.b1s.uniform_(-0.5, 0.5)
        layer.b2s.uniform_(-0.5, 0.5)
    return layer


def _dequantized(q: QuantizedFFF) -> SimpleNamespace:
    """The quantized layer's weights widened to float32 and scaled, by hand from its buffers."""
    w1, w2 = q.w1s.float(), q.w2s.float()
    if q.format == "int8":
        w1 = w1 * q.w1s_scale[:, None, :]  # one scale per hidden unit (leaf, unit)
        w2 = w2 * q.w2s_scale[:, None, :]  # one scale per output feature (leaf, feature)
    return SimpleNamespace(
        in_features=q.in_features,
        out_features=q.out_features,
        depth=q.depth,
        n_nodes=q.n_nodes,
        node_weights=q.node_weights,
        node_biases=q.node_biases,
        w1s=w1,
        b1s=q.b1s,
        w2s=w2,
        b2s=q.b2s,
        activation=q.activation,
    )


def _strategy_ready(strategy: str, request: pytest.FixtureRequest) -> None:
    if strategy in ("fused_cpu", "auto"):
        request.getfixturevalue("fused_kernel")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize(("in_f", "out_f", "leaf", "depth", "batch"), SHAPES)
def test_strategies_equal_the_dequantized_oracle(
    request, strategy, format, in_f, out_f, leaf, depth, batch
):
    _strategy_ready(strategy, request)
    layer = _fff(in_f, out_f, leaf, depth)
    q = QuantizedFFF.from_float(layer, format)
    x = torch.randn(batch, in_f)
    with torch.inference_mode():
        got = q.hard_forward(x, strategy)
    expected = fff_hard_oracle(_dequantized(q), x) if batch else torch.zeros(0, out_f)
    assert got.dtype == torch.float32 and got.shape == (batch, out_f)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "silu", "tanh", "leaky_relu"])
@pytest.mark.parametrize("format", FORMATS)
def test_kernel_activations_equal_the_oracle(fused_kernel, format, activation):
    q = QuantizedFFF.from_float(_fff(21, 19, 6, 3, activation=activation), format)
    x = torch.randn(13, 21)
    with torch.inference_mode():
        got = q.hard_forward(x, "fused_cpu")
    torch.testing.assert_close(got, fff_hard_oracle(_dequantized(q), x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("format", FORMATS)
def test_auto_runs_the_kernel_on_cpu_float32(fused_kernel, format, monkeypatch):
    from fastff.layers.kernels import cpu_compact

    q = QuantizedFFF.from_float(_fff(8, 4, 2, 3), format)
    real, calls = cpu_compact.hard_forward, []

    def spy(layer, x2d):
        calls.append(layer.w1s.dtype)
        return real(layer, x2d)

    monkeypatch.setattr(cpu_compact, "hard_forward", spy)
    with torch.inference_mode():
        q(torch.randn(5, 8))
    assert calls == [STORAGE[format]]


@pytest.mark.parametrize("format", FORMATS)
def test_routing_is_exactly_the_float_layers(format):
    layer = _fff(30, 6, 4, 6)
    q = quantize(layer, format)
    x = torch.randn(500, 30)
    assert torch.equal(q.leaf_indices(x), layer.leaf_indices(x))
    assert torch.equal(q.leaf_indices(x), fff_leaf_oracle(layer, x))
    assert torch.equal(q.node_weights, layer.node_weights)
    assert q.node_weights.dtype == torch.float32


def test_int8_storage_is_symmetric_per_hidden_unit_and_output_feature():
    layer = _fff(12, 9, 5, 2)
    q = QuantizedFFF.from_float(layer, "int8")
    assert q.w1s.dtype == q.w2s.dtype == torch.int8
    assert q.w1s_scale.dtype == q.w2s_scale.dtype == torch.float32
    assert q.w1s.shape == layer.w1s.shape and q.w1s_scale.shape == (4, 5)
    assert q.w2s.shape == layer.w2s.shape and q.w2s_scale.shape == (4, 9)
    # scale = max |w| / 127 over the unit's inputs (w1: dim 1 = D) and the feature's units (w2)
    w1, w2 = layer.w1s.detach(), layer.w2s.detach()
    torch.testing.assert_close(q.w1s_scale, w1.abs().amax(1) / 127)
    torch.testing.assert_close(q.w2s_scale, w2.abs().amax(1) / 127)
    assert int(q.w1s.abs().max()) == 127 and int(q.w1s.min()) >= -127
    for q_w, scale, w in ((q.w1s, q.w1s_scale, w1), (q.w2s, q.w2s_scale, w2)):
        error = (q_w.float() * scale[:, None, :] - w).abs()  # at most half a step per weight
        assert error.le(scale[:, None, :] / 2 + 1e-7).all()
    # the first leaf matrix stays neuron-major in memory, as the float layer keeps it
    assert q.w1s.transpose(1, 2).is_contiguous()


def test_bf16_storage_rounds_to_nearest():
    layer = _fff(12, 9, 5, 2)
    q = QuantizedFFF.from_float(layer, "bf16")
    assert q.w1s_scale is None and q.w2s_scale is None
    assert torch.equal(q.w1s, layer.w1s.detach().to(torch.bfloat16))
    assert torch.equal(q.w2s, layer.w2s.detach().to(torch.bfloat16))
    assert torch.equal(q.b1s, layer.b1s.detach()) and torch.equal(q.b2s, layer.b2s.detach())


def test_all_zero_unit_gets_scale_one_and_zero_weights():
    layer = _fff(6, 3, 2, 1)
    with torch.no_grad():
        layer.w1s[1, :, 0] = 0.0
    q = QuantizedFFF.from_float(layer, "int8")
    assert float(q.w1s_scale[1, 0]) == 1.0 and not q.w1s[1, :, 0].any()


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_weights_are_refused(bad):
    layer = _fff(6, 3, 2, 1)
    with torch.no_grad():
        layer.w2s[0, 0, 0] = bad
    with pytest.raises(ValueError, match="non-finite"):
        quantize(layer, "int8")


def test_unknown_format_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"quantize must be one of \['bf16', 'int8'\], got 'fp8'"):
        quantize(_fff(6, 3, 2, 1), "fp8")


MOE_SHAPES = [(9, 5, 4, 3, 2, 7), (16, 33, 8, 8, 1, 1), (7, 6, 3, 5, 3, 0)]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize(("in_f", "out_f", "experts", "width", "k", "batch"), MOE_SHAPES)
def test_quantized_moe_equals_gates_times_dequantized_experts(
    format, in_f, out_f, experts, width, k, batch
):
    torch.manual_seed(0)
    moe = MoE(in_f, out_f, experts, width, k=k).eval()
    with torch.no_grad():  # a gate that spreads the inputs (a fresh MoE's is all zero)
        moe.w_gate.uniform_(-1, 1)
    q = quantize(nn.Sequential(moe), format)[0]
    assert isinstance(q, QuantizedMoE) and q.w1s.dtype == q.w2s.dtype == STORAGE[format]
    w1, w2 = q.w1s.float(), q.w2s.float()
    if format == "int8":
        w1, w2 = w1 * q.w1s_scale[:, None, :], w2 * q.w2s_scale[:, None, :]
    x = torch.randn(batch, in_f)
    gates = moe_gates_oracle(moe, x)  # (N, E), from the float MoE's gate
    expected = torch.zeros(batch, out_f)
    for e in range(experts):
        out_e = torch.relu(x @ w1[e] + q.b1s[e]) @ w2[e] + q.b2s[e]
        expected += gates[:, e : e + 1] * out_e
    with torch.inference_mode():
        torch.testing.assert_close(q(x), expected, rtol=1e-5, atol=1e-5)
    assert q.inference_size == moe.inference_size and q.training_width == moe.training_width


@pytest.mark.parametrize("format", FORMATS)
def test_dtype_moves_keep_the_compact_tensors(format):
    q = QuantizedFFF.from_float(_fff(10, 4, 3, 2), format)
    x = torch.randn(9, 10, dtype=torch.float64)
    expected = fff_hard_oracle(_dequantized(q), x.float()).double()
    q64 = q.to(torch.float64)
    assert q64.w1s.dtype == STORAGE[format] and q64.w2s.dtype == STORAGE[format]
    assert q64.w1s.transpose(1, 2).is_contiguous()
    if format == "int8":
        assert q64.w1s_scale.dtype == torch.float32
    assert q64.node_weights.dtype == q64.b2s.dtype == torch.float64
    got = q64(x)  # the torch path, in float64
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("format", FORMATS)
def test_float32_layer_returns_the_callers_dtype(format):
    q = QuantizedFFF.from_float(_fff(10, 4, 3, 2), format)
    x = torch.randn(2, 3, 10, dtype=torch.float64)
    y = q(x)
    assert y.dtype == torch.float64 and y.shape == (2, 3, 4)
    torch.testing.assert_close(y, q(x.float()).double())


@pytest.mark.parametrize("format", FORMATS)
def test_state_dict_round_trip_with_weights_only(format):
    q = QuantizedFFF.from_float(_fff(10, 4, 3, 3), format)
    buffer = io.BytesIO()
    torch.save(q.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["w1s"].dtype == STORAGE[format]
    assert ("w1s_scale" in state) == (format == "int8")
    fresh = QuantizedFFF(10, 4, 3, 3, format)
    fresh.load_state_dict(state)
    x = torch.randn(7, 10)
    assert torch.equal(fresh(x), q(x))


def test_a_forced_kernel_that_cannot_run_says_why():
    q = QuantizedFFF.from_float(_fff(10, 4, 3, 2), "int8").double()
    with pytest.raises(ValueError, match=r"fused_cpu.*float32"):
        q.hard_forward(torch.randn(3, 10), "fused_cpu")
    with pytest.raises(ValueError, match="strategy must be one of"):
        q.hard_forward(torch.randn(3, 10), "grouped")


# ------------------------------------------------------------------------- models and FF
@pytest.mark.parametrize("format", FORMATS)
def test_quantized_linear_equals_dequantized_matmul(format):
    torch.manual_seed(0)
    linear = nn.Linear(37, 23)
    q = QuantizedLinear.from_float(linear, format)
    weight = q.weight.float()
    if format == "int8":
        weight = weight * q.weight_scale[:, None]
    for batch in ((0,), (1,), (5,), (2, 7)):
        x = torch.randn(*batch, 37)
        with torch.inference_mode():
            got = q(x)
        torch.testing.assert_close(got, x @ weight.T + linear.bias.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("format", FORMATS)
def test_quantize_a_model_replaces_fff_and_ff_and_leaves_the_original(format):
    torch.manual_seed(0)
    model = nn.Sequential(FFF(8, 6, 2, 2), nn.LayerNorm(6), FF(6, 5, 7)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize(model, format)
    assert isinstance(quantized[0], QuantizedFFF) and isinstance(quantized[2], FF)
    assert isinstance(quantized[2].fc1, QuantizedLinear) and not quantized.training
    assert isinstance(model[0], FFF) and isinstance(model[2].fc1, nn.Linear)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    x = torch.randn(11, 8)
    hidden = fff_hard_oracle(_dequantized(quantized[0]), x)
    hidden = nn.functional.layer_norm(hidden, (6,), model[1].weight, model[1].bias)
    fc1, fc2 = quantized[2].fc1, quantized[2].fc2
    w1 = fc1.weight.float() * (fc1.weight_scale[:, None] if format == "int8" else 1)
    w2 = fc2.weight.float() * (fc2.weight_scale[:, None] if format == "int8" else 1)
    expected = torch.relu(hidden @ w1.T + fc1.bias) @ w2.T + fc2.bias
    with torch.inference_mode():
        torch.testing.assert_close(quantized(x), expected, rtol=1e-5, atol=1e-5)


def test_quantized_layers_import_only_torch():
    code = (
        "import sys, fastff.layers.quantized_fff, fastff.layers.quantized_moe, "
        "fastff.layers.quantized_linear\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'lightning', 'hydra', 'omegaconf', 'wandb', 'timm', 'pandas'})\n"
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
