"""Pure PyTorch layers: FFF (fast feedforward), FF (dense baseline), MoE (noisy top-k experts)."""

from fastff.layers.ff import FF
from fastff.layers.fff import FFF
from fastff.layers.moe import MoE

__all__ = ["FF", "FFF", "MoE"]
