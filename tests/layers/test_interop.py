"""FF, FFF and MoE where PyTorch and timm models go: copies (deepcopy, pickle, timm's
ModelEmaV3), empty batches, torch.jit.trace, torch.jit.script and torch.fx.

Expected values come from the eager layer in float32 or float64 (or the per-sample oracles), at
a batch size other than the one traced.
"""

from __future__ import annotations

import copy
import functools
import io
import pickle

import pytest
import torch
from oracles import fff_hard_oracle, fff_soft_oracle
from timm.models import create_feature_extractor, get_graph_node_names
from timm.utils import ModelEmaV3
from torch import nn

from fastff.layers import FF, FFF, MoE, kernels
from fastff.layers.moe_dispatch import dispatch_names
from fastff.models import FlatNet
from fastff.training.layer_stats import total_aux_loss

IN, OUT = 12, 5
LAYERS = {
    "ff": lambda: FF(IN, OUT, 16),
    "fff": lambda: FFF(IN, OUT, leaf_width=4, depth=3, hardening=0.3),
    "moe": lambda: MoE(IN, OUT, num_experts=4, expert_width=6, k=2),
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _layer(name: str) -> nn.Module:
    layer = LAYERS[name]()
    if isinstance(layer, MoE):
        with torch.no_grad():  # zero-initialised gates tie every expert
            layer.w_gate.normal_()
    return layer


def _state(layer: nn.Module, state: str) -> nn.Module:
    """Bring ``layer`` into ``state``: fresh, after a training forward, after its backward, or
    after an eval forward."""
    x = torch.randn(9, IN)
    if state == "train_forward":
        layer.train()(x)
    elif state == "backward":
        (layer.train()(x).sum() + layer.aux_loss).backward()
    elif state == "eval_forward":
        with torch.no_grad():
            layer.eval()(x)
    return layer


STATES = ["fresh", "train_forward", "backward", "eval_forward"]


# ------------------------------------------------------------------------------------- copies
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_in_any_state_compute_what_the_original_does(how, name, state):
    layer = _state(_layer(name), state)
    if how == "deepcopy":
        twin = copy.deepcopy(layer)
    else:
        buffer = io.BytesIO()
        torch.save(layer, buffer)  # pickles the module
        buffer.seek(0)
        twin = torch.load(buffer, weights_only=False)
        assert isinstance(pickle.loads(pickle.dumps(layer)), type(layer))
    for original, copied in zip(layer.parameters(), twin.parameters(), strict=True):
        assert torch.equal(original, copied) and original.data_ptr() != copied.data_ptr()
    x = torch.randn(21, IN)
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), layer.eval()(x))
    if isinstance(layer, FFF):
        assert twin.packed_parameters is not None  # the fused step's layout survives the copy
        twin.train()
        torch.manual_seed(3)
        soft = twin(x)
        assert torch.allclose(soft, fff_soft_oracle(layer, x)[0], atol=1e-5)
    assert float(twin.aux_loss) == float(twin.aux_loss)  # a tensor, not a copied graph


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_model_ema_v3_tracks_an_independent_ema_and_evaluates(name):
    decay = 0.8
    model = FlatNet(
        (1, 4, 3),
        OUT,
        lambda i, o: {"ff": FF, "fff": FFF, "moe": MoE}[name](
            i, o, *{"ff": (16,), "fff": (4, 2), "moe": (4, 6)}[name]
        ),
    )
    model.train()
    ema = ModelEmaV3(model, decay=decay)  # deep-copies the model now ...
    _state(model.layer, "backward")
    ema_copy = ModelEmaV3(model, decay=decay)  # ... and after a backward
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _step in range(5):
        x, y = torch.rand(16, 1, 4, 3), torch.randint(0, OUT, (16,))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        (loss + total_aux_loss(model, loss)).backward()
        optimizer.step()
        ema.update(model, step=None)
        ema_copy.update(model, step=None)
        for key, value in model.state_dict().items():
            expected[key] = decay * expected[key] + (1 - decay) * value.detach()
    # the first EMA started from the initial weights; compare the second, started like expected
    for key, value in ema_copy.module.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
    reference = copy.deepcopy(model)
    reference.load_state_dict(expected)
    x = torch.rand(33, 1, 4, 3)
    with torch.no_grad():
        got = ema_copy.module.eval()(x)
        assert torch.allclose(got, reference.eval()(x), atol=1e-5)
        assert torch.isfinite(ema.module.eval()(x)).all()
    if name == "fff":
        assert ema_copy.module.layer.packed_parameters is not None
        with torch.no_grad():
            oracle = fff_hard_oracle(reference.layer, x.flatten(1))
        assert torch.allclose(got, oracle, atol=1e-5)


# ------------------------------------------------------------------------------ empty batches
def _empty_cases() -> list[tuple[str, str, str | None]]:
    cases = [("ff", mode, None) for mode in ("train", "eval")]
    cases += [("fff", "train", impl) for impl in ("fused", "fused_torch", "composite")]
    cases += [("fff", "eval", strategy) for strategy in kernels.strategy_names()]
    cases += [("moe", mode, d) for mode in ("train", "eval") for d in dispatch_names()]
    return cases


def _forced(name: str, mode: str, how: str | None) -> nn.Module:
    layer = getattr(_layer(name), mode)()
    if name == "fff" and mode == "train":
        layer.soft_implementation = how
    elif name == "fff":
        layer.hard_strategy = how
    elif name == "moe":
        layer.dispatch = how
    return layer


@pytest.mark.parametrize(("name", "mode", "how"), _empty_cases())
@pytest.mark.parametrize("lead", [(0,), (0, 7), (3, 0)], ids=lambda s: "x".join(map(str, s)))
def test_empty_batches_give_empty_outputs_and_zero_losses(name, mode, how, lead, fused_kernel):
    layer = _forced(name, mode, how)
    x = torch.randn(*lead, IN, requires_grad=mode == "train")
    try:
        with torch.set_grad_enabled(mode == "train"):
            y = layer(x)
    except ValueError as error:  # triton: CUDA only; the refusal is one line
        assert how == "triton" and "\n" not in str(error)
        return
    assert y.shape == (*lead, OUT)
    assert layer.aux_loss.shape == () and float(layer.aux_loss) == 0.0
    if mode == "train":
        (y.sum() + layer.aux_loss).backward()
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
    if isinstance(layer, FFF) and mode == "train":
        assert torch.equal(layer.node_entropy, torch.zeros(layer.n_nodes))
    if isinstance(layer, MoE):
        assert layer.importance.shape == (4,) and torch.isfinite(layer.importance).all()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_leading_dimensions_keep_working(name):
    layer = _layer(name).eval()
    x = torch.randn(3, 7, IN)
    with torch.no_grad():
        y = layer(x)
        rows = torch.stack([layer(x[i]) for i in range(3)])
    assert y.shape == (3, 7, OUT) and torch.allclose(y, rows, atol=1e-6)


# ---------------------------------------------------------------------------------- jit.trace
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_jit_trace_in_eval_generalises_to_other_batch_sizes(name):
    layer = _layer(name).eval()
    with torch.no_grad():
        traced = torch.jit.trace(layer, torch.randn(6, IN), check_trace=False)
        for batch in (1, 37, 300):
            x = torch.randn(batch, IN)
            expected = layer(x) if name != "fff" else fff_hard_oracle(layer, x)
            assert torch.allclose(traced(x), expected, atol=1e-5), batch


def test_jit_trace_of_a_training_ff_equals_eager_with_gradients():
    layer = _layer("ff").train()
    traced = torch.jit.trace(layer, torch.randn(6, IN), check_trace=False)
    x = torch.randn(40, IN)
    expected = torch.relu(x @ layer.fc1.weight.T + layer.fc1.bias) @ layer.fc2.weight.T
    y = traced(x)
    assert torch.allclose(y, expected + layer.fc2.bias, atol=1e-5)
    y.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_jit_trace_of_a_training_fff_gives_the_eager_soft_forward():
    layer = _layer("fff").train()  # no dropout, no region leak
    traced = torch.jit.trace(layer, torch.randn(6, IN), check_trace=False)
    x = torch.randn(40, IN)
    y = traced(x)
    assert torch.allclose(y, fff_soft_oracle(layer, x)[0], atol=1e-5)
    y.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_jit_trace_of_a_training_moe_runs_gathered():
    layer = MoE(IN, OUT, 4, 6, noisy_gating=False).train()
    with torch.no_grad():
        layer.w_gate.normal_()
    traced = torch.jit.trace(layer, torch.randn(6, IN), check_trace=False)
    x = torch.randn(40, IN)
    assert torch.allclose(traced(x), layer(x), atol=1e-5)


# --------------------------------------------------------------------------------- jit.script
def test_jit_script_compiles_ff():
    layer = _layer("ff").eval()
    scripted = torch.jit.script(layer)
    x = torch.randn(11, IN)
    assert torch.allclose(scripted(x), layer(x))


@pytest.mark.parametrize("name", ["fff", "moe"])
def test_jit_script_refuses_fff_and_moe_naming_fastff_export(name):
    model = nn.Sequential(nn.Linear(IN, IN), _layer(name))
    with pytest.raises(RuntimeError, match=r"fastff\.export") as error:
        torch.jit.script(model)
    assert "\n" not in str(error.value) and type(model[1]).__name__ in str(error.value)


# --------------------------------------------------------------------------------------- torch.fx
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fx_symbolic_trace_of_a_flat_net_runs_the_real_layer(name, mode):
    model = FlatNet((1, 3, 4), OUT, functools.partial(lambda n, i, o: _layer_of(n, i, o), name))
    getattr(model, mode)()
    graph = torch.fx.symbolic_trace(model)
    x = torch.rand(17, 1, 3, 4)
    torch.manual_seed(5)
    got = graph(x)
    aux = model.layer.aux_loss
    torch.manual_seed(5)
    assert torch.allclose(got, model(x), atol=1e-6)
    assert torch.allclose(aux, model.layer.aux_loss)
    if name != "ff":  # one call_module node for the layer
        targets = [n.target for n in graph.graph.nodes if n.op == "call_module"]
        assert targets == ["layer"]


def _layer_of(name: str, in_features: int, out_features: int) -> nn.Module:
    if name == "ff":
        return FF(in_features, out_features, 16)
    if name == "fff":
        return FFF(in_features, out_features, 4, 2, hardening=0.1)
    return MoE(in_features, out_features, 4, 6)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_timm_feature_extraction_of_a_flat_net_returns_the_layers_output(name):
    model = FlatNet((1, 3, 4), OUT, functools.partial(lambda n, i, o: _layer_of(n, i, o), name))
    model.eval()
    _, eval_nodes = get_graph_node_names(model)
    node = [n for n in eval_nodes if n.startswith("layer")][-1]
    assert node == "layer" or name == "ff", eval_nodes  # FFF and MoE: one leaf node
    extractor = create_feature_extractor(model, return_nodes={node: "out", "flatten": "flat"})
    x = torch.rand(9, 1, 3, 4)
    with torch.no_grad():
        features = extractor(x)
        assert torch.allclose(features["out"], model(x), atol=1e-6)
    assert torch.equal(features["flat"], x.flatten(1))


@pytest.mark.parametrize("name", ["fff", "moe"])
def test_fx_tracing_a_layer_on_its_own_is_one_clear_line(name):
    with pytest.raises(ValueError, match="trace a model containing the layer") as error:
        torch.fx.symbolic_trace(_layer(name))
    assert "\n" not in str(error.value)
