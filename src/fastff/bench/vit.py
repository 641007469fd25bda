"""The ``vit`` benchmark mode: FF vs FFF (every leaf width of Table 3) vs MoE inside the ViT.

Each configuration is timed twice (column ``part``): ``layers``, the feedforward layers of every
block on the ViT's real token batch (the token batch that enters the blocks' MLPs when images of
the configured size pass through the model: the paper's measurement, "speedup measured at the FF
layers only"), and ``model``, the whole ViT's eval forward on the images.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import nn

from fastff.bench.cases import (
    Case,
    Implementation,
    bench_kinds,
    bytes_of,
    flops,
    macs_per_input,
    n_params,
)
from fastff.bench.modes import ideal_ratios, register_mode
from fastff.models import layer_builders
from fastff.models.sizes import hosted_layers
from fastff.models.vit import build_vit, vit_token_count

PARTS = ("layers", "model")


class HostedLayers(nn.Module):
    """The feedforward layers of a model's blocks, each applied to the same token batch.

    Shapes:
        input (B, N, D) -> a tuple of one (B, N, D) output per layer.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.hosted = nn.ModuleList(layer for _, layer in hosted_layers(model))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer(tokens) for layer in self.hosted)


def _vit_factories(leaf: int, moe_k: int, hidden: int) -> dict[str, partial]:
    """Layer configs of the ViT's MLPs, one per kind with a ViT shape
    (:attr:`~fastff.models.kinds.LayerKind.bench_vit_layer`): FF, FFF with leaf width ``leaf``,
    MoE with experts of width ``leaf``, top-``moe_k``, ... (the ViT gives each its training
    width ``hidden``)."""
    return {
        kind.name: partial(kind.builder, **kind.bench_vit_layer(leaf, moe_k, hidden))
        for kind in bench_kinds()
        if kind.bench_vit_layer is not None
    }


def _attention_macs(vit: nn.Module) -> int:
    """Multiply-adds of one image through everything but the MLPs: patch embedding, attention
    (qkv, scores, weighted values, projection) per block, and the head."""
    tokens, dim = vit_token_count(vit), vit.embed_dim
    patch = vit.patch_embed.proj
    embed = vit.patch_embed.num_patches * patch.in_channels * patch.kernel_size[0] ** 2 * dim
    per_block = tokens * 4 * dim * dim + 2 * tokens * tokens * dim
    return embed + len(vit.blocks) * per_block + dim * vit.num_classes


def _implementation(
    name: str, vit_args: dict[str, Any], factory: partial, part: str, batch: int
) -> Implementation:
    """One ViT with ``factory``'s MLPs: sized on the meta device, built on the CPU."""
    with torch.device("meta"):
        sized = build_vit(layer_factory=factory, **vit_args)
    layers = [layer for _, layer in hosted_layers(sized)]
    tokens = vit_token_count(sized)
    layer_macs = sum(macs_per_input(layer, training=False) for layer in layers) * tokens
    if part == "layers":
        params, macs = sum(n_params(layer) for layer in layers), layer_macs
    else:
        params, macs = n_params(sized), layer_macs + _attention_macs(sized)

    def build(built: dict[str, nn.Module]) -> nn.Module:
        vit = build_vit(layer_factory=factory, **vit_args)
        return HostedLayers(vit) if part == "layers" else vit

    return Implementation(name, bytes_of(params, False), flops(macs, batch, False), build)


def _input(
    part: str, vit_args: dict[str, Any], batch: int, image_shape: tuple[int, ...]
) -> torch.Tensor:
    """Random images (B, C, H, W) in [0, 1] for ``model``; their token batch for ``layers``."""
    images = torch.rand(batch, *image_shape)
    return _token_batch(vit_args, images) if part == "layers" else images


def _token_batch(vit_args: dict[str, Any], images: torch.Tensor) -> torch.Tensor:
    """The (B, N, D) tokens that enter the first block's MLP for ``images``."""
    vit = build_vit(layer_factory=partial(layer_builders.ff, width=None), **vit_args).eval()
    captured: list[torch.Tensor] = []
    handle = vit.blocks[0].mlp.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    with torch.no_grad():
        vit(images)
    handle.remove()
    return captured[0]


@register_mode("vit")
def vit(cfg: Mapping[str, Any], wanted: list[str]) -> list[Case]:
    """FF vs FFF (leaf widths ``leaf_widths``) vs MoE (experts of the leaf width, top-``moe_k``)
    as the MLPs of the ViT of ``model`` (``conf/model/vit.yaml`` keys) on random images of
    ``image_shape``, eval mode: the blocks' layers on the real token batch, and the whole model."""
    image_shape = tuple(cfg["image_shape"])
    vit_args = {
        "input_shape": image_shape,
        "num_classes": cfg["num_classes"],
        **{k: v for k, v in cfg["model"].items() if k not in ("_target_", "name", "compile")},
    }
    with torch.device("meta"):
        probe = build_vit(layer_factory=partial(layer_builders.ff, width=None), **vit_args)
    hidden, dim = probe.blocks[0].mlp.hidden_width, probe.embed_dim
    cases = []
    for batch in cfg["batch_sizes"]:
        for leaf in cfg["leaf_widths"]:
            factories = _vit_factories(leaf, cfg["moe_k"], hidden)
            for part in PARTS:
                costed = {
                    name: _implementation(name, vit_args, factory, part, batch)
                    for name, factory in factories.items()
                }
                chosen = [name for name in wanted if name in costed]
                make_input = partial(_input, part, vit_args, batch, image_shape)
                cases.append(
                    Case(
                        mode="vit",
                        params={
                            "part": part,
                            "batch": batch,
                            "in": dim,
                            "out": dim,
                            "leaf_width": leaf,
                            "depth": (hidden // leaf).bit_length() - 1,
                            "training_width": hidden,
                            "tokens": vit_token_count(probe),
                        },
                        in_features=dim,
                        batch=batch,
                        kind="inference",
                        implementations={name: costed[name] for name in chosen},
                        ideal=ideal_ratios(costed),
                        make_input=make_input,
                    )
                )
    return cases
