"""Adapter that lets timm blocks build a fastff layer as their MLP (``mlp_layer=``).

timm 1.0's transformer blocks (``timm.models.vision_transformer.Block`` and relatives) build their
MLP as::

    mlp_layer(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer,
              norm_layer=None, bias=proj_bias, drop=proj_drop, device=..., dtype=...)

(some pass ``in_features`` positionally; none pass ``out_features``, which then equals
``in_features``). :func:`timm_mlp` turns a fastff layer class, plus the arguments that stay fixed,
into such a callable. timm's hidden width becomes the layer's training width:

- ``FF``: ``hidden_width = hidden_features``.
- ``FFF``: give ``leaf_width`` (then ``depth = log2(hidden_features / leaf_width)``) or ``depth``
  (then ``leaf_width = hidden_features / 2**depth``).
- ``MoE``: give ``expert_width`` (then ``num_experts = hidden_features / expert_width``) or
  ``num_experts`` (then ``expert_width = hidden_features / num_experts``).

A ratio that does not divide (or, for FFF, is not a power of two) is refused with a ValueError.

timm's other arguments:

- ``act_layer`` (a module class, a ``functools.partial`` of one, a name or an instance) becomes
  the layer's ``activation``, unless ``activation`` was given to :func:`timm_mlp`, which wins.
- ``drop``: a float p or a pair (p_hidden, p_out) as in timm's ``Mlp``. p_hidden becomes the
  layer's ``dropout`` (unless ``dropout`` was given to :func:`timm_mlp`, which wins). fastff
  layers have no dropout after their output, so p_out must be 0: a float drop > 0 (timm applies
  it after both projections) is refused rather than silently halved; build the timm model with
  ``proj_drop=0``.
- ``norm_layer``: only ``None`` or ``nn.Identity`` (the fastff layers have no norm between their
  two projections); anything else is refused.
- ``bias``: only ``True`` (or ``(True, True)``): every fastff layer has biases, so ``False`` is
  refused.
- ``device``, ``dtype``: passed to the layer, which creates its parameters there.

The block's ``mlp`` is then the fastff layer itself (inputs (B, N, D) -> (B, N, D)), so
``aux_loss`` and the size properties are found as on any other model. Note that timm's ViT weight
init (``init_weights_vit_timm``) re-initialises every ``nn.Linear``, which includes ``FF``'s
``fc1``/``fc2`` but none of FFF's or MoE's parameters.

Example::

    from functools import partial
    from timm.models.vision_transformer import VisionTransformer
    from fastff.layers import FFF
    from fastff.models.timm_mlp import timm_mlp

    vit = VisionTransformer(embed_dim=192, mlp_ratio=4.0, mlp_layer=timm_mlp(FFF, leaf_width=8))
    # or from a (Hydra ``_partial_: true``) partial of the layer:
    vit = VisionTransformer(mlp_layer=timm_mlp(partial(FFF, leaf_width=8, hardening=0.1)))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fastff.models import kinds

__all__ = ["TimmMlp", "timm_mlp"]

# Arguments the adapter fills in from timm's call; giving them to timm_mlp is refused.
_FROM_TIMM = ("in_features", "out_features", "device", "dtype")


def timm_mlp(
    layer: type[nn.Module] | Callable[..., nn.Module] | functools.partial, /, **layer_kwargs: Any
) -> TimmMlp:
    """A callable for timm's ``mlp_layer=`` that builds ``layer`` (FF, FFF, MoE or a subclass).

    Args:
        layer: the layer class, or a ``functools.partial`` of it holding keyword arguments only,
            or a layer config's builder (or partial of one: a Hydra ``_partial_: true`` layer
            config), called with ``width=hidden_features`` (its size rule, key checks and
            memory check, as for the flat net).
        **layer_kwargs: further fixed keyword arguments of the layer (they override the
            partial's). For FFF exactly one of ``leaf_width``/``depth``, for MoE exactly one of
            ``expert_width``/``num_experts``, for FF no ``hidden_width``: the other size comes
            from timm's ``hidden_features``. Never ``in_features``, ``out_features``, ``device``
            or ``dtype``, which timm supplies.

    Returns:
        A :class:`TimmMlp`; calling it as timm does returns the layer, mapping (B, N, D) ->
        (B, N, D).

    Raises:
        ValueError: for an unsupported layer, positional partial arguments, or size arguments
            that are missing, both given or supplied by timm.
    """
    if isinstance(layer, functools.partial):
        if layer.args:
            raise ValueError(
                f"timm_mlp needs a partial with keyword arguments only, got positional "
                f"arguments {layer.args!r} in {layer!r}"
            )
        layer_kwargs = {**layer.keywords, **layer_kwargs}
        layer = layer.func
    return TimmMlp(layer, layer_kwargs)


class TimmMlp:
    """Builds a fastff layer from timm's ``mlp_layer`` call; see :func:`timm_mlp` and the module
    docstring for how each timm argument is mapped.

    Attributes:
        layer_class: FF, FFF, MoE or another kind's class (or a subclass).
        builder: the layer config builder it calls (``fastff.models.layer_builders.fff``, a
            registered kind's builder) with ``width=hidden_features``, or None: it calls
            ``layer_class`` with the size arguments of the kind's timm rule.
        layer_kwargs: the fixed keyword arguments given to :func:`timm_mlp`.
    """

    def __init__(
        self,
        layer_class: type[nn.Module] | Callable[..., nn.Module],
        layer_kwargs: Mapping[str, Any],
    ) -> None:
        self.layer_kwargs = dict(layer_kwargs)
        # a layer config's builder: its kind's size rule decides, as for the flat net
        kind = None if isinstance(layer_class, type) else kinds.kind_of_builder(layer_class)
        self.builder = layer_class if kind is not None else None
        self._kind = kind or _supported_kind(layer_class)
        self.layer_class = self._kind.layer_class if kind is not None else layer_class
        supplied = sorted(set(_FROM_TIMM) & set(self.layer_kwargs))
        if supplied:
            raise ValueError(
                f"timm_mlp: {supplied} come from timm's mlp_layer call and cannot be fixed "
                f"in advance; remove them from the {self.layer_class.__name__} arguments"
            )
        if self.builder is not None:
            if self.layer_kwargs.get("width") is not None:
                raise ValueError(
                    f"timm_mlp({self._kind.name} config): width comes from timm's "
                    "hidden_features; remove it"
                )
            self.layer_kwargs.pop("width", None)
            return
        derived = [name for name in self._kind.timm_derived if name in self.layer_kwargs]
        if derived:
            raise ValueError(
                f"timm_mlp({self._kind.label}, ...): {derived[0]} comes from timm's "
                "hidden_features; remove it"
            )
        choices = self._kind.timm_choices
        given = [name for name in choices if name in self.layer_kwargs]
        if choices and len(given) != 1:
            listed = " or ".join(repr(name) for name in choices)
            raise ValueError(
                f"timm_mlp({layer_class.__name__}, ...) needs exactly one of {listed} "
                f"(the other comes from timm's hidden_features), got {given or 'none'}"
            )

    def __call__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = None,
        norm_layer: Any = None,
        bias: bool | tuple[bool, bool] = True,
        drop: float | tuple[float, float] = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **other: Any,
    ) -> nn.Module:
        """Build the layer as timm's ``Mlp(in_features, hidden_features, out_features, ...)``.

        ``hidden_features`` and ``out_features`` default to ``in_features`` (as timm's ``Mlp``).
        The result maps (..., in_features) -> (..., out_features).

        Raises:
            ValueError: for an unsupported timm option (norm_layer, bias=False, output dropout,
                an unknown keyword) or a hidden width the layer cannot have.
        """
        name = self.layer_class.__name__
        if other:
            raise ValueError(
                f"timm_mlp({name}) does not support the mlp_layer arguments {sorted(other)}"
            )
        _check_norm_layer(norm_layer, name)
        _check_bias(bias, name)
        hidden_drop = _hidden_dropout(drop, name)
        hidden = hidden_features or in_features
        kwargs: dict[str, Any] = {}
        if act_layer is not None:
            kwargs["activation"] = act_layer
        kwargs["dropout"] = hidden_drop
        kwargs.update(self.layer_kwargs)
        if self.builder is not None:
            return self.builder(
                in_features,
                out_features or in_features,
                width=hidden,
                device=device,
                dtype=dtype,
                **kwargs,
            )
        kwargs.update(self._size_arguments(hidden))
        return self.layer_class(
            in_features=in_features,
            out_features=out_features or in_features,
            device=device,
            dtype=dtype,
            **kwargs,
        )

    def _size_arguments(self, hidden: int) -> dict[str, int]:
        """The derived size arguments for timm's hidden width ``hidden`` (the kind's
        :attr:`~fastff.models.kinds.LayerKind.timm_sizes` rule)."""
        return self._kind.timm_sizes(hidden, self.layer_kwargs, self.layer_class.__name__)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.layer_kwargs.items())
        name = self._kind.target if self.builder is not None else self.layer_class.__name__
        return f"timm_mlp({name}{', ' if arguments else ''}{arguments})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TimmMlp)
            and other.layer_class is self.layer_class
            and other.builder is self.builder
            and other.layer_kwargs == self.layer_kwargs
        )

    __hash__ = None  # type: ignore[assignment]  # mutable kwargs: not hashable


def _supported_kind(layer_class: object) -> kinds.LayerKind:
    """The kind whose class ``layer_class`` is (or derives from), if it has a timm rule."""
    adaptable = [kind for kind in kinds.all_kinds() if kind.timm_sizes is not None]
    if isinstance(layer_class, type):
        for kind in adaptable:
            if kind.is_kind_of(layer_class):
                return kind
    labels = [kind.label for kind in adaptable]
    listed = f"{', '.join(labels[:-1])} and {labels[-1]}" if len(labels) > 1 else labels[0]
    raise ValueError(
        f"timm_mlp supports fastff.layers.{listed} (or subclasses, or a functools.partial "
        f"of one), got {layer_class!r}"
    )


def _check_norm_layer(norm_layer: object, name: str) -> None:
    identity = norm_layer is nn.Identity or isinstance(norm_layer, nn.Identity)
    if norm_layer is not None and not identity:
        raise ValueError(
            f"timm_mlp({name}): norm_layer={norm_layer!r} is not supported: fastff layers have "
            "no norm between their projections (use norm_layer=None, e.g. timm's default "
            "scale_mlp_norm=False)"
        )


def _check_bias(bias: object, name: str) -> None:
    values = bias if isinstance(bias, tuple) else (bias,)
    if not all(value is True or value == 1 for value in values):
        raise ValueError(
            f"timm_mlp({name}): bias={bias!r} is not supported: fastff layers always have "
            "biases (use bias=True, e.g. timm's default proj_bias=True)"
        )


def _hidden_dropout(drop: object, name: str) -> float:
    """Hidden dropout from timm's ``drop`` (p or (p_hidden, p_out)); refuses p_out != 0."""
    if isinstance(drop, (tuple, list)):
        if len(drop) != 2:
            raise ValueError(f"timm_mlp({name}): drop must be a number or a pair, got {drop!r}")
        hidden, out = drop
    else:
        hidden = out = drop
    if out != 0:
        raise ValueError(
            f"timm_mlp({name}): drop={drop!r} asks for dropout {out!r} after the output "
            "projection, which fastff layers do not have: build the timm model with proj_drop=0 "
            "or pass drop=(p_hidden, 0.0)"
        )
    if isinstance(hidden, bool) or not isinstance(hidden, (int, float)):
        raise ValueError(f"timm_mlp({name}): drop must be a number or a pair, got {drop!r}")
    return float(hidden)
