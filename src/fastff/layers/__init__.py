"""Pure PyTorch layers: FFF (fast feedforward), FF (dense baseline), MoE (noisy top-k experts)."""

from importlib.util import find_spec

from fastff.layers.ff import FF
from fastff.layers.fff import FFF

__all__ = ["FF", "FFF"]

if find_spec("fastff.layers.moe") is not None:
    from fastff.layers.moe import MoE

    __all__ += ["MoE"]
