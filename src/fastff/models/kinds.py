"""Layer kinds: one :class:`LayerKind` per kind says everything the rest of fastff asks of it.

fastff's kinds are ``ff`` (dense baseline), ``fff`` (fast feedforward) and ``moe`` (noisy top-k
mixture of experts). Other packages add kinds through the entry-point group
:data:`ENTRY_POINT_GROUP` (``fastff.layer_kinds``): each entry point, named by the kind, loads a
:class:`LayerKind`. For example, in a package's ``pyproject.toml``::

    [project.entry-points."fastff.layer_kinds"]
    lowrank = "my_package.kind:LOWRANK"

plus a ``layer/lowrank.yaml`` config on Hydra's search path (``hydra.searchpath=[...]``) whose
``_target_`` is the kind's :attr:`LayerKind.target`. The models, the benchmark, training, export
and the report then find it by name (:func:`get`) or by layer (:func:`kind_of`), and a
checkpoint may name its builder (:func:`targets`: the allow-list's layer builders).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import torch
from torch import nn

from fastff.layers import FF, FFF, MoE
from fastff.layers.quantized_fff import QuantizedFFF
from fastff.layers.quantized_moe import QuantizedMoE
from fastff.models import size_rules

ENTRY_POINT_GROUP = "fastff.layer_kinds"
"""The entry-point group other packages register layer kinds in (name: the kind's name)."""

BUILDERS_MODULE = "fastff.models.layer_builders"

SizeRule = Callable[[int | None, Mapping[str, Any], str | None], dict[str, int]]
"""``(width, config keywords, host) -> constructor size arguments``; ``host`` names where a
width the backbone gives comes from (None: ``layer.width``). Raises LayerConfigError."""


@dataclass(frozen=True)
class BenchShape:
    """The size of one benchmark case, shared by every kind timed in it: the FFF's leaf width
    and depth give the training width ``leaf_width * 2**depth`` (the others use that width)."""

    leaf_width: int
    depth: int
    moe_k: int
    training: bool
    hardening: float = 0.0

    @property
    def training_width(self) -> int:
        return self.leaf_width * 2**self.depth


def dense_macs(layer: nn.Module, training: bool) -> int:
    """Multiply-adds of one input: ``in * size + width * out`` from the layer's size properties
    (training: every neuron, ``training_size``; inference: ``inference_size``)."""
    if training:
        size, width = layer.training_size, layer.training_width
    else:
        size, width = layer.inference_size, layer.inference_width
    return layer.in_features * size + width * layer.out_features


def _moe_macs(layer: nn.Module, training: bool) -> int:
    """An MoE evaluates only its k experts (and the E gate neurons) also in training, plus the
    noise matrix (E more neurons) when gating is noisy."""
    macs = layer.in_features * layer.inference_size + layer.inference_width * layer.out_features
    if training and layer.noisy_gating:
        macs += layer.in_features * layer.num_experts
    return macs


def _no_columns(layer: nn.Module) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class LayerKind:
    """Everything fastff asks of one layer kind.

    Attributes:
        name: the kind's name: ``conf/layer/<name>.yaml``, ``layer`` in metrics.json.
        label: how tables print it (``FFF``); the benchmark's column ``t_<label>_ms``.
        layer_class: the ``nn.Module`` its builder builds (its constructor arguments, less the
            host's and :attr:`derived`, are the config's keys).
        target: the dotted path of its builder, a layer config's ``_target_`` and the
            checkpoint identity (the only ``_target_`` a checkpoint may name for it).
        sizes: the size rule (:data:`SizeRule`): constructor size arguments from the training
            width and the config.
        derived: constructor arguments the size rule derives (never config keys by themselves).
        classes: further classes of this kind (its quantized forms).
        size_columns: the kind's own metrics.json / report size columns of a built layer
            (``leaf_width``, ``depth``; ``num_experts``, ...).
        report_columns: the run columns of the report that apply to it besides the common ones.
        timm_sizes: the timm adapter's size rule ``(hidden_features, given, name) -> size
            arguments``; None: no ``timm_mlp(layer_class)``.
        timm_choices: the size arguments of which ``timm_mlp`` takes exactly one (empty: none).
        timm_derived: size arguments ``timm_mlp`` refuses (they come from ``hidden_features``).
        timm_fix_init: the layer has timm's ``fc2`` that a ViT's ``fix_init`` rescales.
        bench_layer: builder keywords of the kind in a benchmark case (:class:`BenchShape`);
            None: not benchmarked.
        bench_vit_layer: builder keywords as the ViT benchmark's MLP, ``(leaf_width, moe_k,
            hidden) -> keywords`` (the ViT gives the width); None: not in the ViT benchmark.
        bench_prepare: adjusts a freshly built layer before it is timed (e.g. a trained-looking
            router).
        macs: multiply-adds of one input, ``(layer, training) -> int``.
        export_path: a context manager factory that puts one layer on its exportable path
            (restored on exit); None: the layer exports as it is.
        unused_parameters: some parameters get no gradient in a training step (DDP must look).
    """

    name: str
    label: str
    layer_class: type[nn.Module]
    target: str
    sizes: SizeRule
    derived: tuple[str, ...] = ()
    classes: tuple[type[nn.Module], ...] = ()
    size_columns: Callable[[nn.Module], dict[str, Any]] = _no_columns
    report_columns: tuple[str, ...] = ()
    timm_sizes: Callable[[int, Mapping[str, Any], str], dict[str, int]] | None = None
    timm_choices: tuple[str, ...] = ()
    timm_derived: tuple[str, ...] = ()
    timm_fix_init: bool = False
    bench_layer: Callable[[BenchShape], dict[str, Any]] | None = None
    bench_vit_layer: Callable[[int, int, int], dict[str, Any]] | None = None
    bench_prepare: Callable[[nn.Module], nn.Module] | None = None
    macs: Callable[[nn.Module, bool], int] = dense_macs
    export_path: Callable[[nn.Module], contextlib.AbstractContextManager] | None = None
    unused_parameters: bool = False

    @property
    def builder(self) -> Callable[..., nn.Module]:
        """The builder :attr:`target` names (imported on first use)."""
        module, _, name = self.target.rpartition(".")
        return getattr(importlib.import_module(module), name)

    @property
    def types(self) -> tuple[type[nn.Module], ...]:
        """Every class a layer of this kind may be."""
        return (self.layer_class, *self.classes)

    def is_kind_of(self, layer: nn.Module | type[nn.Module]) -> bool:
        cls = layer if isinstance(layer, type) else type(layer)
        return issubclass(cls, self.types)


# ------------------------------------------------------------------------------ fastff's kinds
def _fff_columns(layer: nn.Module) -> dict[str, Any]:
    return {"leaf_width": layer.leaf_width, "depth": layer.depth}


def _moe_columns(layer: nn.Module) -> dict[str, Any]:
    return {"num_experts": layer.num_experts, "expert_width": layer.expert_width, "k": layer.k}


def _moe_bench(shape: BenchShape) -> dict[str, Any]:
    experts = 2**shape.depth
    return {
        "expert_width": shape.leaf_width,
        "num_experts": experts,
        "k": min(shape.moe_k, experts),
        "noisy_gating": shape.training,
    }


def _spread_gate(moe: nn.Module) -> nn.Module:
    """The MoE gate starts at zero (all experts tie); a trained-looking random gate spreads the
    inputs over the experts as a trained router would, so dispatch is timed realistically."""
    bound = 1.0 / math.sqrt(moe.in_features)
    with torch.no_grad():
        moe.w_gate.uniform_(-bound, bound)
    return moe


EXPORT_STRATEGY = "gather"
"""The FFF hard strategy traced into exported graphs."""


def _fff_export_path(layer: nn.Module) -> contextlib.AbstractContextManager:
    """FFF (and its quantized form): eval path ``"hard"`` on the ``gather`` strategy (one
    gather per level, fixed shapes)."""
    return layer.hard_path(EXPORT_STRATEGY)


@contextlib.contextmanager
def _moe_export_path(layer: nn.Module) -> Iterator[None]:
    """MoE: :meth:`~fastff.layers.MoE.gathered_forward` (top-k gates, the k experts' weights
    gathered per input: fixed shapes); a quantized MoE exports as it is."""
    if not isinstance(layer, MoE):
        yield
        return
    saved = layer.__dict__.get("forward")
    layer.forward = layer.gathered_forward
    try:
        yield
    finally:
        if saved is None:
            del layer.forward
        else:
            layer.forward = saved


FF_KIND = LayerKind(
    name="ff",
    label="FF",
    layer_class=FF,
    target=f"{BUILDERS_MODULE}.ff",
    sizes=size_rules.ff_sizes,
    derived=("hidden_width",),
    timm_sizes=size_rules.ff_timm_sizes,
    timm_derived=("hidden_width",),
    timm_fix_init=True,
    bench_layer=lambda shape: {"width": shape.training_width},
    bench_vit_layer=lambda leaf, moe_k, hidden: {"width": None},
)
FFF_KIND = LayerKind(
    name="fff",
    label="FFF",
    layer_class=FFF,
    target=f"{BUILDERS_MODULE}.fff",
    sizes=size_rules.fff_sizes,
    derived=("depth",),
    classes=(QuantizedFFF,),
    size_columns=_fff_columns,
    report_columns=("leaf_width", "depth", "hardening"),
    timm_sizes=size_rules.fff_timm_sizes,
    timm_choices=("leaf_width", "depth"),
    bench_layer=lambda shape: {
        "leaf_width": shape.leaf_width,
        "depth": shape.depth,
        "hardening": shape.hardening,
    },
    bench_vit_layer=lambda leaf, moe_k, hidden: {"width": None, "leaf_width": leaf},
    export_path=_fff_export_path,
)
MOE_KIND = LayerKind(
    name="moe",
    label="MoE",
    layer_class=MoE,
    target=f"{BUILDERS_MODULE}.moe",
    sizes=size_rules.moe_sizes,
    derived=("num_experts",),
    classes=(QuantizedMoE,),
    size_columns=_moe_columns,
    report_columns=("num_experts", "k", "gating"),
    timm_sizes=size_rules.moe_timm_sizes,
    timm_choices=("expert_width", "num_experts"),
    bench_layer=_moe_bench,
    bench_vit_layer=lambda leaf, moe_k, hidden: {
        "width": None,
        "expert_width": leaf,
        "k": min(moe_k, hidden // leaf),
    },
    bench_prepare=_spread_gate,
    macs=_moe_macs,
    export_path=_moe_export_path,
    unused_parameters=True,
)
FASTFF_KINDS = (FF_KIND, FFF_KIND, MOE_KIND)
"""fastff's own kinds, in the order tables list them."""


# ------------------------------------------------------------------------------------ registry
class UnknownKindError(ValueError):
    """No registered kind has this name, builder or layer class."""


@functools.cache
def registered() -> tuple[LayerKind, ...]:
    """The kinds other packages register in :data:`ENTRY_POINT_GROUP`, sorted by name (loaded
    once per process; ``registered.cache_clear()`` reads the group again)."""
    found = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        kind = point.load()
        if not isinstance(kind, LayerKind) or kind.name != point.name:
            raise TypeError(
                f"entry point {point.name} = {point.value} in {ENTRY_POINT_GROUP} must load a "
                f"fastff.models.kinds.LayerKind named {point.name!r}, got {kind!r}"
            )
        if kind.name in {k.name for k in FASTFF_KINDS}:
            raise TypeError(f"{ENTRY_POINT_GROUP}: {point.value} redefines fastff's {kind.name}")
        found.append(kind)
    return tuple(found)


def all_kinds() -> tuple[LayerKind, ...]:
    """fastff's kinds, then the registered ones."""
    return (*FASTFF_KINDS, *registered())


def names() -> list[str]:
    """Every kind's name, fastff's first."""
    return [kind.name for kind in all_kinds()]


def get(name: str) -> LayerKind:
    """The kind called ``name``; UnknownKindError naming the registered ones otherwise."""
    for kind in all_kinds():
        if kind.name == name:
            return kind
    raise UnknownKindError(f"no layer kind {name!r}; registered: {names()}")


def targets() -> dict[str, str]:
    """Kind name -> its builder's dotted path: the layer builders a checkpoint may name."""
    return {kind.name: kind.target for kind in all_kinds()}


def kind_of_builder(builder: Callable[..., Any]) -> LayerKind | None:
    """The kind whose builder ``builder`` is, or None."""
    target = f"{getattr(builder, '__module__', '')}.{getattr(builder, '__qualname__', '')}"
    return next((kind for kind in all_kinds() if kind.target == target), None)


def kind_of(layer: nn.Module | type[nn.Module]) -> LayerKind:
    """The kind of a layer or layer class (registered kinds first, so a kind may subclass one
    of fastff's); UnknownKindError for anything else."""
    for kind in (*registered(), *FASTFF_KINDS):
        if kind.is_kind_of(layer):
            return kind
    cls = layer if isinstance(layer, type) else type(layer)
    raise UnknownKindError(f"not a fastff layer: {cls.__name__}")


def layer_types() -> tuple[type[nn.Module], ...]:
    """Every class of every kind (to find the layers a model hosts)."""
    return tuple(cls for kind in all_kinds() for cls in kind.types)
