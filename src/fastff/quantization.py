"""``fastff.quantize(model, "bf16" | "int8")``: compact leaf weights for hard FFF inference.

Weight-only quantization of every fastff layer in a model (a bare FFF, the flat net, a ViT):

- each :class:`~fastff.layers.FFF` becomes a :class:`~fastff.layers.quantized_fff.QuantizedFFF`:
  leaf weights in bfloat16, or int8 with a symmetric float32 scale per hidden unit (first leaf
  matrix) and per output feature (second); node weights and all biases stay as they were, so
  routing is exactly the float layer's.
- each :class:`~fastff.layers.FF` keeps its class, with both linear layers replaced by
  :class:`~fastff.layers.quantized_linear.QuantizedLinear` (the same formats, one scale per
  output feature), so a benchmark compares FF and FFF with the same treatment.
- each :class:`~fastff.layers.MoE` becomes a :class:`~fastff.layers.quantized_moe.QuantizedMoE`
  (expert weights compact the same way; the gate stays as it was, so every input selects the
  experts the eval-mode MoE selects).
- everything else (attention, norms, heads) is left as it is.

Inputs and outputs stay in the caller's dtype and all sums are in the layer's dtype (float32);
activations are never quantized. The result is a copy in eval mode, for inference only.

Quantized checkpoints: :func:`quantized_checkpoint` turns a ``fastff.train`` checkpoint into one
whose state dict holds the int8/bfloat16 tensors and scales, with ``quantize`` recorded beside the
run config; ``fastff.training.checkpoint.load_model`` reads it (``torch.load(weights_only=True)``
and the same allow-list as any checkpoint) and rebuilds the quantized model.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastff.layers import FF, FFF, MoE
from fastff.layers.quantized_fff import QuantizedFFF
from fastff.layers.quantized_linear import QuantizedLinear
from fastff.layers.quantized_moe import QuantizedMoE
from fastff.layers.quantized_storage import FORMATS, check_format

__all__ = [
    "FORMATS",
    "QuantizedFFF",
    "QuantizedLinear",
    "QuantizedMoE",
    "check_state_dtypes",
    "quantize",
    "quantized_checkpoint",
    "save_quantized_checkpoint",
]

CHECKPOINT_KEY = "quantize"
"""Key of ``hyper_parameters.config`` that records a quantized checkpoint's format."""


def quantize(module: nn.Module, format: str) -> nn.Module:
    """A copy of ``module`` with every FFF, FF and MoE storing its weights compactly (eval mode).

    Args:
        module: an FFF, FF, MoE, or any model holding them (the flat net, a timm ViT). Not
            changed.
        format: ``"bf16"`` (bfloat16 weights) or ``"int8"`` (int8 weights, float32 scales).

    Returns:
        The quantized copy (a :class:`QuantizedFFF` / :class:`QuantizedMoE` if ``module`` is
        an FFF / MoE), in eval mode.

    Raises:
        ValueError: an unknown format, or non-finite weights.
    """
    check_format(format)
    if isinstance(module, (FFF, MoE)):
        return REPLACEMENTS[_base(module)](module, format).eval()
    layers = [m for m in module.modules() if isinstance(m, (FFF, FF, MoE))]
    # deep-copy everything except the float weights that get replaced (no transient copy of them)
    memo: dict[int, Any] = {}
    for layer in layers:
        for shared in (layer.fc1, layer.fc2) if isinstance(layer, FF) else (layer,):
            memo[id(shared)] = shared
    copied = copy.deepcopy(module, memo)
    _replace(copied, format)
    return copied.eval()


def _replace(module: nn.Module, format: str) -> None:
    """In place: every FFF / MoE child of ``module`` (recursively) becomes a QuantizedFFF /
    QuantizedMoE, every FF's linear layers QuantizedLinear (read from the originals ``quantize``
    shared into the copy)."""
    if isinstance(module, FF):
        module.fc1 = QuantizedLinear.from_float(module.fc1, format)
        module.fc2 = QuantizedLinear.from_float(module.fc2, format)
        return
    for name, child in module.named_children():
        if isinstance(child, (FFF, MoE)):
            setattr(module, name, REPLACEMENTS[_base(child)](child, format))
        else:
            _replace(child, format)


REPLACEMENTS = {FFF: QuantizedFFF.from_float, MoE: QuantizedMoE.from_float}
"""The compact layer each float layer class becomes."""


def _base(layer: nn.Module) -> type[nn.Module]:
    """FFF or MoE (the layer's class or the one it derives from)."""
    return FFF if isinstance(layer, FFF) else MoE


def check_state_dtypes(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], prefix: str = ""
) -> None:
    """ValueError (one line) naming the first tensor of ``state`` whose dtype differs from the
    quantized model's (``expected``: its state dict), e.g. float weights in an int8 checkpoint,
    which ``load_state_dict`` would silently truncate."""
    for key, value in state.items():
        want = expected.get(key)
        if want is not None and isinstance(value, torch.Tensor) and value.dtype != want.dtype:
            raise ValueError(
                f"ckpt_path: the checkpoint's tensor {prefix}{key} is {value.dtype}, but the "
                f"quantized model stores it as {want.dtype}; the weights do not belong to it"
            )


def quantized_checkpoint(ckpt_path: str | os.PathLike, format: str) -> dict[str, Any]:
    """A quantized checkpoint dict made from a ``fastff.train`` checkpoint: ``state_dict``
    (``model.*`` keys: the quantized model's tensors, int8/bfloat16 weights and float32 scales)
    and ``hyper_parameters.config`` (the source's, plus ``quantize: format``)."""
    from fastff.training.checkpoint import load_model, read_checkpoint

    check_format(format)
    source = read_checkpoint(ckpt_path)
    config = dict(source["hyper_parameters"]["config"])
    if config.get(CHECKPOINT_KEY) is not None:
        raise ValueError(f"ckpt_path: {os.fspath(ckpt_path)!r} is quantized already")
    model = quantize(load_model(ckpt_path), format)
    config[CHECKPOINT_KEY] = format
    return {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"config": config},
    }


def save_quantized_checkpoint(
    ckpt_path: str | os.PathLike, output: str | os.PathLike, format: str
) -> Path:
    """Write :func:`quantized_checkpoint` of ``ckpt_path`` to ``output``; returns its path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(quantized_checkpoint(ckpt_path, format), output)
    return output


def quantize_option(value: object) -> str | None:
    """The ``quantize=`` setting of ``fastff.eval`` / ``fastff.export``: None (null: float
    weights) or a format; ValueError naming ``quantize`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in FORMATS:
        raise ValueError(f"quantize must be null, {' or '.join(FORMATS)}, got {value!r}")
    return value
