"""timm vision transformers whose feedforward layers are fastff layers (the paper's Table 3).

:func:`build_vit` builds timm's ``VisionTransformer`` (the paper's small ViT by default, or any
timm ViT architecture by name) with every block's MLP replaced by the layer a ``layer`` config
describes (FF, FFF, MoE or a registered kind), through the layer config's own builder (as the
flat net builds its layer: same key check, size rule and memory check) called by
:func:`fastff.models.timm_mlp.timm_mlp`. The ViT's MLP hidden width ``embed_dim * mlp_ratio`` is
the layer's training width: an FFF gets ``depth = log2(hidden / leaf_width)``, an MoE
``num_experts = hidden / expert_width``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from fastff.errors import LayerConfigError
from fastff.models import kinds
from fastff.models.layer_builders import check_config_keys
from fastff.models.timm_mlp import TimmMlp, timm_mlp

PAPER_VIT: dict[str, Any] = {
    "patch_size": 4,
    "embed_dim": 128,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 1.0,
}
"""The paper's ViT (Table 3): 4 blocks, patch 4, hidden dimension 128 (MLP hidden width 128,
i.e. mlp_ratio 1), 4 attention heads (the paper does not say; 32 dimensions per head)."""


def build_vit(
    input_shape: Sequence[int],
    num_classes: int,
    layer_factory: functools.partial,
    *,
    arch: str | None = None,
    img_size: int | Sequence[int] | None = None,
    patch_size: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float | None = None,
    pos_drop_rate: float = 0.1,
    drop_rate: float = 0.0,
    fix_init: bool = False,
    layer_width: int | None = None,
    name: str = "vit",
    **timm_kwargs: Any,
) -> nn.Module:
    """A timm ``VisionTransformer`` for images of ``input_shape`` whose MLPs are fastff layers.

    Args:
        input_shape: (C, H, W) of one image; C becomes ``in_chans``, (H, W) the image size unless
            ``img_size`` is given.
        num_classes: classes of the head.
        layer_factory: a ``layer`` config partial (``fastff.models.layer_builders.fff/ff/moe``);
            its ``width``, if set, must equal the MLP hidden width.
        arch: a timm architecture name (e.g. ``vit_tiny_patch16_224``, built untrained), or None
            for the paper's ViT (:data:`PAPER_VIT`).
        img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio: override the architecture's
            own values (None keeps them).
        pos_drop_rate: dropout after adding the position embedding: the paper's input dropout.
        drop_rate: dropout before the classification head.
        fix_init: timm's init fix rescales every block's ``mlp.fc2``, which only FF has; refused
            for FFF and MoE.
        layer_width: the training width the ``layer`` config gives by default (``layer.width``
            reads it); None here, since the ViT's hidden width decides. A value must equal it.
        name: config label, ignored.
        **timm_kwargs: further ``VisionTransformer`` arguments (``attn_drop_rate``, ...).

    Shapes:
        input (B, C, H, W) -> logits (B, num_classes).

    Raises:
        LayerConfigError: a layer size that disagrees with the ViT's hidden width.
        ValueError: fix_init with FFF/MoE, or settings timm refuses.
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    channels, *spatial = (int(n) for n in input_shape)
    overrides = {
        key: value
        for key, value in {
            "patch_size": patch_size,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
        }.items()
        if value is not None
    }
    settings = {**(PAPER_VIT if arch is None else {}), **overrides}
    hidden = _hidden_width(arch, settings)
    mlp_layer = _mlp_layer(layer_factory, hidden, layer_width)
    if fix_init and not kinds.kind_of(mlp_layer.layer_class).timm_fix_init:
        raise ValueError(
            f"model.fix_init=true rescales each block's mlp.fc2, which only the FF layer has; "
            f"use model.fix_init=false with {mlp_layer.layer_class.__name__}"
        )
    kwargs = {
        **settings,
        "img_size": tuple(spatial) if img_size is None else img_size,
        "in_chans": channels,
        "num_classes": num_classes,
        "pos_drop_rate": pos_drop_rate,
        "drop_rate": drop_rate,
        "fix_init": fix_init,
        "mlp_layer": mlp_layer,
        **timm_kwargs,
    }
    try:
        if arch is None:
            return VisionTransformer(**kwargs)
        return timm.create_model(arch, pretrained=False, **kwargs)
    except (AssertionError, RuntimeError) as err:
        raise ValueError(f"timm cannot build this ViT: {err}") from None


def _hidden_width(arch: str | None, settings: dict[str, Any]) -> int:
    """The MLP hidden width ``embed_dim * mlp_ratio`` of the architecture with ``settings``."""
    embed_dim, mlp_ratio = settings.get("embed_dim"), settings.get("mlp_ratio")
    if arch is not None and (embed_dim is None or mlp_ratio is None):
        import timm

        probe = timm.create_model(arch, pretrained=False, num_classes=0, device="meta", **settings)
        first = probe.blocks[0]
        embed_dim = first.norm1.normalized_shape[0]
        hidden = first.mlp.fc1.out_features
        return hidden if mlp_ratio is None else int(embed_dim * mlp_ratio)
    return int(embed_dim * mlp_ratio)


def _mlp_layer(layer_factory: functools.partial, hidden: int, layer_width: int | None) -> TimmMlp:
    """timm's ``mlp_layer`` for the ``layer`` config partial at MLP hidden width ``hidden``: the
    config's builder called with ``width=hidden`` (the flat net's path: key check, size rule,
    memory check); sizes that do not fit ``hidden`` are refused first, naming the ViT's width."""
    kind = kinds.kind_of_builder(layer_factory.func)
    if kind is None:
        raise LayerConfigError(
            f"layer._target_ must be one of the layer kinds' builders "
            f"{sorted(kinds.targets().values())} for model=vit, got {layer_factory.func!r}"
        )
    kwargs = dict(layer_factory.keywords)
    width = kwargs.pop("width", None)
    for key, value in (("layer.width", width), ("model.layer_width", layer_width)):
        if value is not None and value != hidden:
            raise LayerConfigError(
                f"{key}={value} disagrees with the ViT's MLP hidden width {hidden} "
                f"(model.embed_dim * model.mlp_ratio); set {key}=null (the layer takes the "
                f"ViT's width) or change the model"
            )
    check_config_keys(kind, kwargs)
    host = f"the ViT's MLP hidden width {hidden} (model.embed_dim * model.mlp_ratio)"
    kind.sizes(hidden, kwargs, host)
    return timm_mlp(layer_factory.func, **kwargs)


def vit_token_count(model: nn.Module) -> int:
    """Tokens per image the blocks see (patches plus prefix tokens)."""
    patches = math.prod(model.patch_embed.grid_size)
    return patches + getattr(model, "num_prefix_tokens", 0)
