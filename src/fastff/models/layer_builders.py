"""Build an FFF, FF or MoE from the paper's sizes: the targets of ``conf/layer/*.yaml``.

A layer config is a Hydra partial of one of these builders; the host (a backbone) supplies
``in_features`` and ``out_features`` (and may pass ``device``/``dtype``). Each builder speaks in the
training ``width`` the paper's tables use and derives the layer's own size argument from it:

- ``fff``: ``depth = log2(width / leaf_width)`` (or ``depth`` given directly);
- ``ff``: ``hidden_width = width``;
- ``moe``: ``num_experts = width / expert_width`` (or ``num_experts`` given directly).

Every other keyword goes to the layer's constructor unchanged, so a new constructor argument needs
no edit here. Errors name the config key (``layer.<key>``); a value the layer itself rejects is
re-raised as :class:`LayerConfigError` naming ``layer.<argument>``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from fastff.errors import LayerConfigError
from fastff.layers import FF, FFF, MoE
from fastff.layers.quantized_fff import QuantizedFFF
from fastff.layers.quantized_moe import QuantizedMoE
from fastff.layers.validation import check_int
from fastff.setting_names import closest_name

HOST_ARGUMENTS = ("in_features", "out_features", "device", "dtype")
"""Constructor arguments the host passes; never part of a layer config."""

DERIVED = ("depth", "hidden_width", "num_experts")
"""Constructor arguments a builder derives from the training ``width``."""


def _positive(key: str, value: object) -> int:
    try:
        return check_int(f"layer.{key}", value, 1)
    except ValueError as err:
        raise LayerConfigError(str(err)) from None


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


def fff_depth(width: int | None, leaf_width: object, depth: int | None) -> int:
    """Depth of an FFF config: ``depth`` if given (checked against ``width``), else
    log2(width / leaf_width), which must be an integer."""
    leaf_width = _positive("leaf_width", leaf_width)
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
    width = _positive("width", width)
    try:
        return FFF.depth_for(width, leaf_width)
    except ValueError:
        raise LayerConfigError(
            f"layer.width={width} must be layer.leaf_width={leaf_width} times a power of two "
            f"(width = leaf_width * 2**depth), e.g. {leaf_width}, {2 * leaf_width}, "
            f"{4 * leaf_width}, ..."
        ) from None


def moe_num_experts(width: int | None, expert_width: object, num_experts: int | None) -> int:
    """Number of experts of an MoE config: given directly, or width / expert_width."""
    expert_width = _positive("expert_width", expert_width)
    if num_experts is not None:
        num_experts = _positive("num_experts", num_experts)
        if width is not None and width != num_experts * expert_width:
            raise LayerConfigError(
                f"layer.width={width} disagrees with layer.num_experts={num_experts} * "
                f"layer.expert_width={expert_width}; set one of them to null"
            )
        return num_experts
    width = _positive("width", width)
    if width % expert_width:
        raise LayerConfigError(
            f"layer.width={width} must be a multiple of layer.expert_width={expert_width}"
        )
    return width // expert_width


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
    depth = fff_depth(width, leaf_width, depth)
    args = dict(in_features=in_features, out_features=out_features, leaf_width=leaf_width)
    size_key = f"layer.width={width}" if width is not None else f"layer.depth={depth}"
    return _construct(FFF, {**args, "depth": depth, **kwargs}, size_key)


def ff(in_features: int, out_features: int, *, width: int, **kwargs: Any) -> FF:
    """A dense :class:`~fastff.layers.FF` whose hidden width is the training ``width``."""
    args = dict(in_features=in_features, out_features=out_features)
    hidden = _positive("width", width)
    return _construct(FF, {**args, "hidden_width": hidden, **kwargs}, f"layer.width={width}")


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
    num_experts = moe_num_experts(width, expert_width, num_experts)
    args = dict(in_features=in_features, out_features=out_features, expert_width=expert_width)
    size_key = f"layer.width={width}" if width is not None else f"layer.num_experts={num_experts}"
    return _construct(MoE, {**args, "num_experts": num_experts, **kwargs}, size_key)


BUILDERS: dict[Callable[..., nn.Module], type[nn.Module]] = {fff: FFF, ff: FF, moe: MoE}
"""Each builder and the layer class it builds."""

LAYER_CLASSES: dict[str, type[nn.Module]] = {"fff": FFF, "ff": FF, "moe": MoE}
"""Layer name (as in metrics.json and the ``layer`` config group) -> class."""


def config_keys(builder: Callable[..., nn.Module]) -> list[str]:
    """The keys a layer config of ``builder`` may hold: the builder's own keywords and every
    constructor argument of its layer that the builder does not derive or the host passes."""
    own = [
        name
        for name, p in inspect.signature(builder).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    ]
    layer_args = [
        name
        for name in inspect.signature(BUILDERS[builder]).parameters
        if name not in (*HOST_ARGUMENTS, *DERIVED, *own)
    ]
    return own + layer_args


def check_config_keys(builder: Callable[..., nn.Module], cfg: Mapping[str, Any]) -> None:
    """Raise LayerConfigError naming every key of ``cfg`` that ``builder`` does not take."""
    allowed = config_keys(builder)
    unknown = sorted(key for key in cfg if not key.startswith("_") and key not in allowed)
    if unknown:
        name = layer_name(BUILDERS[builder])
        keys = ", ".join(f"layer.{key}" for key in unknown)
        closest = closest_name(unknown[0], allowed) if len(unknown) == 1 else None
        hint = f"; did you mean {closest}?" if closest else ""
        raise LayerConfigError(
            f"{keys}: unknown setting{'s' if len(unknown) > 1 else ''} for layer={name}{hint} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def layer_name(layer: nn.Module | type[nn.Module]) -> str:
    """``"fff"``, ``"ff"`` or ``"moe"`` for a layer or layer class."""
    cls = layer if isinstance(layer, type) else type(layer)
    if issubclass(cls, QuantizedFFF):  # fastff.quantize's FFF and MoE
        return "fff"
    if issubclass(cls, QuantizedMoE):
        return "moe"
    for name, layer_cls in LAYER_CLASSES.items():
        if issubclass(cls, layer_cls):
            return name
    raise ValueError(f"not a fastff layer: {cls.__name__}")
