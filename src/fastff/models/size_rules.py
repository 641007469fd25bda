"""Width -> size rules: the one place that derives an FFF's depth or an MoE's expert count from a
training width.

Two callers ask, in two vocabularies:

- a ``layer`` config (:mod:`fastff.models.layer_builders`, flat net and ViT alike): the paper's
  training ``width`` and the kind's own size keys; errors name the config keys (``layer.<key>``);
  ``host`` names where a width given by the backbone comes from (the ViT's MLP hidden width);
- timm's ``mlp_layer`` call (:mod:`fastff.models.timm_mlp`, a layer class and fixed keyword
  arguments): ``hidden_features`` and one of the size arguments; errors name timm's argument.

Each rule returns the layer constructor's size arguments, e.g. ``{"depth": 3}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastff.errors import LayerConfigError
from fastff.layers import FFF
from fastff.layers.validation import check_int


def positive(key: str, value: object) -> int:
    """``value`` as an integer >= 1, else LayerConfigError naming ``layer.<key>``."""
    try:
        return check_int(f"layer.{key}", value, 1)
    except ValueError as err:
        raise LayerConfigError(str(err)) from None


# ------------------------------------------------------------------------------ layer configs
def fff_depth(
    width: int | None, leaf_width: object, depth: int | None, host: str | None = None
) -> int:
    """Depth of an FFF config: ``depth`` if given (checked against ``width``), else
    log2(width / leaf_width), which must be an integer. ``host``: the backbone's description of
    a ``width`` it gives (None: ``width`` is ``layer.width``)."""
    leaf_width = positive("leaf_width", leaf_width)
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise LayerConfigError(f"layer.depth must be an integer >= 0 or null, got {depth!r}")
        if width is not None and width != leaf_width * 2**depth:
            if host is not None:
                raise LayerConfigError(
                    f"layer.depth={depth} with layer.leaf_width={leaf_width} gives training "
                    f"width {leaf_width * 2**depth}, not {host}; set layer.depth=null"
                )
            raise LayerConfigError(
                f"layer.width={width} disagrees with layer.leaf_width={leaf_width} and "
                f"layer.depth={depth} (width must be leaf_width * 2**depth = "
                f"{leaf_width * 2**depth}); set one of layer.width or layer.depth to null"
            )
        return depth
    width = positive("width", width)
    try:
        return FFF.depth_for(width, leaf_width)
    except ValueError:
        if host is not None:
            raise LayerConfigError(
                f"layer.leaf_width={leaf_width} must divide {host} into a power of two "
                "(width = leaf_width * 2**depth)"
            ) from None
        raise LayerConfigError(
            f"layer.width={width} must be layer.leaf_width={leaf_width} times a power of two "
            f"(width = leaf_width * 2**depth), e.g. {leaf_width}, {2 * leaf_width}, "
            f"{4 * leaf_width}, ..."
        ) from None


def moe_num_experts(width: int | None, expert_width: object, num_experts: int | None) -> int:
    """Number of experts of an MoE config: given directly, or width / expert_width."""
    expert_width = positive("expert_width", expert_width)
    if num_experts is not None:
        num_experts = positive("num_experts", num_experts)
        if width is not None and width != num_experts * expert_width:
            raise LayerConfigError(
                f"layer.width={width} disagrees with layer.num_experts={num_experts} * "
                f"layer.expert_width={expert_width}; set one of them to null"
            )
        return num_experts
    width = positive("width", width)
    if width % expert_width:
        raise LayerConfigError(
            f"layer.width={width} must be a multiple of layer.expert_width={expert_width}"
        )
    return width // expert_width


def ff_sizes(width: int | None, config: Mapping[str, Any], host: str | None = None) -> dict:
    """FF: ``hidden_width = width``."""
    return {"hidden_width": positive("width", width)}


def fff_sizes(width: int | None, config: Mapping[str, Any], host: str | None = None) -> dict:
    """FFF: ``depth = log2(width / leaf_width)`` unless ``depth`` is given."""
    return {"depth": fff_depth(width, config.get("leaf_width"), config.get("depth"), host)}


def moe_sizes(width: int | None, config: Mapping[str, Any], host: str | None = None) -> dict:
    """MoE: ``num_experts = width / expert_width`` unless ``num_experts`` is given."""
    expert_width, num_experts = config.get("expert_width"), config.get("num_experts")
    return {"num_experts": moe_num_experts(width, expert_width, num_experts)}


# ----------------------------------------------------------------------------- timm's mlp_layer
def divide(hidden: int, divisor: int, divisor_text: str, name: str) -> int:
    """hidden / divisor if it is a positive integer, else a ValueError naming hidden_features."""
    quotient, remainder = divmod(hidden, divisor)
    if remainder or quotient < 1:
        raise ValueError(
            f"timm_mlp({name}): hidden_features={hidden} must be a positive multiple of "
            f"{divisor_text} (change the model's mlp_ratio or the layer's sizes)"
        )
    return quotient


def ff_timm_sizes(hidden: int, given: Mapping[str, Any], name: str) -> dict[str, int]:
    """FF under timm: ``hidden_width = hidden_features``."""
    return {"hidden_width": hidden}


def fff_timm_sizes(hidden: int, given: Mapping[str, Any], name: str) -> dict[str, int]:
    """FFF under timm: ``depth`` from ``leaf_width``, or ``leaf_width`` from ``depth``."""
    if "leaf_width" in given:
        leaf_width = check_int("leaf_width", given["leaf_width"], 1)
        try:
            return {"depth": FFF.depth_for(hidden, leaf_width)}
        except ValueError as error:
            raise ValueError(
                f"timm_mlp({name}): hidden_features={hidden} must be "
                f"leaf_width={leaf_width!r} * 2**depth for an integer depth >= 0 "
                f"(change mlp_ratio or leaf_width)"
            ) from error
    depth = check_int("depth", given["depth"], 0)
    return {"leaf_width": divide(hidden, 2**depth, f"2**depth (depth={depth})", name)}


def moe_timm_sizes(hidden: int, given: Mapping[str, Any], name: str) -> dict[str, int]:
    """MoE under timm: ``num_experts`` from ``expert_width``, or the reverse."""
    if "expert_width" in given:
        width = check_int("expert_width", given["expert_width"], 1)
        return {"num_experts": divide(hidden, width, f"expert_width={width}", name)}
    experts = check_int("num_experts", given["num_experts"], 1)
    return {"expert_width": divide(hidden, experts, f"num_experts={experts}", name)}
