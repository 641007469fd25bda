"""fastff: fast feedforward networks (Belcak & Wattenhofer, 2023) and the pipeline around them."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``fastff.quantize`` imports torch only when first used, so ``import fastff`` stays light
    if name == "quantize":
        from fastff.quantization import quantize

        return quantize
    raise AttributeError(f"module 'fastff' has no attribute {name!r}")
