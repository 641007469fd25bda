"""Arguments every layer shares: ``device``/``dtype`` factory arguments and ``activation`` forms.

Parameters are created on the requested device in the requested dtype (as ``nn.Linear``), so a
layer built on ``device="meta"`` allocates nothing and still reports the sizes of a real one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import pytest
import torch
from oracles import fff_hard_oracle, fff_soft_oracle
from torch import nn

from fastff.layers import FF, FFF, MoE
from fastff.layers.activations import make_activation

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fff_depth0": lambda **kw: FFF(6, 3, 4, 0, **kw),
    "fff_depth3": lambda **kw: FFF(6, 3, 4, 3, hardening=0.1, **kw),
    "fff_frozen": lambda **kw: FFF(5, 2, 1, 5, frozen_tree=True, **kw),
    "ff": lambda **kw: FF(6, 3, 16, **kw),
    "moe_noisy": lambda **kw: MoE(6, 3, 8, 4, k=2, **kw),
    "moe_plain": lambda **kw: MoE(6, 3, 8, 4, k=3, noisy_gating=False, **kw),
}
SIZES = ("training_width", "inference_width", "training_size", "inference_size")


def describe(layer: nn.Module) -> dict[str, object]:
    """Sizes, parameter count and per-parameter (shape, stride, requires_grad) of a layer."""
    return {
        **{name: getattr(layer, name) for name in SIZES},
        "n_params": sum(p.numel() for p in layer.parameters()),
        "parameters": {
            name: (tuple(p.shape), p.stride(), p.requires_grad)
            for name, p in layer.named_parameters()
        },
    }


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_meta_device_gives_the_sizes_of_a_cpu_layer(name: str):
    on_cpu = BUILDERS[name]()
    on_meta = BUILDERS[name](device="meta")
    assert all(p.device.type == "meta" for p in on_meta.parameters())
    assert describe(on_meta) == describe(on_cpu)


@pytest.mark.parametrize("name", sorted(name for name in BUILDERS if not name.startswith("moe")))
def test_meta_layer_runs_a_training_forward_for_shapes(name: str):
    """FF and FFF trace shapes on the meta device (MoE dispatch reads per-expert pair counts on
    the host, so it needs real tensors)."""
    layer = BUILDERS[name](device="meta").train()
    y = layer(torch.empty(2, 5, layer.in_features, device="meta"))
    assert y.shape == (2, 5, layer.out_features) and y.device.type == "meta"


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_parameters_are_created_in_the_requested_dtype(name: str, dtype: torch.dtype):
    layer = BUILDERS[name](dtype=dtype, device=torch.device("cpu"))
    assert {p.dtype for p in layer.parameters()} == {dtype}
    assert all(p.device.type == "cpu" for p in layer.parameters())
    if dtype == torch.float64:
        # drawn in float64, not float32 draws cast afterwards
        weights = torch.cat([p.flatten() for p in layer.parameters()])
        assert (weights != weights.float().double()).any()
        assert describe(layer) == describe(BUILDERS[name]())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_float64_layers_run_train_and_eval(name: str):
    layer = BUILDERS[name](dtype=torch.float64)
    x = torch.randn(3, 4, layer.in_features, dtype=torch.float64)
    for training in (True, False):
        y = layer.train(training)(x)
        assert y.dtype == torch.float64 and y.shape == (3, 4, layer.out_features)
        assert torch.isfinite(y).all() and torch.isfinite(layer.aux_loss)


@pytest.mark.parametrize("depth", [0, 1, 4])
def test_float64_fff_matches_its_oracles(depth: int):
    fff = FFF(5, 3, 2, depth, dtype=torch.float64)
    x = torch.randn(17, 5, dtype=torch.float64)
    expected_soft, _ = fff_soft_oracle(fff, x)
    torch.testing.assert_close(fff.soft_forward(x), expected_soft)
    torch.testing.assert_close(fff.hard_forward(x), fff_hard_oracle(fff, x))


def test_default_dtype_is_torchs_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        layers = [build() for build in BUILDERS.values()]
    finally:
        torch.set_default_dtype(previous)
    assert all(p.dtype == torch.float64 for layer in layers for p in layer.parameters())


@pytest.mark.parametrize("layer_class", [FF, FFF, MoE])
def test_signatures_share_the_keyword_vocabulary(layer_class: type[nn.Module]):
    parameters = inspect.signature(layer_class).parameters
    assert list(parameters)[:2] == ["in_features", "out_features"]
    assert list(parameters)[-2:] == ["device", "dtype"]
    assert parameters["device"].default is None and parameters["dtype"].default is None
    assert parameters["activation"].default == "relu"
    assert parameters["dropout"].default == 0.0


def test_positional_order_is_unchanged():
    assert (FFF(6, 3, 4, 2).leaf_width, FFF(6, 3, 4, 2).depth) == (4, 2)
    assert FF(6, 3, 16).hidden_width == 16
    moe = MoE(6, 3, 8, 4, 3)
    assert (moe.num_experts, moe.expert_width, moe.k) == (8, 4, 3)


# --------------------------------------------------------------------------------- activation
@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        ("gelu", nn.GELU),
        ("ReLU", nn.ReLU),
        (nn.GELU, nn.GELU),
        (nn.SiLU, nn.SiLU),
        (functools.partial(nn.LeakyReLU, negative_slope=0.3), nn.LeakyReLU),
        (nn.Tanh(), nn.Tanh),
    ],
)
@pytest.mark.parametrize("name", ["fff_depth3", "ff", "moe_noisy"])
def test_activation_by_name_instance_or_class(name, activation, expected):
    layer = BUILDERS[name](activation=activation)
    assert type(layer.activation) is expected
    if isinstance(activation, nn.Module):
        assert layer.activation is activation


def test_activation_class_is_instantiated_per_layer():
    first, second = FF(4, 2, 3, activation=nn.GELU), FF(4, 2, 3, activation=nn.GELU)
    assert first.activation is not second.activation
    partial = functools.partial(nn.GELU, approximate="tanh")
    assert make_activation(partial).approximate == "tanh"


@pytest.mark.parametrize(
    "activation",
    ["nope", 3, None, nn.Linear, torch.relu, lambda: nn.ReLU(), functools.partial(torch.relu)],
)
@pytest.mark.parametrize("name", ["fff_depth3", "ff", "moe_noisy"])
def test_bad_activation_raises_one_value_error_naming_it(name, activation):
    with pytest.raises(ValueError, match=r"activation .*nn\.Module subclass") as error:
        BUILDERS[name](activation=activation)
    assert "relu" in str(error.value)  # lists the allowed names


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, "float32", torch.complex64])
@pytest.mark.parametrize("name", ["fff_depth3", "ff", "moe_noisy"])
def test_non_floating_dtype_raises_value_error_naming_it(name, dtype):
    with pytest.raises(ValueError, match=r"dtype must be None or a floating-point torch\.dtype"):
        BUILDERS[name](dtype=dtype)
