"""Inference and training speed benchmark of FFF vs FF vs MoE vs the reference package.

Entry point: ``python -m fastff.bench`` (``conf/bench.yaml``). Modes live in
:mod:`fastff.bench.modes`; :func:`fastff.bench.runner.run` runs one.
"""

from fastff.bench import vit  # noqa: F401  (registers the vit mode)
from fastff.bench.modes import MODES, register_mode
from fastff.bench.runner import run

__all__ = ["MODES", "register_mode", "run"]
