"""Build an FFF, FF or MoE from the paper's sizes: the targets of ``conf/layer/*.yaml``.

A layer config is a Hydra partial of one of these builders; the host (a backbone) supplies
``in_features`` and ``out_features`` (and may pass ``device``/``dtype``). Each builder speaks in the
training ``width`` the paper's tables use; the kind's size rule (:mod:`fastff.models.size_rules`,
named by its :class:`~fastff.models.kinds.LayerKind`) derives the layer's own size argument:

- ``fff``: ``depth = log2(width / leaf_width)`` (or ``depth`` given directly);
- ``ff``: ``hidden_width = width``;
- ``moe``: ``num_experts = width / expert_width`` (or ``num_experts`` given directly).

Every builder, a registered kind's too, goes through :func:`build_layer`: unknown keys refused,
the size rule, the memory check. Every other keyword goes to the layer's constructor unchanged,
so a new constructor argument needs no edit here. Errors name the config key (``layer.<key>``); a
value the layer itself rejects is re-raised as :class:`LayerConfigError` naming
``layer.<argument>``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from fastff.errors import LayerConfigError
from fastff.layers import FF, FFF, MoE
from fastff.models import kinds
from fastff.models.size_rules import fff_depth, moe_num_experts
from fastff.setting_names import closest_name

__all__ = [
    "HOST_ARGUMENTS",
    "LayerConfigError",
    "build_layer",
    "check_config_keys",
    "config_keys",
    "ff",
    "fff",
    "fff_depth",
    "layer_name",
    "moe",
    "moe_num_experts",
]

HOST_ARGUMENTS = ("in_features", "out_features", "device", "dtype")
"""Constructor arguments the host passes; never part of a layer config."""


def memory_limit_bytes() -> int:
    """The most parameter bytes one layer may need: $FASTFF_MAX_LAYER_GB (GiB) if set, else this
    machine's physical memory."""
    cap = os.environ.get("FASTFF_MAX_LAYER_GB")
    if cap:
        return int(float(cap) * 2**30)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2**63


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_layer_size(cls: type[nn.Module], args: dict[str, Any], size_key: str) -> None:
    """Build ``cls(**args)`` on the meta device (nothing allocated) and raise LayerConfigError
    naming ``size_key`` when its parameters need more than :func:`memory_limit_bytes`."""
    meta = cls(**{**args, "device": "meta"})
    needed = sum(p.numel() * p.element_size() for p in meta.parameters())
    limit = memory_limit_bytes()
    if needed > limit:
        raise LayerConfigError(
            f"{size_key}: the layer ({cls.__name__}, {args['in_features']} -> "
            f"{args['out_features']}) needs {_gib(needed)} of parameters, more than the "
            f"{_gib(limit)} allowed (this machine's memory, or $FASTFF_MAX_LAYER_GB); "
            "choose a smaller layer.width or layer.depth"
        )


def _construct(cls: type[nn.Module], args: dict[str, Any], size_key: str = "layer") -> nn.Module:
    """``cls(**args)``; a ValueError naming one of the arguments is re-raised naming its key.
    A layer too large for this machine is refused, naming ``size_key``, before allocating."""
    try:
        if str(args.get("device")) != "meta":
            check_layer_size(cls, args, size_key)
    except LayerConfigError:
        raise
    except ValueError:
        pass  # the constructor below says what is wrong
    try:
        return cls(**args)
    except ValueError as err:
        message = str(err)
        named = next((a for a in args if message.startswith(f"{a} ")), None)
        if named is None or named in HOST_ARGUMENTS:
            raise LayerConfigError(f"layer ({cls.__name__}): {message}") from None
        raise LayerConfigError(f"layer.{message}") from None


def build_layer(
    name: str, in_features: int, out_features: int, *, width: int | None = None, **config: Any
) -> nn.Module:
    """The layer of kind ``name`` (:mod:`fastff.models.kinds`) for a ``layer`` config: unknown
    keys refused, the size rule applied to ``width``, too large a layer refused before
    allocating. Every builder (fastff's and a registered kind's) ends here.

    Args:
        name: the kind's name.
        in_features, out_features: from the host; ``config`` may hold ``device`` and ``dtype``.
        width: the training width (None: the kind's size keys alone decide).
        **config: the rest of the layer config: size keys and constructor arguments.
    """
    kind = kinds.get(name)
    check_config_keys(kind, {"width": width, **config})
    sizes = kind.sizes(width, config, None)
    args = dict(in_features=in_features, out_features=out_features)
    if width is not None:
        size_key = f"layer.width={width}"
    else:
        key, value = next(iter(sizes.items()))
        size_key = f"layer.{key}={value}"
    return _construct(kind.layer_class, {**args, **config, **sizes}, size_key)


def fff(
    in_features: int,
    out_features: int,
    *,
    leaf_width: int,
    width: int | None = None,
    depth: int | None = None,
    **kwargs: Any,
) -> FFF:
    """An :class:`~fastff.layers.FFF` of training ``width`` (depth derived) or of ``depth``."""
    return build_layer(
        "fff", in_features, out_features, width=width, leaf_width=leaf_width, depth=depth, **kwargs
    )


def ff(in_features: int, out_features: int, *, width: int, **kwargs: Any) -> FF:
    """A dense :class:`~fastff.layers.FF` whose hidden width is the training ``width``."""
    return build_layer("ff", in_features, out_features, width=width, **kwargs)


def moe(
    in_features: int,
    out_features: int,
    *,
    expert_width: int,
    width: int | None = None,
    num_experts: int | None = None,
    **kwargs: Any,
) -> MoE:
    """An :class:`~fastff.layers.MoE` of training ``width`` = num_experts * expert_width."""
    return build_layer(
        "moe",
        in_features,
        out_features,
        width=width,
        expert_width=expert_width,
        num_experts=num_experts,
        **kwargs,
    )


def config_keys(kind: kinds.LayerKind) -> list[str]:
    """The keys a layer config of ``kind`` may hold: its builder's own keywords and every
    constructor argument of its layer that the size rule does not derive or the host passes."""
    own = [
        name
        for name, p in inspect.signature(kind.builder).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    ]
    layer_args = [
        name
        for name in inspect.signature(kind.layer_class).parameters
        if name not in (*HOST_ARGUMENTS, *kind.derived, *own)
    ]
    return own + layer_args


def check_config_keys(kind: kinds.LayerKind, cfg: Mapping[str, Any]) -> None:
    """Raise LayerConfigError naming every key of ``cfg`` that a ``kind`` config does not take
    (keys starting with ``_`` and the host's arguments pass)."""
    allowed = config_keys(kind)
    unknown = sorted(
        key
        for key in cfg
        if not key.startswith("_") and key not in allowed and key not in HOST_ARGUMENTS
    )
    if unknown:
        keys = ", ".join(f"layer.{key}" for key in unknown)
        closest = closest_name(unknown[0], allowed) if len(unknown) == 1 else None
        hint = f"; did you mean {closest}?" if closest else ""
        raise LayerConfigError(
            f"{keys}: unknown setting{'s' if len(unknown) > 1 else ''} for layer={kind.name}{hint} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def layer_name(layer: nn.Module | type[nn.Module]) -> str:
    """The kind's name (``"fff"``, ``"ff"``, ``"moe"``, ...) of a layer or layer class."""
    try:
        return kinds.kind_of(layer).name
    except kinds.UnknownKindError as err:
        raise ValueError(str(err)) from None
