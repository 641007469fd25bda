"""fastff layers as the MLP of timm's own transformer blocks, through ``timm_mlp``."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra.utils import instantiate
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from fastff.layers import FF, FFF, MoE
from fastff.models.timm_mlp import TimmMlp, timm_mlp

DIM, HEADS = 32, 4  # mlp_ratio 4: hidden_features = 128

# (adapter, expected layer class, expected size attributes); training width is always 128
CASES = {
    "ff": (timm_mlp(FF), FF, {"hidden_width": 128}),
    "fff_leaf_width": (timm_mlp(FFF, leaf_width=8), FFF, {"leaf_width": 8, "depth": 4}),
    "fff_depth": (timm_mlp(FFF, depth=2, hardening=0.1), FFF, {"leaf_width": 32, "depth": 2}),
    "moe_expert_width": (
        timm_mlp(MoE, expert_width=16, k=2),
        MoE,
        {"num_experts": 8, "expert_width": 16, "k": 2},
    ),
    "moe_num_experts": (
        timm_mlp(functools.partial(MoE, num_experts=4, k=1)),
        MoE,
        {"num_experts": 4, "expert_width": 32, "k": 1},
    ),
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_timm_block_builds_and_runs_the_fastff_layer(case: str):
    adapter, layer_class, sizes = CASES[case]
    block = Block(DIM, HEADS, mlp_ratio=4.0, mlp_layer=adapter)
    mlp = block.mlp
    assert type(mlp) is layer_class
    assert (mlp.in_features, mlp.out_features, mlp.training_width) == (DIM, DIM, 128)
    assert {name: getattr(mlp, name) for name in sizes} == sizes
    assert isinstance(mlp.activation, nn.GELU)  # timm's act_layer passes through
    x = torch.randn(3, 7, DIM)
    for training in (False, True):
        block.train(training)
        assert mlp(block.norm2(x)).shape == (3, 7, DIM)  # the layer itself, on (B, N, D) tokens
        y = block(x)
        assert y.shape == (3, 7, DIM) and torch.isfinite(y).all()
        assert mlp.aux_loss.shape == () and torch.isfinite(mlp.aux_loss)
    (y.sum() + mlp.aux_loss).backward()  # training forward: every trainable parameter learns
    assert all(p.grad is not None for p in mlp.parameters() if p.requires_grad)


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_forward_records_the_layer_regulariser(case: str):
    adapter, layer_class, _ = CASES[case]
    block = Block(DIM, HEADS, mlp_layer=adapter).train()
    if layer_class is MoE:
        with torch.no_grad():
            block.mlp.w_gate.normal_()
    block(torch.randn(4, 9, DIM))
    if layer_class is FF or (layer_class is FFF and block.mlp.hardening == 0):
        assert block.mlp.aux_loss.item() == 0.0
    else:
        assert block.mlp.aux_loss.item() > 0 and block.mlp.aux_loss.requires_grad


@pytest.mark.parametrize("case", sorted(CASES))
def test_device_and_dtype_reach_the_layer(case: str):
    adapter, _, _ = CASES[case]
    on_cpu = Block(DIM, HEADS, mlp_layer=adapter).mlp
    on_meta = Block(DIM, HEADS, mlp_layer=adapter, device="meta").mlp
    assert all(p.device.type == "meta" for p in on_meta.parameters())
    for name in ("training_width", "inference_width", "training_size", "inference_size"):
        assert getattr(on_meta, name) == getattr(on_cpu, name)
    assert sum(p.numel() for p in on_meta.parameters()) == sum(
        p.numel() for p in on_cpu.parameters()
    )
    block = Block(DIM, HEADS, mlp_layer=adapter, dtype=torch.float64)
    assert {p.dtype for p in block.mlp.parameters()} == {torch.float64}
    x = torch.randn(2, 5, DIM, dtype=torch.float64)
    assert block.eval()(x).dtype == torch.float64


def test_vision_transformer_with_fff_mlps_trains_and_evaluates():
    vit = VisionTransformer(
        img_size=16,
        patch_size=4,
        embed_dim=DIM,
        depth=2,
        num_heads=HEADS,
        num_classes=10,
        mlp_layer=timm_mlp(FFF, leaf_width=16, hardening=0.5),
    )
    layers = [m for m in vit.modules() if isinstance(m, FFF)]
    assert len(layers) == 2 and all(layer.depth == 3 for layer in layers)
    images = torch.randn(2, 3, 16, 16)
    logits = vit.train()(images)
    loss = logits.square().mean() + sum(layer.aux_loss for layer in layers)
    loss.backward()
    assert all(layer.node_weights.grad.abs().sum() > 0 for layer in layers)
    assert vit.eval()(images).shape == (2, 10)


def test_called_as_timm_mlp_positionally_and_with_defaults():
    layer = timm_mlp(FFF, leaf_width=4)(16)  # hidden and out default to in_features
    assert (layer.in_features, layer.out_features, layer.training_width) == (16, 16, 16)
    layer = timm_mlp(FF)(8, 32, 5, nn.SiLU, None, True, (0.25, 0.0))
    assert (layer.hidden_width, layer.out_features, layer.dropout) == (32, 5, 0.25)
    assert isinstance(layer.activation, nn.SiLU)
    assert timm_mlp(FF)(8, 32, norm_layer=nn.Identity, bias=(True, True)).hidden_width == 32


def test_arguments_given_to_the_adapter_win_over_timms():
    adapter = timm_mlp(FFF, leaf_width=8, activation="relu", dropout=0.2)
    mlp = Block(DIM, HEADS, mlp_layer=adapter).mlp
    assert isinstance(mlp.activation, nn.ReLU) and mlp.dropout == 0.2


def test_hydra_partial_layer_config():
    partial = instantiate(
        {"_target_": "fastff.layers.MoE", "_partial_": True, "expert_width": 8, "k": 1}
    )
    adapter = timm_mlp(partial, w_load=0.0)
    assert adapter == TimmMlp(MoE, {"expert_width": 8, "k": 1, "w_load": 0.0})
    assert repr(adapter) == "timm_mlp(MoE, expert_width=8, k=1, w_load=0.0)"
    mlp = Block(DIM, HEADS, mlp_layer=adapter).mlp
    assert (mlp.num_experts, mlp.k, mlp.w_load) == (16, 1, 0.0)


def test_subclass_is_supported():
    class MyFFF(FFF):
        pass

    assert type(Block(DIM, HEADS, mlp_layer=timm_mlp(MyFFF, depth=1)).mlp) is MyFFF


# ----------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: timm_mlp(nn.Linear), "supports fastff.layers.FF, FFF and MoE"),
        (lambda: timm_mlp("FFF"), "supports fastff.layers.FF, FFF and MoE"),
        (lambda: timm_mlp(FFF), "exactly one of 'leaf_width' or 'depth'"),
        (lambda: timm_mlp(FFF, leaf_width=8, depth=2), "exactly one of 'leaf_width' or 'depth'"),
        (lambda: timm_mlp(MoE, k=1), "exactly one of 'expert_width' or 'num_experts'"),
        (lambda: timm_mlp(FF, hidden_width=64), "hidden_width comes from timm"),
        (lambda: timm_mlp(FF, in_features=4), r"\['in_features'\] come from timm"),
        (lambda: timm_mlp(FF, dtype=torch.float64), r"\['dtype'\] come from timm"),
        (lambda: timm_mlp(functools.partial(FF, 4)), "keyword arguments only"),
    ],
)
def test_bad_adapter_arguments(build, match: str):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("block_kwargs", "match"),
    [
        ({"scale_mlp_norm": True}, "norm_layer=.*LayerNorm.* is not supported"),
        ({"proj_bias": False}, "bias=False is not supported"),
        ({"proj_drop": 0.1}, "drop=0.1 asks for dropout 0.1 after the output projection"),
        ({"mlp_ratio": 3.0}, r"hidden_features=96 must be leaf_width=8 \* 2\*\*depth"),
    ],
)
def test_unsupported_timm_options_are_refused(block_kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        Block(DIM, HEADS, mlp_layer=timm_mlp(FFF, leaf_width=8), **block_kwargs)


@pytest.mark.parametrize(
    ("adapter", "match"),
    [
        (timm_mlp(MoE, expert_width=24), "hidden_features=128 must be a positive multiple of"),
        (timm_mlp(MoE, num_experts=3), "multiple of num_experts=3"),
        (timm_mlp(FFF, depth=8), r"multiple of 2\*\*depth \(depth=8\)"),
        (timm_mlp(FFF, depth=-1), "depth must be an integer >= 0"),
        (timm_mlp(MoE, expert_width=0), "expert_width must be an integer >= 1"),
        (timm_mlp(FFF, leaf_width=8, region_leak=2.0), "region_leak"),
    ],
)
def test_sizes_that_do_not_fit_the_hidden_width(adapter: TimmMlp, match: str):
    with pytest.raises(ValueError, match=match):
        Block(DIM, HEADS, mlp_layer=adapter)


def test_unknown_timm_keywords_are_refused():
    with pytest.raises(
        ValueError, match=r"does not support the mlp_layer arguments \['use_conv'\]"
    ):
        timm_mlp(FF)(8, 16, use_conv=True)
    with pytest.raises(ValueError, match="drop must be a number or a pair"):
        timm_mlp(FF)(8, 16, drop=(0.1, 0.0, 0.0))
