"""Benchmark modes: each turns its config section into a list of cases.

A mode is a function ``(mode_cfg, implementations) -> list[Case]`` registered under its name with
:func:`register_mode`; ``conf/bench.yaml`` has one section per mode under ``modes:``. A new mode
(for example ``vit``) is a module that registers itself and is imported in
``fastff.bench.__init__``, plus its config section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from importlib.util import find_spec
from typing import Any

import torch
from torch import nn

from fastff.bench import compact
from fastff.bench.cases import (
    SUBJECT,
    Case,
    Implementation,
    bench_kinds,
    bytes_of,
    compared_kinds,
    flops,
    macs_per_input,
    n_params,
    speedup_column,
)
from fastff.layers import FFF
from fastff.layers.fff import PARAMETER_NAMES
from fastff.models.kinds import BenchShape, LayerKind

Mode = Callable[[Mapping[str, Any], list[str]], list[Case]]
MODES: dict[str, Mode] = {}


def register_mode(name: str) -> Callable[[Mode], Mode]:
    """Decorator registering a mode function under ``name``."""

    def register(function: Mode) -> Mode:
        MODES[name] = function
        return function

    return register


def reference_unavailable_reason() -> str | None:
    """Why the reference ``fastfeedforward`` package cannot be timed, or None."""
    if find_spec("fastfeedforward") is None:
        return "fastfeedforward is not installed (pip install fastfeedforward==0.2.1)"
    return None


# ------------------------------------------------------------------------------------ builders
LayerFactory = Callable[..., nn.Module]
"""``factory(in_features, out_features, device=None)``: one of the layer config builders."""


def _layer_implementation(
    kind: LayerKind, factory: LayerFactory, d: int, o: int, batch: int, training: bool
) -> Implementation:
    """An implementation built by ``factory`` (the path the ``layer`` configs take), with its
    weight bytes and FLOPs read from the same layer built on the meta device; the kind's
    :attr:`~fastff.models.kinds.LayerKind.bench_prepare` adjusts each built layer."""
    sized = factory(d, o, device="meta")
    prepare = kind.bench_prepare or (lambda layer: layer)
    return Implementation(
        kind.name,
        bytes_of(n_params(sized), training),
        flops(macs_per_input(sized, training), batch, training),
        lambda built: prepare(factory(d, o)),
    )


def _reference(built: dict[str, nn.Module]) -> nn.Module:
    """A ``fastfeedforward.FFF`` sharing the parameter tensors of the already built FFF."""
    import fastfeedforward

    fff = built["fff"]
    with torch.device("meta"):  # allocate nothing: every parameter is replaced below
        reference = fastfeedforward.FFF(
            input_width=fff.in_features,
            leaf_width=fff.leaf_width,
            output_width=fff.out_features,
            depth=fff.depth,
        )
    for name in PARAMETER_NAMES:
        setattr(reference, name, getattr(fff, name))
    reference.depth = nn.Parameter(torch.tensor(fff.depth), requires_grad=False)
    return reference


def _onnx_layer(
    source: str, factory: LayerFactory, d: int, o: int, built: dict[str, nn.Module]
) -> nn.Module:
    """The ``source`` layer (the one already built, else a new one) in ONNX Runtime."""
    from fastff.bench.onnx_impl import OnnxLayer

    return OnnxLayer(built.get(source) or factory(d, o))


def _factories(
    *, leaf: int, depth: int, moe_k: int, training: bool, hardening: float
) -> dict[str, LayerFactory]:
    """The layer factories of one case, one per kind (:attr:`LayerKind.bench_layer`): FFF (leaf,
    depth), FF of the same training width leaf * 2**depth, MoE with 2**depth experts of width
    leaf, top-``moe_k``, ..."""
    shape = BenchShape(leaf, depth, moe_k, training, hardening)
    return {kind.name: partial(kind.builder, **kind.bench_layer(shape)) for kind in bench_kinds()}


def ideal_ratios(costed: Mapping[str, Implementation]) -> dict[str, float]:
    """``ideal FF/FFF``, ``ideal MoE/FFF``, ...: each compared kind's FLOPs over the FFF's."""
    subject = costed[SUBJECT].flops
    return {
        f"ideal {speedup_column(kind)}": costed[kind.name].flops / subject
        for kind in compared_kinds()
        if kind.name in costed
    }


def _case(
    mode: str,
    wanted: list[str],
    *,
    d: int,
    o: int,
    leaf: int,
    depth: int,
    batch: int,
    training: bool,
    moe_k: int,
    hardening: float = 0.0,
) -> Case:
    """One case: the wanted implementations (the reference shares the FFF's weights) timed on
    eval-mode forwards, or on training steps when ``training``. The ideal ratios are the ratios
    of FLOPs per call, from the layers' size properties."""
    factories = _factories(
        leaf=leaf, depth=depth, moe_k=moe_k, training=training, hardening=hardening
    )
    costed = {
        kind.name: _layer_implementation(kind, factories[kind.name], d, o, batch, training)
        for kind in bench_kinds()
    }
    chosen = [name for name in wanted if name in (*factories, "reference")]
    if "reference" in chosen and "fff" not in chosen:
        chosen.insert(0, "fff")  # the reference borrows the FFF's weights
    fff = costed["fff"]
    implementations = {
        name: costed.get(name)
        or Implementation(
            "reference", fff.weight_bytes, fff.flops, _reference, shares_weights_with="fff"
        )
        for name in chosen
    }
    if not training:  # the ONNX Runtime columns: the same layers exported (their own weights)
        for name in ("ff_onnx", "fff_onnx"):
            if name in wanted:
                source = name.removesuffix("_onnx")
                build = partial(_onnx_layer, source, factories[source], d, o)
                implementations[name] = replace(costed[source], name=name, build=build)
        for name in compact.IMPLEMENTATIONS:  # FF and FFF with bf16 / int8 weights
            if name in wanted:
                source, _ = compact.source_and_format(name)
                make_float = partial(factories[source], d, o)
                implementations[name] = compact.implementation(name, costed[source], make_float)
    return Case(
        mode=mode,
        params={
            "batch": batch,
            "in": d,
            "out": o,
            "leaf_width": leaf,
            "depth": depth,
            "training_width": leaf * 2**depth,
        },
        in_features=d,
        batch=batch,
        kind="training" if training else "inference",
        implementations=implementations,
        ideal=ideal_ratios(costed),
    )


# ---------------------------------------------------------------------------------------- modes
@register_mode("paper_fig3")
def paper_fig3(cfg: Mapping[str, Any], wanted: list[str]) -> list[Case]:
    """Figures 3-4: a BERT-base-sized layer (768 -> 768), FFF leaf width l and depth 1..D vs FF
    of width l * 2**d and MoE with 2**d experts of width l, k = moe_k, in eval mode."""
    return [
        _case(
            "paper_fig3",
            wanted,
            d=cfg["in_features"],
            o=cfg["out_features"],
            leaf=cfg["leaf_width"],
            depth=depth,
            batch=batch,
            training=False,
            moe_k=cfg["moe_k"],
        )
        for batch in cfg["batch_sizes"]
        for depth in range(cfg["min_depth"], cfg["max_depth"] + 1)
    ]


@register_mode("table1")
def table1(cfg: Mapping[str, Any], wanted: list[str]) -> list[Case]:
    """Table 1 speed column: 784 -> 10, training widths x leaf widths (depth = log2(w / l)),
    FFF hard inference vs FF of the same training width (MoE: 2**d experts of width l, k = 1)."""
    return [
        _case(
            "table1",
            wanted,
            d=cfg["in_features"],
            o=cfg["out_features"],
            leaf=leaf,
            depth=FFF.depth_for(width, leaf),
            batch=batch,
            training=False,
            moe_k=1,
        )
        for batch in cfg["batch_sizes"]
        for width in cfg["widths"]
        for leaf in cfg["leaf_widths"]
        if width >= leaf
    ]


@register_mode("train")
def training_step(cfg: Mapping[str, Any], wanted: list[str]) -> list[Case]:
    """Training step (soft forward + backward) at equal training width: FFF (soft mixture,
    hardening loss) vs FF vs MoE (noisy top-k, 2**d experts of width l) vs the reference's
    ``training_forward`` with entropies."""
    return [
        _case(
            "train",
            wanted,
            d=cfg["in_features"],
            o=cfg["out_features"],
            leaf=cfg["leaf_width"],
            depth=depth,
            batch=batch,
            training=True,
            moe_k=cfg["moe_k"],
            hardening=cfg["hardening"],
        )
        for batch in cfg["batch_sizes"]
        for depth in cfg["depths"]
    ]


@register_mode("train_vit")
def training_step_vit(cfg: Mapping[str, Any], wanted: list[str]) -> list[Case]:
    """Training step at the ViT's MLP shapes: features -> features on an (images, tokens,
    features) batch whose gradient is needed (in the ViT the MLP's input comes from attention),
    an FFF of each leaf width at the MLP's training width vs the FF of that width (and MoE)."""
    features, tokens, width = cfg["features"], cfg["tokens"], cfg["training_width"]
    cases = []
    for images in cfg["batch_sizes"]:
        for leaf in cfg["leaf_widths"]:
            case = _case(
                "train_vit",
                wanted,
                d=features,
                o=features,
                leaf=leaf,
                depth=FFF.depth_for(width, leaf),
                batch=images * tokens,
                training=True,
                moe_k=cfg["moe_k"],
                hardening=cfg["hardening"],
            )
            cases.append(
                replace(
                    case,
                    params={**case.params, "images": images, "tokens": tokens},
                    make_input=partial(torch.randn, images, tokens, features),
                    input_requires_grad=True,
                )
            )
    return cases


@register_mode("compact")
def compact_weights(cfg: Mapping[str, Any], wanted: list[str]) -> list[Case]:
    """Compact leaf weights (issue 23's goals): a 768 -> 768 layer, leaf width l, the given
    depths, FFF float32 vs bf16 vs int8 (``fff_bf16``, ``fff_int8``) and FF likewise
    (``ff_bf16``, ``ff_int8``): time only the implementations listed in ``implementations``."""
    return [
        _case(
            "compact",
            wanted,
            d=cfg["in_features"],
            o=cfg["out_features"],
            leaf=cfg["leaf_width"],
            depth=depth,
            batch=batch,
            training=False,
            moe_k=cfg["moe_k"],
        )
        for batch in cfg["batch_sizes"]
        for depth in cfg["depths"]
    ]
