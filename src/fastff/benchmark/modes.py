"""Benchmark modes: each turns its config section into a list of cases.

A mode is a function ``(mode_cfg, implementations) -> list[Case]`` registered under its name with
:func:`register_mode`; ``conf/bench.yaml`` has one section per mode under ``modes:``. A new mode
(for example ``vit``) is a module that registers itself and is imported in
``fastff.benchmark.__init__``, plus its config section.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from importlib.util import find_spec
from typing import Any

import torch
from torch import nn

from fastff.benchmark.cases import (
    Case,
    Implementation,
    bytes_of,
    ff_macs,
    ff_params,
    fff_hard_macs,
    fff_params,
    fff_soft_macs,
    gflop,
    moe_eval_macs,
    moe_params,
)
from fastff.layers import FF, FFF
from fastff.layers.fff import PARAMETER_NAMES

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
def _fff(d: int, o: int, leaf: int, depth: int, hardening: float = 0.0) -> Callable[..., FFF]:
    return lambda built: FFF(d, o, leaf, depth, hardening=hardening)


def _ff(d: int, o: int, width: int) -> Callable[..., FF]:
    return lambda built: FF(d, o, width)


def _moe(d: int, o: int, experts: int, width: int, k: int, noisy: bool) -> Callable[..., nn.Module]:
    def build(built: dict[str, nn.Module]) -> nn.Module:
        from fastff.layers.moe import MoE

        moe = MoE(d, o, num_experts=experts, expert_width=width, k=k, noisy_gating=noisy)
        # The gate starts at zero (all experts tie); a trained-looking random gate spreads the
        # inputs over the experts as a trained router would, so dispatch is timed realistically.
        bound = 1.0 / math.sqrt(d)
        with torch.no_grad():
            moe.w_gate.uniform_(-bound, bound)
        return moe

    return build


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


def _implementations(
    wanted: list[str],
    *,
    d: int,
    o: int,
    leaf: int,
    depth: int,
    batch: int,
    training: bool,
    ff_width: int,
    moe: tuple[int, int, int] | None,
    hardening: float = 0.0,
) -> dict[str, Implementation]:
    """The wanted implementations of one case; ``moe`` is (experts, expert width, k) or None."""
    fff_macs = fff_soft_macs(d, o, leaf, depth) if training else fff_hard_macs(d, o, leaf, depth)
    fff_bytes = bytes_of(fff_params(d, o, leaf, depth), training)
    table = {
        "ff": lambda: Implementation(
            "ff",
            bytes_of(ff_params(d, ff_width, o), training),
            gflop(ff_macs(d, ff_width, o), batch, training),
            _ff(d, o, ff_width),
        ),
        "fff": lambda: Implementation(
            "fff", fff_bytes, gflop(fff_macs, batch, training), _fff(d, o, leaf, depth, hardening)
        ),
        "reference": lambda: Implementation(
            "reference",
            fff_bytes,
            gflop(fff_soft_macs(d, o, leaf, depth) if training else fff_macs, batch, training),
            _reference,
            shares_weights_with="fff",
        ),
    }
    if moe is not None:
        experts, width, k = moe
        # Eval: gate and k experts per input; training adds the noise matrix.
        macs = moe_eval_macs(d, o, *moe) + (d * experts if training else 0)
        table["moe"] = lambda: Implementation(
            "moe",
            bytes_of(moe_params(d, o, experts, width), training),
            gflop(macs, batch, training),
            _moe(d, o, experts, width, k, noisy=training),
        )
    chosen = [name for name in wanted if name in table]
    if "reference" in chosen and "fff" not in chosen:
        chosen.insert(0, "fff")  # the reference borrows the FFF's weights
    return {name: table[name]() for name in chosen}


# ---------------------------------------------------------------------------------------- modes
@register_mode("paper_fig3")
def paper_fig3(cfg: Mapping[str, Any], wanted: list[str]) -> list[Case]:
    """Figures 3-4: a BERT-base-sized layer (768 -> 768), FFF leaf width l and depth 1..D vs FF
    of width l * 2**d and MoE with 2**d experts of width l, k = moe_k, in eval mode."""
    d, o, leaf = cfg["in_features"], cfg["out_features"], cfg["leaf_width"]
    cases = []
    for batch in cfg["batch_sizes"]:
        for depth in range(cfg["min_depth"], cfg["max_depth"] + 1):
            cases.append(
                _inference_case("paper_fig3", wanted, d, o, leaf, depth, batch, cfg["moe_k"])
            )
    return cases


@register_mode("table1")
def table1(cfg: Mapping[str, Any], wanted: list[str]) -> list[Case]:
    """Table 1 speed column: 784 -> 10, training widths x leaf widths (depth = log2(w / l)),
    FFF hard inference vs FF of the same training width (MoE: 2**d experts of width l, k = 1)."""
    d, o = cfg["in_features"], cfg["out_features"]
    cases = []
    for batch in cfg["batch_sizes"]:
        for width in cfg["widths"]:
            for leaf in cfg["leaf_widths"]:
                if width < leaf:
                    continue
                depth = FFF.depth_for(width, leaf)
                cases.append(_inference_case("table1", wanted, d, o, leaf, depth, batch, 1))
    return cases


@register_mode("train")
def train(cfg: Mapping[str, Any], wanted: list[str]) -> list[Case]:
    """Training step (soft forward + backward) at equal training width: FFF (soft mixture,
    hardening loss) vs FF vs MoE (noisy top-k, 2**d experts of width l) vs the reference's
    ``training_forward`` with entropies."""
    d, o, leaf = cfg["in_features"], cfg["out_features"], cfg["leaf_width"]
    cases = []
    for batch in cfg["batch_sizes"]:
        for depth in cfg["depths"]:
            implementations = _implementations(
                wanted,
                d=d,
                o=o,
                leaf=leaf,
                depth=depth,
                batch=batch,
                training=True,
                ff_width=leaf * 2**depth,
                moe=(2**depth, leaf, min(cfg["moe_k"], 2**depth)),
                hardening=cfg["hardening"],
            )
            case = _case("train", "training", d, o, leaf, depth, batch, implementations)
            case.ideal = {
                "ideal FF/FFF": ff_macs(d, leaf * 2**depth, o) / fff_soft_macs(d, o, leaf, depth)
            }
            cases.append(case)
    return cases


def _inference_case(
    mode: str, wanted: list[str], d: int, o: int, leaf: int, depth: int, batch: int, moe_k: int
) -> Case:
    """Eval-mode case: FFF (leaf, depth) vs FF of width leaf * 2**depth and MoE with 2**depth
    experts of width leaf, top-``moe_k``."""
    implementations = _implementations(
        wanted,
        d=d,
        o=o,
        leaf=leaf,
        depth=depth,
        batch=batch,
        training=False,
        ff_width=leaf * 2**depth,
        moe=(2**depth, leaf, moe_k),
    )
    return _case(mode, "inference", d, o, leaf, depth, batch, implementations)


def _case(
    mode: str,
    kind: str,
    d: int,
    o: int,
    leaf: int,
    depth: int,
    batch: int,
    implementations: dict[str, Implementation],
) -> Case:
    width = leaf * 2**depth
    hard = fff_hard_macs(d, o, leaf, depth)
    return Case(
        mode=mode,
        params={
            "batch": batch,
            "in": d,
            "out": o,
            "leaf_width": leaf,
            "depth": depth,
            "training_width": width,
        },
        in_features=d,
        batch=batch,
        kind=kind,
        implementations=implementations,
        ideal={
            "ideal FF/FFF": ff_macs(d, width, o) / hard,
            "ideal MoE/FFF": moe_eval_macs(d, o, 2**depth, leaf, 1) / hard,
        },
    )
