"""Build an FFF, FF or MoE layer from a plain config mapping (the ``layer`` config group).

The config speaks in the paper's sizes: ``width`` is the training width; an FFF derives
``depth = log2(width / leaf_width)`` and an MoE ``num_experts = width / expert_width`` unless given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from fastff.layers import FF, FFF, MoE
from fastff.layers.validation import check_int

LAYER_NAMES = ("fff", "ff", "moe")

_KEYS: dict[str, set[str]] = {
    "fff": {
        "name",
        "width",
        "leaf_width",
        "depth",
        "activation",
        "dropout",
        "region_leak",
        "hardening",
        "hardening_reduction",
        "frozen_tree",
    },
    "ff": {"name", "width", "activation", "dropout"},
    "moe": {
        "name",
        "width",
        "expert_width",
        "num_experts",
        "k",
        "noisy_gating",
        "w_importance",
        "w_load",
        "activation",
        "dropout",
    },
}


class LayerConfigError(ValueError):
    """A layer setting is invalid; the message names the ``layer.*`` key."""


def _positive_int(cfg: Mapping[str, Any], key: str) -> int:
    try:
        return check_int(f"layer.{key}", cfg.get(key), 1)
    except ValueError as err:
        raise LayerConfigError(str(err)) from None


def fff_depth(cfg: Mapping[str, Any]) -> int:
    """Depth of an FFF config: given, or log2(width / leaf_width) (a power of two)."""
    leaf_width = _positive_int(cfg, "leaf_width")
    depth, width = cfg.get("depth"), cfg.get("width")
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise LayerConfigError(f"layer.depth must be an integer >= 0 or null, got {depth!r}")
        if width is not None and width != leaf_width * 2**depth:
            raise LayerConfigError(
                f"layer.width={width} disagrees with layer.leaf_width={leaf_width} and "
                f"layer.depth={depth} (width must be leaf_width * 2**depth = "
                f"{leaf_width * 2**depth}); set one of layer.width or layer.depth to null"
            )
        return depth
    width = _positive_int(cfg, "width")
    try:
        return FFF.depth_for(width, leaf_width)
    except ValueError:
        raise LayerConfigError(
            f"layer.width={width} must be layer.leaf_width={leaf_width} times a power of two "
            f"(width = leaf_width * 2**depth), e.g. {leaf_width}, {2 * leaf_width}, "
            f"{4 * leaf_width}, ..."
        ) from None


def moe_num_experts(cfg: Mapping[str, Any]) -> int:
    """Number of experts of an MoE config: given directly, or width / expert_width."""
    expert_width = _positive_int(cfg, "expert_width")
    if cfg.get("num_experts") is not None:
        num_experts = _positive_int(cfg, "num_experts")
        width = cfg.get("width")
        if width is not None and width != num_experts * expert_width:
            raise LayerConfigError(
                f"layer.width={width} disagrees with layer.num_experts={num_experts} * "
                f"layer.expert_width={expert_width}; set one of them to null"
            )
        return num_experts
    width = _positive_int(cfg, "width")
    if width % expert_width:
        raise LayerConfigError(
            f"layer.width={width} must be a multiple of layer.expert_width={expert_width}"
        )
    return width // expert_width


def _check_keys(cfg: Mapping[str, Any]) -> str:
    name = cfg.get("name")
    if name not in _KEYS:
        raise LayerConfigError(f"layer.name must be one of {list(LAYER_NAMES)}, got {name!r}")
    unknown = set(cfg) - _KEYS[name]
    if unknown:
        raise LayerConfigError(
            f"unknown setting(s) for layer={name}: {sorted(unknown)}; "
            f"allowed: {sorted(_KEYS[name])}"
        )
    return name


def build_layer(cfg: Mapping[str, Any], in_features: int, out_features: int) -> nn.Module:
    """Return the layer described by ``cfg`` mapping (..., in_features) -> (..., out_features).

    Raises:
        LayerConfigError: a setting is invalid (the message names the ``layer.*`` key).
    """
    name = _check_keys(cfg)
    common = {"activation": cfg.get("activation", "relu"), "dropout": cfg.get("dropout", 0.0)}
    try:
        if name == "fff":
            return FFF(
                in_features,
                out_features,
                leaf_width=cfg["leaf_width"],
                depth=fff_depth(cfg),
                region_leak=cfg.get("region_leak", 0.0),
                hardening=cfg.get("hardening", 0.0),
                hardening_reduction=cfg.get("hardening_reduction", "mean"),
                frozen_tree=cfg.get("frozen_tree", False),
                **common,
            )
        if name == "ff":
            return FF(in_features, out_features, hidden_width=_positive_int(cfg, "width"), **common)
        return MoE(
            in_features,
            out_features,
            num_experts=moe_num_experts(cfg),
            expert_width=cfg["expert_width"],
            k=cfg.get("k", 2),
            noisy_gating=cfg.get("noisy_gating", True),
            w_importance=cfg.get("w_importance", 0.1),
            w_load=cfg.get("w_load", 0.1),
            **common,
        )
    except LayerConfigError:
        raise
    except ValueError as err:
        raise LayerConfigError(f"layer ({name}): {err}") from None


def layer_sizes(cfg: Mapping[str, Any]) -> dict[str, int | None]:
    """The paper's size columns of a layer config (keys that do not apply are None); an MoE
    also gives num_experts, expert_width and k."""
    name = _check_keys(cfg)
    if name == "fff":
        depth = fff_depth(cfg)
        leaf = _positive_int(cfg, "leaf_width")
        return {
            "width": leaf * 2**depth,
            "leaf_width": leaf,
            "depth": depth,
            "training_width": leaf * 2**depth,
            "inference_width": leaf,
            "inference_size": depth + leaf,
        }
    if name == "ff":
        width = _positive_int(cfg, "width")
        return {
            "width": width,
            "leaf_width": None,
            "depth": None,
            "training_width": width,
            "inference_width": width,
            "inference_size": width,
        }
    experts = moe_num_experts(cfg)
    ew = _positive_int(cfg, "expert_width")
    k = cfg.get("k", 2)
    return {
        "width": experts * ew,
        "leaf_width": None,
        "depth": None,
        "training_width": experts * ew,
        "inference_width": k * ew,
        "inference_size": k * ew + experts,
        "num_experts": experts,
        "expert_width": ew,
        "k": k,
    }
