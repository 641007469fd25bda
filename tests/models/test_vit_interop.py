"""A timm ViT hosting each fastff layer under torch.fx, timm's feature extraction and autocast.

Expected values come from the eager model (forward hooks for intermediate features; float64
for autocast).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from timm.models import create_feature_extractor, get_graph_node_names

from fastff.layers import FF, FFF, MoE
from fastff.models import layer_builders
from fastff.models.vit import build_vit
from fastff.training.layer_stats import total_aux_loss

LAYERS = {
    "ff": functools.partial(layer_builders.ff, width=None),
    "fff": functools.partial(layer_builders.fff, width=None, leaf_width=8, hardening=1.0),
    "moe": functools.partial(layer_builders.moe, width=None, expert_width=32, k=2),
}
SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _vit(name: str) -> torch.nn.Module:
    vit = build_vit(SHAPE, 10, LAYERS[name])
    for module in vit.modules():
        if isinstance(module, MoE):
            with torch.no_grad():  # zero-initialised gates tie every expert
                module.w_gate.normal_()
    return vit


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fx_symbolic_trace_of_a_vit_equals_eager(name, mode):
    vit = getattr(_vit(name), mode)()
    graph = torch.fx.symbolic_trace(vit)
    x = torch.rand(5, *SHAPE)
    torch.manual_seed(1)
    got = graph(x)
    aux = total_aux_loss(vit, got)
    torch.manual_seed(1)
    assert torch.allclose(got, vit(x), atol=1e-5)
    assert torch.allclose(aux, total_aux_loss(vit, got))
    if name != "ff":
        hosted = [
            n.target for n in graph.graph.nodes if n.op == "call_module" and "mlp" in n.target
        ]
        assert hosted == [f"blocks.{i}.mlp" for i in range(len(vit.blocks))]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_timm_feature_extraction_returns_the_blocks_mlp_outputs(name):
    vit = _vit(name).eval()
    _, eval_nodes = get_graph_node_names(vit)
    node = "blocks.1.mlp" if name != "ff" else "blocks.1.mlp.fc2"
    assert node in eval_nodes
    extractor = create_feature_extractor(vit, return_nodes={node: "mlp", "blocks.2": "block"})
    seen = {}
    mlp = vit.blocks[1].mlp if name != "ff" else vit.blocks[1].mlp.fc2
    hooks = [
        mlp.register_forward_hook(lambda m, i, o: seen.__setitem__("mlp", o)),
        vit.blocks[2].register_forward_hook(lambda m, i, o: seen.__setitem__("block", o)),
    ]
    x = torch.rand(4, *SHAPE)
    with torch.no_grad():
        features = extractor(x)
        vit(x)
    for hook in hooks:
        hook.remove()
    for key in ("mlp", "block"):
        assert torch.allclose(features[key], seen[key], atol=1e-5), key


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_vit_trains_under_autocast_close_to_float64(name, dtype):
    vit = _vit(name).train()
    for module in vit.modules():
        if isinstance(module, MoE):
            module.noisy_gating = False  # compare without noise
    reference = copy.deepcopy(vit).double()
    x, y = torch.rand(6, *SHAPE), torch.arange(6)
    with torch.autocast("cpu", dtype=dtype):
        logits = vit(x)
        loss = F.cross_entropy(logits.float(), y) + total_aux_loss(vit, logits.float())
    loss.backward()
    logits64 = reference(x.double())
    loss64 = F.cross_entropy(logits64, y) + total_aux_loss(reference, logits64)
    assert abs(float(loss) - float(loss64)) < 0.05 * float(loss64)
    hosted = [m for m in vit.modules() if isinstance(m, (FF, FFF, MoE))]
    assert hosted
    for module in hosted:
        assert torch.isfinite(module.aux_loss).all() and module.aux_loss.dtype == torch.float32
        for parameter in module.parameters():
            if parameter.grad is not None:
                assert torch.isfinite(parameter.grad).all()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        evaluated = vit.eval()(x)
    assert torch.isfinite(evaluated).all() and evaluated.shape == (6, 10)
