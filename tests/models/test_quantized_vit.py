"""``fastff.quantize`` on a timm ViT whose MLPs are FFFs (or FFs): every MLP is replaced, the
rest of the network is left as it was, and the output equals the same ViT with its MLP weights
replaced by their dequantized values (computed here from the compact buffers)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from fastff import quantize
from fastff.layers import FF, FFF
from fastff.layers.quantized_fff import QuantizedFFF
from fastff.layers.quantized_linear import QuantizedLinear
from fastff.models import layer_builders
from fastff.models.sizes import model_sizes
from fastff.models.vit import build_vit

TINY_VIT = {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
LAYERS = {
    "fff": functools.partial(layer_builders.fff, width=None, leaf_width=4),
    "ff": functools.partial(layer_builders.ff, width=None),
}


def _widened(q: torch.Tensor, scale: torch.Tensor | None, dim: int) -> torch.Tensor:
    return q.float() if scale is None else q.float() * scale.unsqueeze(dim)


@pytest.mark.parametrize("format", ["bf16", "int8"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_quantized_vit_equals_the_vit_with_dequantized_mlps(format, layer):
    torch.manual_seed(0)
    vit = build_vit((1, 8, 8), 10, LAYERS[layer], **TINY_VIT).eval()
    quantized = quantize(vit, format)
    reference = copy.deepcopy(vit)
    for block, q_block, ref_block in zip(
        vit.blocks, quantized.blocks, reference.blocks, strict=True
    ):
        q_mlp, ref_mlp = q_block.mlp, ref_block.mlp
        with torch.no_grad():
            if layer == "fff":
                assert isinstance(block.mlp, FFF) and isinstance(q_mlp, QuantizedFFF)
                ref_mlp.w1s.copy_(_widened(q_mlp.w1s, q_mlp.w1s_scale, 1))
                ref_mlp.w2s.copy_(_widened(q_mlp.w2s, q_mlp.w2s_scale, 1))
            else:
                assert isinstance(q_mlp, FF) and isinstance(q_mlp.fc1, QuantizedLinear)
                for name in ("fc1", "fc2"):
                    linear = getattr(q_mlp, name)
                    weight = _widened(linear.weight, linear.weight_scale, 1)
                    getattr(ref_mlp, name).weight.copy_(weight)
        assert torch.equal(q_block.attn.qkv.weight, block.attn.qkv.weight)  # left as it was
    x = torch.rand(5, 1, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(quantized(x), reference(x), rtol=1e-5, atol=1e-5)
    assert model_sizes(quantized)["layer"] == layer
    assert model_sizes(quantized)["n_hosted_layers"] == TINY_VIT["depth"]
