"""torch.compile and torch.export of FF, FFF and MoE, against the eager layers.

Eval: ``torch.compile(fullgraph=True, dynamic=True)`` and ``torch.export`` with a dynamic batch
dimension, checked at batch sizes other than the traced one (FFF against the per-sample oracle).
Training: ``torch.compile`` (graph breaks allowed) gives eager's outputs, losses and gradients.
Compiling takes tens of seconds on a small CPU, hence the slow marker.
"""

from __future__ import annotations

import copy

import pytest
import torch
from oracles import fff_hard_oracle, fff_soft_oracle

from fastff.layers import FF, FFF, MoE

pytestmark = pytest.mark.slow

IN, OUT = 12, 5
LAYERS = {
    "ff": lambda: FF(IN, OUT, 16),
    "fff": lambda: FFF(IN, OUT, leaf_width=4, depth=3, hardening=0.3),
    "moe": lambda: MoE(IN, OUT, num_experts=4, expert_width=6, k=2),
}
BATCHES = (1, 7, 300)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    torch.manual_seed(0)
    torch._dynamo.reset()


def _layer(name: str) -> torch.nn.Module:
    layer = LAYERS[name]()
    if isinstance(layer, MoE):
        with torch.no_grad():  # zero-initialised gates tie every expert
            layer.w_gate.normal_()
    return layer


def _expected(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return fff_hard_oracle(layer, x) if isinstance(layer, FFF) else layer.eval()(x)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_compile_fullgraph_dynamic_in_eval(name):
    layer = _layer(name).eval()
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for batch in BATCHES:
            x = torch.randn(batch, IN)
            assert torch.allclose(compiled(x), _expected(layer, x), atol=1e-5), batch
        x3 = torch.randn(4, 3, IN)  # leading dims
        assert torch.allclose(compiled(x3), _expected(layer, x3), atol=1e-5)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_torch_export_with_a_dynamic_batch_in_eval(name):
    layer = _layer(name).eval()
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(layer, (torch.randn(5, IN),), dynamic_shapes=({0: batch},))
        if isinstance(layer, MoE):  # export leaves no traced values behind on the layer
            assert layer.importance is None and layer.gates is None
        module = program.module()
        for size in BATCHES:
            x = torch.randn(size, IN)
            assert torch.allclose(module(x), _expected(layer, x), atol=1e-5), size


@pytest.mark.parametrize("name", ["fff", "moe"])
def test_compile_in_training_equals_eager(name):
    layer = _layer(name).train()
    if isinstance(layer, MoE):
        layer.noisy_gating = False  # the noise draws differ between compiled and eager code
    eager = copy.deepcopy(layer)
    compiled = torch.compile(layer)
    for batch in (6, 33):
        x = torch.randn(batch, IN)
        y = compiled(x)
        aux = layer.aux_loss
        (y.square().sum() + aux).backward()
        y_eager = eager(x)
        (y_eager.square().sum() + eager.aux_loss).backward()
        assert torch.allclose(y, y_eager, atol=1e-5)
        assert torch.allclose(aux, eager.aux_loss, atol=1e-6)
        if isinstance(layer, FFF):
            assert torch.allclose(y, fff_soft_oracle(eager, x)[0], atol=1e-5)
        for (key, p), q in zip(layer.named_parameters(), eager.parameters(), strict=True):
            if q.grad is None:
                assert p.grad is None, key
            else:
                assert torch.allclose(p.grad, q.grad, atol=1e-5), key
